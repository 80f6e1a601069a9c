//! The daemon's configuration, and reading policy files from disk.

use std::{path::PathBuf, time::Duration};

use serde::Serialize;

use crate::daemon::{kubernetes, verdict_log::Rotation};

/// What happens to enforcement when the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Programs stay attached (pinned) and keep enforcing the last policy set; the next
    /// agent takes them over without a gap. Verdicts are not logged while no agent runs.
    Keep,
    /// Programs are detached: nothing is enforced until an agent starts again.
    Detach,
}

pub struct Config {
    pub policy_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub log_file: PathBuf,
    pub stdout: bool,
    pub cgroup_root: PathBuf,
    pub network_only: bool,
    pub on_exit: OnExit,
    pub rescan_interval: Duration,
    /// The API's Unix socket.
    pub socket: PathBuf,
    /// Group allowed to use the API besides root.
    pub socket_group: Option<u32>,
    /// Address of the Prometheus endpoint (none: off).
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub log_rotation: Rotation,
    /// Run as a Kubernetes node agent: pod selectors, cluster policies.
    pub kubernetes: Option<kubernetes::Options>,
    /// Kernel diagnostics routed into the agent's log (off: not even emitted).
    pub kernel_log: crate::kernel::log::Level,
}
