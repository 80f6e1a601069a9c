//! What the daemon answers to commands: the bodies the API serves and the CLI reads.

use serde::{Deserialize, Serialize};

use crate::policy::{diff::Change, evaluate};

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
    /// The kernel's program id (for `bpftool prog show id N` and BPF statistics).
    #[serde(default)]
    pub id: Option<u32>,
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
    pub failed_bindings: Vec<crate::daemon::engine::FailedBinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    pub identity: String,
    #[serde(flatten)]
    pub request: evaluate::Request,
}
