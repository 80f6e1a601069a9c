//! Live-state commands: quarantines, revoked credentials, grants and approvals. Each is
//! planned on a copy of the state in force, saved, mirrored into the kernel, then recorded.

use super::Control;
use crate::daemon::{
    command::{Failure, LiveRequest},
    live::{LiveState, QuarantineEntry, check_reason, parse_ttl},
    record::clock::Clock,
};

/// What a live-state request comes to.
enum Planned {
    Listing(serde_json::Value),
    /// (action, identity, path, reason, answer)
    Change(LiveChange),
}

type LiveChange = (&'static str, Option<String>, Option<String>, Option<String>, serde_json::Value);

crate::log_record!(LiveRecord<'_>);

/// A change of live state, as recorded in the verdict log.
#[derive(serde::Serialize)]
struct LiveRecord<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    uid: u32,
}

impl Control<'_> {
    /// Applies a live-state change: saved first, then mirrored into the kernel, then
    /// recorded. Bad input changes nothing.
    pub(super) fn live_change(
        &mut self,
        request: LiveRequest,
        uid: u32,
    ) -> Result<serde_json::Value, Failure> {
        let now = crate::daemon::record::clock::wall_now();
        let mut next = self.live.clone();
        let (action, identity, path, reason, answer) = match self.plan_live(&mut next, request, uid, now)? {
            Planned::Listing(value) => return Ok(value),
            Planned::Change(change) => change,
        };
        self.commit_live(next).map_err(|message| Failure { status: 500, message })?;
        tracing::info!(action, identity = ?identity, path = ?path, uid, "live state changed");
        let record = LiveRecord {
            time: crate::daemon::record::clock::wall_now(),
            kind: "live",
            action,
            identity: identity.as_deref(),
            path: path.as_deref(),
            reason: reason.as_deref(),
            uid,
        };
        if let Err(e) = self.log.write(&record) {
            tracing::warn!(error = %e, "writing verdict log");
        }
        let _ = self.log.flush();
        Ok(answer)
    }

    /// Works out a live-state request on `next` (a copy of the state in force).
    fn plan_live(
        &self,
        next: &mut LiveState,
        request: LiveRequest,
        uid: u32,
        now: String,
    ) -> Result<Planned, Failure> {
        let bad = |message: String| Failure { status: 400, message };
        let missing = |message: String| Failure { status: 404, message };
        let change = match request {
            LiveRequest::ListQuarantines => {
                return Ok(Planned::Listing(
                    serde_json::to_value(&self.live.quarantines).expect("serialises"),
                ));
            }
            LiveRequest::ListRevoked => {
                return Ok(Planned::Listing(serde_json::to_value(&self.live.revoked).expect("serialises")));
            }
            LiveRequest::ListApprovals => {
                let list: Vec<_> = self.live.approvals.values().collect();
                return Ok(Planned::Listing(serde_json::to_value(list).expect("serialises")));
            }
            LiveRequest::Approve(id, answer) => {
                let ttl = parse_ttl(answer.ttl.as_deref().unwrap_or_default()).map_err(bad)?;
                let Some(request) = next.approvals.remove(&id) else {
                    return Err(missing(format!("no open approval request {id}")));
                };
                let reason = answer.reason.unwrap_or_else(|| format!("approved request {id}"));
                let grant = next
                    .add_grant(
                        &request.identity,
                        request.target,
                        ttl,
                        &reason,
                        uid,
                        Clock::unix_now_ns(),
                        now,
                    )
                    .map_err(bad)?;
                let answer = serde_json::json!({"request": id, "grant": grant});
                ("approval-approved", Some(request.identity), None, Some(reason), answer)
            }
            LiveRequest::DenyApproval(id, answer) => {
                let Some(request) = next.approvals.remove(&id) else {
                    return Err(missing(format!("no open approval request {id}")));
                };
                let answer_json = serde_json::json!({"request": id, "denied": true});
                ("approval-denied", Some(request.identity), None, answer.reason, answer_json)
            }
            LiveRequest::ListGrants => {
                let list: Vec<_> = self.live.grants.values().collect();
                return Ok(Planned::Listing(serde_json::to_value(list).expect("serialises")));
            }
            LiveRequest::Grant(body) => {
                let ttl = parse_ttl(&body.ttl).map_err(bad)?;
                if !self.engine.policies().iter().any(|p| p.identity == body.identity) {
                    return Err(missing(format!("no policy governs identity {:?}", body.identity)));
                }
                let entry = next
                    .add_grant(&body.identity, body.target, ttl, &body.reason, uid, Clock::unix_now_ns(), now)
                    .map_err(bad)?;
                let answer = serde_json::to_value(&entry).expect("serialises");
                ("grant", Some(body.identity), None, Some(body.reason), answer)
            }
            LiveRequest::RevokeGrant(id) => {
                let Some(entry) = next.grants.remove(&id) else {
                    return Err(missing(format!("no grant {id}")));
                };
                let answer = serde_json::json!({"id": id, "revoked": true});
                ("grant-revoke", Some(entry.identity), None, None, answer)
            }
            LiveRequest::Quarantine(body) => {
                check_reason(&body.reason).map_err(bad)?;
                if !self.engine.policies().iter().any(|p| p.identity == body.identity) {
                    return Err(missing(format!("no policy governs identity {:?}", body.identity)));
                }
                let entry = QuarantineEntry { reason: body.reason.clone(), uid, since: now };
                next.quarantines.insert(body.identity.clone(), entry.clone());
                let answer = serde_json::json!({"identity": body.identity, "quarantine": entry});
                ("quarantine", Some(body.identity), None, Some(body.reason), answer)
            }
            LiveRequest::Release(identity) => {
                if next.quarantines.remove(&identity).is_none() {
                    return Err(missing(format!("identity {identity:?} is not quarantined")));
                }
                let answer = serde_json::json!({"identity": identity, "released": true});
                ("release", Some(identity), None, None, answer)
            }
            LiveRequest::Revoke(body) => {
                let (path, id) = next.revoke(&body.path, &body.reason, uid, now).map_err(bad)?;
                let answer = serde_json::json!({"path": path, "id": id});
                ("credential-revoke", None, Some(path), Some(body.reason), answer)
            }
            LiveRequest::Unrevoke(path) => {
                let path = crate::policy::validate::normalise(&path).map_err(bad)?;
                if next.revoked.remove(&path).is_none() {
                    return Err(missing(format!("{path:?} is not revoked")));
                }
                let answer = serde_json::json!({"path": path, "unrevoked": true});
                ("credential-unrevoke", None, Some(path), None, answer)
            }
        };
        Ok(Planned::Change(change))
    }

    /// Puts `next` in force: kernel maps first, then the state file. If either step fails
    /// the kernel is put back to the state in force and nothing changes.
    fn commit_live(&mut self, next: LiveState) -> Result<(), String> {
        let result = self
            .engine
            .sync_live(&next)
            .map_err(|e| e.to_string())
            .and_then(|()| self.state.save_live(&next).map_err(|e| e.to_string()));
        if let Err(e) = result {
            if let Err(restore) = self.engine.sync_live(&self.live) {
                tracing::error!(error = %restore, "restoring live state in the kernel maps");
            }
            return Err(e);
        }
        self.live = next;
        Ok(())
    }

    /// Opens (or counts a repeat of) an approval request for a `pending` verdict.
    pub fn note_pending(&mut self, record: &crate::daemon::record::VerdictRecord) {
        let now = record.time.clone();
        let Some((request, new)) = self.live.note_pending(record, Clock::unix_now_ns(), &now) else { return };
        if !new {
            return;
        }
        if let Err(e) = self.state.save_live(&self.live) {
            tracing::warn!(error = %e, "saving an approval request");
        }
        tracing::info!(id = request.id, identity = %request.identity, "approval requested");
        let record = serde_json::json!({
            "time": now,
            "type": "live",
            "action": "approval-requested",
            "identity": request.identity,
            "request": request.id,
            "target": request.target,
            "pid": request.pid,
        });
        if let Err(e) = self.log.write(&record) {
            tracing::warn!(error = %e, "writing verdict log");
        }
    }

    /// Drops expired grants from the live state and records each expiry. The kernel has
    /// already stopped honouring them at their instant; this only tidies up.
    pub fn expire_grants(&mut self) {
        let now = Clock::unix_now_ns();
        // Runs every tick: look before copying the state.
        let due = self.live.grants.values().any(|g| g.expires_unix_ns <= now)
            || self.live.approvals.values().any(|a| a.expires_unix_ns <= now);
        if !due {
            return;
        }
        let mut next = self.live.clone();
        let expired = next.expire(now);
        let lapsed = next.expire_approvals(now);
        if let Err(e) = self.commit_live(next) {
            tracing::warn!(error = %e, "removing expired grants and requests");
            return;
        }
        for request in lapsed {
            let record = serde_json::json!({
                "time": crate::daemon::record::clock::wall_now(),
                "type": "live",
                "action": "approval-expired",
                "identity": request.identity,
                "request": request.id,
            });
            if let Err(e) = self.log.write(&record) {
                tracing::warn!(error = %e, "writing verdict log");
            }
        }
        for grant in expired {
            let record = serde_json::json!({
                "time": crate::daemon::record::clock::wall_now(),
                "type": "live",
                "action": "grant-expired",
                "identity": grant.identity,
                "grant": grant.id,
                "expired": grant.expires,
            });
            if let Err(e) = self.log.write(&record) {
                tracing::warn!(error = %e, "writing verdict log");
            }
        }
        let _ = self.log.flush();
    }
}
