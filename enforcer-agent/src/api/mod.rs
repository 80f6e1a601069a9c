//! The agent's local API: HTTP/1.1 with JSON bodies on a Unix socket.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/status` | | [`Status`] |
//! | GET | `/v1/policies` | | [`PolicyList`] |
//! | GET | `/v1/policies/{name}` | | the policy document (JSON) |
//! | POST | `/v1/policies?dryRun=true` | YAML or JSON documents | [`ApplyResult`] |
//! | DELETE | `/v1/policies/{name}?dryRun=true` | | [`ApplyResult`] |
//! | GET | `/v1/identities` | | `[`[`IdentityInfo`]`]` |
//! | POST | `/v1/check` | [`CheckRequest`] | [`crate::policy::evaluate::Explanation`] |
//! | GET | `/v1/verdicts?follow=true&since=…&identity=…&policy=…&decision=…&hook=…` | | JSON lines |
//! | POST | `/v1/containers` | [`ContainerStart`] (from `enforcer oci-hook`) | [`ContainerBound`] |
//!
//! Errors answer `{"error": "..."}` with 400 (bad request), 403 (caller not allowed),
//! 404 (no such policy or path), 405, 413 (body over [`MAX_BODY`]) or 500.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::policy::{diff::Change, evaluate};

pub const DEFAULT_SOCKET: &str = "/run/enforcer/enforcer.sock";
/// Largest request body accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// Generation in force afterwards (unchanged on a dry run).
    pub generation: u64,
    pub dry_run: bool,
    pub changes: Vec<Change>,
}

/// A pod's container about to start, as the OCI hook reads it from the runtime's state
/// and the CRI annotations: the agent binds its cgroup before its first instruction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStart {
    /// The container's init process (host pid namespace); its cgroup is the container's.
    pub pid: u32,
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// The pod's sandbox (pause) container: nothing to bind.
    #[serde(default)]
    pub sandbox: bool,
}

/// What the agent did for a starting container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerBound {
    /// The container's cgroup, relative to the agent's cgroup root (none for a sandbox).
    pub cgroup: Option<String>,
    /// The identities its cgroup is bound to (none: no pod selector picks it).
    pub identities: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleCounts {
    pub exec: usize,
    pub file: usize,
    pub network: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicySummary {
    pub name: String,
    pub identity: String,
    pub mode: String,
    pub selector: String,
    pub rules: RuleCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyList {
    pub generation: u64,
    pub policies: Vec<PolicySummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupInfo {
    pub path: String,
    pub processes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub identity: String,
    pub policy: String,
    pub cgroups: Vec<CgroupInfo>,
    /// Live processes in the bound cgroups and their descendants.
    pub processes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub hook: String,
    pub attached: bool,
    /// Instructions the verifier processed when loading it (kernel ≥ 5.16).
    #[serde(default)]
    pub verified_insns: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapUsage {
    pub map: String,
    pub used: usize,
    pub capacity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    pub kernel: String,
    pub bpf_lsm: bool,
    pub btf: bool,
    pub network_only: bool,
    pub generation: u64,
    pub policies: usize,
    pub identities: usize,
    pub cgroups: usize,
    pub programs: Vec<ProgramStatus>,
    pub maps: Vec<MapUsage>,
    /// Kernel counters: allow, deny, audit, `default_fallback`, `events_dropped`, …
    pub counters: std::collections::BTreeMap<String, u64>,
    pub log_file: String,
    /// Cgroups a selector picks that could not be bound, and why (retried every rescan).
    #[serde(default)]
    pub failed_bindings: Vec<crate::engine::FailedBinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    pub identity: String,
    #[serde(flatten)]
    pub request: evaluate::Request,
}

/// Which records a reader of verdicts wants: the same rules for the API's stream and for
/// `enforcer verdicts show` on a log file.
#[derive(Debug, Clone, Default)]
pub struct VerdictFilter {
    pub identity: Option<String>,
    pub policy: Option<String>,
    pub decision: Option<String>,
    pub hook: Option<String>,
}

impl VerdictFilter {
    /// Whether a record of type `kind` whose fields `field` returns passes. Notices of
    /// lost records always pass; other non-verdict records only when nothing is filtered.
    pub fn matches<'a>(&self, kind: &str, field: impl Fn(&str) -> Option<&'a str>) -> bool {
        if kind == "dropped" {
            return true;
        }
        let wanted = [
            ("identity", &self.identity),
            ("policy", &self.policy),
            ("decision", &self.decision),
            ("hook", &self.hook),
        ];
        if kind != "verdict" {
            return wanted.iter().all(|(_, w)| w.is_none());
        }
        wanted.iter().all(|(name, w)| w.as_deref().is_none_or(|w| field(name) == Some(w)))
    }
}
