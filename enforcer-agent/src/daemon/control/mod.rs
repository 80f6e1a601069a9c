//! What the agent does for API commands: runs on the main loop, which owns the engine,
//! so commands are handled one at a time and every apply installs one whole set.

mod kubernetes;

use std::{collections::BTreeMap, path::Path};

use crate::{
    daemon::command::{Command, Failure, LiveRequest},
    daemon::config::Config,
    daemon::engine::Engine,
    daemon::live::{LiveState, QuarantineEntry, check_reason, parse_ttl},
    daemon::log_records::write_policy_record,
    daemon::metrics::{self, Metrics},
    daemon::record::clock::Clock,
    daemon::reports::{
        ApplyResult, CgroupInfo, IdentityInfo, MapUsage, PolicyList, PolicySummary, ProgramStatus,
        RuleCounts, Status,
    },
    daemon::state::State,
    daemon::verdict_log::VerdictLog,
    kernel::loader,
    policy::{
        diff::{self, Change},
        model::Policy,
        validate::SelectorSpec,
    },
};
use enforcer_common::verdict::stat;

const CLUSTER_OWNS_POLICIES: &str = "this agent enforces the cluster's Policy resources (--kubernetes); \
change them with `enforcer policy apply --kubernetes` or kubectl";

pub struct Control<'a> {
    pub state: State,
    pub engine: Engine,
    pub log: VerdictLog,
    pub features: loader::Features,
    pub attached: Vec<(&'static str, &'static str)>,
    pub verified: Vec<(String, u32)>,
    pub started: std::time::Instant,
    pub metrics: Metrics,
    pub config: &'a Config,
    pub live: LiveState,
    /// Kubernetes: whether the pod and the policy watches have delivered a listing.
    pub kube_synced: (bool, bool),
}

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
    pub fn handle(&mut self, command: Command) {
        // A requester that went away is not an error: its answer is simply dropped.
        match command {
            Command::Status(reply) => drop(reply.send(self.status())),
            Command::ListPolicies(reply) => drop(reply.send(self.list())),
            Command::GetPolicy(name, reply) => {
                let found = self.engine.policies().iter().find(|p| p.name == name).map(|p| p.source.clone());
                drop(reply.send(found));
            }
            Command::Pods(change) => self.pods_changed(change),
            Command::ClusterPolicies { resources, reply } => drop(reply.send(self.apply_cluster(&resources))),
            Command::Container { start, reply } => drop(reply.send(self.container_start(&start))),
            Command::Ready(reply) => drop(reply.send(self.ready())),
            // With `--kubernetes` the cluster's Policy resources are the set: a change made
            // on one node would be undone by the next cluster change and differ between nodes.
            Command::Apply { dry_run: false, reply, .. } if self.config.kubernetes.is_some() => {
                drop(reply.send(Err(CLUSTER_OWNS_POLICIES.to_owned())));
            }
            Command::Delete { dry_run: false, reply, .. } if self.config.kubernetes.is_some() => {
                drop(reply.send(Err(Failure { status: 409, message: CLUSTER_OWNS_POLICIES.to_owned() })));
            }
            Command::Apply { docs, dry_run, uid, reply } => {
                let current = self.engine.sources();
                let merged = diff::merge(&current, &docs);
                let names: Vec<&str> = docs.iter().map(|d| d.metadata.name.as_str()).collect();
                let changes: Vec<Change> = diff::changes(&current, &merged)
                    .into_iter()
                    .filter(|c| names.contains(&c.name.as_str()))
                    .collect();
                drop(reply.send(self.replace(&merged, changes, dry_run, uid).map_err(|f| f.message)));
            }
            Command::Delete { name, dry_run, uid, reply } => {
                let current = self.engine.sources();
                let result = if current.iter().any(|p| p.metadata.name == name) {
                    let rest: Vec<Policy> =
                        current.iter().filter(|p| p.metadata.name != name).cloned().collect();
                    let changes = diff::changes(&current, &rest);
                    self.replace(
                        &rest,
                        changes.into_iter().filter(|c| c.name == name).collect(),
                        dry_run,
                        uid,
                    )
                } else {
                    Err(Failure { status: 404, message: format!("no policy named {name:?}") })
                };
                drop(reply.send(result));
            }
            Command::Identities(reply) => drop(reply.send(self.identities())),
            Command::Check(check, reply) => {
                let result = match self.engine.policies().iter().find(|p| p.identity == check.identity) {
                    None => Err(Failure {
                        status: 404,
                        message: format!("no policy governs identity {:?}", check.identity),
                    }),
                    Some(policy) => crate::daemon::live_check::explain(
                        &self.live,
                        policy,
                        &check.request,
                        crate::daemon::record::clock::Clock::unix_now_ns(),
                    )
                    .map_err(|message| Failure { status: 400, message }),
                };
                drop(reply.send(result));
            }
            Command::Metrics(reply) => drop(reply.send(self.metrics_text())),
            Command::Live { request, uid, reply } => drop(reply.send(self.live_change(request, uid))),
        }
    }

    /// Applies a live-state change: saved first, then mirrored into the kernel, then
    /// recorded. Bad input changes nothing.
    fn live_change(&mut self, request: LiveRequest, uid: u32) -> Result<serde_json::Value, Failure> {
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

    /// Installs a whole set: applies it, saves it, mirrors live state into it and records
    /// the change (`source`: api, kubernetes; `uid` of the API caller). A refused set
    /// changes nothing and is counted.
    pub(crate) fn install(
        &mut self,
        policies: &[Policy],
        source: &'static str,
        uid: Option<u32>,
    ) -> Result<crate::daemon::engine::Applied, crate::daemon::engine::EngineError> {
        let applied = self.engine.apply(policies).inspect_err(|_| self.metrics.apply_errors += 1)?;
        if let Err(e) = self.state.save(policies, applied.generation) {
            tracing::error!(error = %e, "saving the applied policy set");
        }
        if let Err(e) = self.engine.sync_live(&self.live) {
            tracing::error!(error = %e, "mirroring live state after an apply");
        }
        tracing::info!(generation = applied.generation, source, uid, "policy set changed");
        write_policy_record(&mut self.log, &self.engine, source, uid);
        let _ = self.log.flush();
        Ok(applied)
    }

    /// Installs `policies` as the whole set (or only checks it on a dry run), saves it and
    /// records who changed it.
    fn replace(
        &mut self,
        policies: &[Policy],
        changes: Vec<Change>,
        dry_run: bool,
        uid: u32,
    ) -> Result<ApplyResult, Failure> {
        let refused = |e: &dyn std::fmt::Display| Failure { status: 400, message: e.to_string() };
        if dry_run {
            self.engine.plan(policies).map_err(|e| refused(&e))?;
            return Ok(ApplyResult { generation: self.engine.generation(), dry_run, changes });
        }
        if changes.iter().all(|c| c.change == "unchanged") {
            return Ok(ApplyResult { generation: self.engine.generation(), dry_run, changes });
        }
        let applied = self.install(policies, "api", Some(uid)).map_err(|e| refused(&e))?;
        Ok(ApplyResult { generation: applied.generation, dry_run, changes })
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

    fn list(&self) -> PolicyList {
        let policies = self
            .engine
            .policies()
            .iter()
            .map(|p| PolicySummary {
                name: p.name.clone(),
                identity: p.identity.clone(),
                mode: p.mode_name().to_owned(),
                selector: match &p.selector {
                    SelectorSpec::CgroupPath { path, .. } => format!("cgroupPath {path}"),
                    SelectorSpec::SystemdUnit { unit, .. } => format!("systemdUnit {unit}"),
                    SelectorSpec::ContainerId { id, .. } => format!("containerId {id}"),
                    SelectorSpec::Pod { pod, .. } => format!("pod {pod}"),
                },
                rules: RuleCounts { exec: p.exec.len(), file: p.file.len(), network: p.network.len() },
            })
            .collect();
        PolicyList { generation: self.engine.generation(), policies }
    }

    fn identities(&self) -> Vec<IdentityInfo> {
        let by_identity = self.engine.identities();
        self.engine
            .policies()
            .iter()
            .map(|p| {
                let cgroups: Vec<CgroupInfo> = by_identity
                    .get(&p.identity)
                    .into_iter()
                    .flatten()
                    .map(|path| CgroupInfo {
                        path: path.clone(),
                        processes: count_processes(
                            &self.engine.cgroup_root().join(path.trim_start_matches('/')),
                        ),
                    })
                    .collect();
                let processes = cgroups.iter().map(|c| c.processes).sum();
                IdentityInfo { identity: p.identity.clone(), policy: p.name.clone(), cgroups, processes }
            })
            .collect()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let values = self.engine.maps().stats().unwrap_or([0; stat::COUNT as usize]);
        stat::NAMES.iter().copied().zip(values).collect()
    }

    fn status(&self) -> Status {
        let attached: Vec<&str> = self.attached.iter().map(|(p, _)| *p).collect();
        let programs = loader::LSM_PROGRAMS
            .iter()
            .map(|(p, h)| (*p, *h))
            .chain(loader::CGROUP_PROGRAMS.iter().map(|p| (*p, "cgroup")))
            .chain(loader::TRACE_PROGRAMS.iter().map(|(p, _)| (*p, "tp_btf")))
            .map(|(name, hook)| ProgramStatus {
                name: name.to_owned(),
                hook: match hook {
                    "cgroup" => format!("cgroup/{name}"),
                    "tp_btf" => format!("tp_btf/{name}"),
                    sleepable @ ("bprm_check_security" | "file_open" | "mmap_file") => {
                        format!("lsm.s/{sleepable}")
                    }
                    other => format!("lsm/{other}"),
                },
                attached: attached.contains(&name),
                verified_insns: self.verified.iter().find(|(p, _)| p == name).map(|(_, n)| *n),
            })
            .collect();
        let maps = self
            .engine
            .maps()
            .usage()
            .into_iter()
            .map(|(map, used, capacity)| MapUsage { map: map.to_owned(), used, capacity })
            .collect();
        let identities = self.engine.identities();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            kernel: self.features.kernel.clone(),
            bpf_lsm: self.features.bpf_lsm,
            btf: self.features.btf,
            network_only: self.config.network_only,
            generation: self.engine.generation(),
            policies: self.engine.policies().len(),
            identities: identities.len(),
            cgroups: identities.values().map(Vec::len).sum(),
            programs,
            maps,
            counters: self.counters().into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<BTreeMap<_, _>>(),
            log_file: self.log.path().display().to_string(),
            failed_bindings: self.engine.failed_bindings().to_vec(),
        }
    }

    fn metrics_text(&self) -> String {
        let counters = self.counters();
        let maps = self.engine.maps().usage();
        metrics::render(&metrics::Snapshot {
            metrics: &self.metrics,
            generation: self.engine.generation(),
            kernel_counters: &counters,
            maps: &maps,
            uptime_seconds: self.started.elapsed().as_secs(),
            failed_bindings: self.engine.failed_bindings().len(),
        })
    }
}

/// Processes in a cgroup and all its descendants.
fn count_processes(dir: &Path) -> usize {
    let mut total = std::fs::read_to_string(dir.join("cgroup.procs")).map_or(0, |t| t.lines().count());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                total += count_processes(&entry.path());
            }
        }
    }
    total
}
