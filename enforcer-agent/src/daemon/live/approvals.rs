//! Step-up approvals: attempts a rule with `action: approve` held back, waiting for an
//! operator to answer.

use serde::{Deserialize, Serialize};

use super::{GrantTarget, LiveState};
use crate::{
    daemon::record::{Target, VerdictRecord, clock::rfc3339},
    policy::model::{Access, Protocol},
};

/// How long an approval request waits for an answer.
pub const APPROVAL_TTL_NS: i64 = 3600 * 1_000_000_000;

/// An attempt a rule with `action: approve` held back, waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub id: u32,
    pub identity: String,
    pub policy: String,
    pub rule: String,
    pub target: GrantTarget,
    pub pid: u32,
    pub comm: String,
    pub executable: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// Attempts seen (repeats update this request instead of adding new ones).
    pub attempts: u64,
    pub expires: String,
    pub expires_unix_ns: i64,
}

/// The exact target of a verdict record, as a grant would name it.
pub fn target_of(record: &VerdictRecord) -> Option<GrantTarget> {
    match (&record.target, record.hook) {
        (Target::Path { path, .. }, "exec" | "mmap_exec") => Some(GrantTarget::Exec { path: path.clone() }),
        (Target::Path { path, access }, _) => {
            let access = access
                .iter()
                .filter_map(|a| match *a {
                    "read" => Some(Access::Read),
                    "write" => Some(Access::Write),
                    _ => None,
                })
                .collect();
            Some(GrantTarget::File { path: path.clone(), access })
        }
        (
            Target::Process { .. }
            | Target::Bpf { .. }
            | Target::Entry { .. }
            | Target::Change { .. }
            | Target::Mount { .. }
            | Target::Socket { .. },
            _,
        ) => None,
        (Target::Net { address, port, protocol }, _) => {
            let bits = if address.contains(':') { 128 } else { 32 };
            let protocol = match protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => Protocol::Any,
            };
            Some(GrantTarget::Connect {
                cidr: format!("{address}/{bits}"),
                port_lo: *port,
                port_hi: *port,
                protocol,
            })
        }
    }
}

impl LiveState {
    /// Opens a request for a `pending` verdict, or counts a repeat of an open one.
    /// Returns the request and whether it is new.
    pub fn note_pending(
        &mut self,
        record: &VerdictRecord,
        now_unix_ns: i64,
        now: &str,
    ) -> Option<(ApprovalRequest, bool)> {
        let target = target_of(record)?;
        let identity = record.identity.clone()?;
        if let Some(open) = self.approvals.values_mut().find(|a| a.identity == identity && a.target == target)
        {
            open.attempts += 1;
            now.clone_into(&mut open.last_seen);
            return Some((open.clone(), false));
        }
        if self.approvals.len() >= enforcer_common::capacity::GRANTS as usize {
            return None;
        }
        self.next_approval += 1;
        let expires_unix_ns = now_unix_ns + APPROVAL_TTL_NS;
        let request = ApprovalRequest {
            id: self.next_approval,
            identity,
            policy: record.policy.clone().unwrap_or_default(),
            rule: record.rule.clone(),
            target,
            pid: record.pid,
            comm: record.comm.clone(),
            executable: record.executable.clone(),
            first_seen: now.to_owned(),
            last_seen: now.to_owned(),
            attempts: 1,
            expires: rfc3339(i128::from(expires_unix_ns)),
            expires_unix_ns,
        };
        self.approvals.insert(request.id, request.clone());
        Some((request, true))
    }

    /// Removes and returns the requests nobody answered in time.
    pub fn expire_approvals(&mut self, now_unix_ns: i64) -> Vec<ApprovalRequest> {
        let expired: Vec<u32> =
            self.approvals.values().filter(|a| a.expires_unix_ns <= now_unix_ns).map(|a| a.id).collect();
        expired.iter().filter_map(|id| self.approvals.remove(id)).collect()
    }
}
