//! The commands the daemon's main loop serves, from the API, the Kubernetes watches and
//! the metrics endpoint. Each carries its reply channel.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    daemon::{
        identity::kubepods::{PodInfo, PodsChange},
        kubernetes::policy_status::Verdict,
        live::GrantTarget,
        reports::{
            ApplyResult, CheckRequest, ContainerBound, ContainerStart, IdentityInfo, PolicyList, Status,
        },
        verdict_log::Line,
    },
    policy::{evaluate::Explanation, model::Policy, validate::PolicyError},
};

/// One resource as the main loop receives it.
#[derive(Debug)]
pub struct ClusterPolicy {
    pub name: String,
    pub policy: Result<Policy, PolicyError>,
}

/// A request for one pod by namespace and name, answered from the API server (for the
/// OCI hook, when a container starts before the pod watch has seen its pod).
pub type PodRequest = (String, String, oneshot::Sender<Result<PodInfo, String>>);

/// A request for the agent's main loop, which owns the engine.
pub enum Command {
    Status(oneshot::Sender<Status>),
    ListPolicies(oneshot::Sender<PolicyList>),
    GetPolicy(String, oneshot::Sender<Option<Policy>>),
    Apply {
        docs: Vec<Policy>,
        dry_run: bool,
        /// Line diffs in the answer (always on a dry run).
        diff: bool,
        uid: u32,
        reply: oneshot::Sender<Result<ApplyResult, String>>,
    },
    Delete {
        name: String,
        dry_run: bool,
        uid: u32,
        reply: oneshot::Sender<Result<ApplyResult, Failure>>,
    },
    Identities(oneshot::Sender<Vec<IdentityInfo>>),
    Check(CheckRequest, oneshot::Sender<Result<Explanation, Failure>>),
    /// Prometheus text for a scrape.
    Metrics(oneshot::Sender<String>),
    /// A change to, or a listing of, live state (quarantines, revoked credentials).
    Live {
        request: LiveRequest,
        uid: u32,
        reply: oneshot::Sender<Result<serde_json::Value, Failure>>,
    },
    /// Kubernetes: the pods of this node changed.
    Pods(PodsChange),
    /// Kubernetes: the cluster's whole set of `Policy` resources, to apply atomically;
    /// answered with each resource's verdict for its status.
    ClusterPolicies {
        resources: Vec<ClusterPolicy>,
        reply: oneshot::Sender<Vec<(String, Verdict)>>,
    },
    /// A container is about to start (OCI hook): bind its cgroup now.
    Container {
        start: ContainerStart,
        reply: oneshot::Sender<Result<ContainerAnswer, Failure>>,
    },
    /// Readiness: attached and, with `--kubernetes`, both watches listed.
    Ready(oneshot::Sender<Result<(), String>>),
}

/// The main loop's answer for a starting container.
#[derive(Debug)]
pub enum ContainerAnswer {
    Bound(ContainerBound),
    /// The pod is not known yet: ask the API server for it, then ask again.
    UnknownPod,
}

/// Live-state operations.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineBody {
    pub identity: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeBody {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantBody {
    pub identity: String,
    pub target: GrantTarget,
    /// `90s`, `15m`, `2h`, `1d` (at most 7 days).
    pub ttl: String,
    pub reason: String,
}

/// Answer to an approval request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// How long the resulting grant lasts (approve only).
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub enum LiveRequest {
    ListApprovals,
    Approve(u32, ApprovalAnswer),
    DenyApproval(u32, ApprovalAnswer),
    Grant(GrantBody),
    RevokeGrant(u32),
    ListGrants,
    Quarantine(QuarantineBody),
    Release(String),
    ListQuarantines,
    Revoke(RevokeBody),
    Unrevoke(String),
    ListRevoked,
}

/// An error with its HTTP status.
pub struct Failure {
    pub status: u16,
    pub message: String,
}

/// Past verdict lines, oldest first, for `since`/`last` queries. Reads rotated logs: call
/// it off the thread that drains the ring.
pub type History = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Whether a process (by pid) belongs to a managed identity.
pub type Managed = Arc<dyn Fn(i32) -> bool + Send + Sync>;

/// What the daemon hands its API when it comes up: the command channel, the verdict
/// stream and the lookups the API answers from outside the main loop.
#[derive(Clone)]
pub struct Handles {
    pub commands: mpsc::Sender<Command>,
    pub verdicts: broadcast::Sender<Arc<Line>>,
    pub history: History,
    /// Callers inside managed identities may not use the API, or a workload could lift its
    /// own quarantine.
    pub managed: Managed,
    /// Kubernetes: where to read a pod the watch has not delivered yet.
    pub pods: Option<mpsc::Sender<PodRequest>>,
}
