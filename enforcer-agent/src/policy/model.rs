//! The policy document as users write it (YAML shaped like a Kubernetes object).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "enforcer.dev/v1";
pub const KIND: &str = "Policy";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, kube::CustomResource)]
#[kube(
    group = "enforcer.dev",
    version = "v1",
    kind = "Policy",
    plural = "policies",
    root = "PolicyResource",
    status = "super::resource::PolicyStatus",
    shortname = "epol",
    printcolumn = r#"{"name":"Identity","type":"string","jsonPath":".spec.identity"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type=='Valid')].status"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each is an independent switch users write in the document"
)]
pub struct Spec {
    /// Identity name; defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub selector: Selector,
    #[serde(default)]
    pub mode: Mode,
    /// Also report allowed accesses (off by default: only deny and audit are reported).
    #[serde(default)]
    pub log_allowed: bool,
    /// The identity's tasks may move tasks between cgroups (`cgroup.procs`,
    /// `cgroup.threads`), start children in other cgroups (`CLONE_INTO_CGROUP`) and rename
    /// cgroups. Off by default: a managed task cannot leave its identity's cgroups. Meant
    /// for supervisors (container runtimes, service managers) trusted to place others.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_cgroup_moves: bool,
    /// The identity's tasks may mount (bind mounts and remounts included), unmount, move
    /// mounts, `pivot_root` and `chroot`, any of which can show a denied file under a
    /// path no rule names. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_mounts: bool,
    /// The identity's tasks may create raw (`SOCK_RAW`), packet (`AF_PACKET`) and ICMP
    /// datagram sockets, which reach addresses without passing the network rules. Off by
    /// default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_raw_sockets: bool,
    /// The identity's tasks may execute files that have no path on a filesystem (memfd,
    /// deleted files, `O_TMPFILE`), which no exec rule can name. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_fileless_exec: bool,
    /// Container runtimes the identity runs (absolute paths of their executables, e.g.
    /// `/usr/sbin/runc`), matched by file identity. From the exec of one, its processes
    /// and their children may mount, `pivot_root`, `chroot` and execute files with no path
    /// (runc's memfd copy of itself; any such file is allowed) until each executes a
    /// program from a file (the container's entrypoint); every other rule still judges
    /// them. At most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<String>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub exec: Vec<ExecRule>,
    #[serde(default)]
    pub file: Vec<FileRule>,
    #[serde(default)]
    pub network: Vec<NetworkRule>,
    /// Inbound: the ports the identity may `bind` (TCP or UDP, IPv4 or IPv6), first match
    /// in document order; no match: `defaults.listen`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<ListenRule>,
    /// What the identity may no longer do while quarantined.
    #[serde(default, skip_serializing_if = "QuarantineSpec::is_default")]
    pub quarantine: QuarantineSpec,
}

/// Restrictions of a quarantined identity. The default keeps a workload able to read
/// what it needs to shut down cleanly and stops it spreading or exfiltrating: no exec of
/// new programs, no network, no file writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineSpec {
    #[serde(default = "deny")]
    pub exec: Action,
    #[serde(default = "allow")]
    pub file_read: Action,
    #[serde(default = "deny")]
    pub file_write: Action,
    #[serde(default = "deny")]
    pub network: Action,
}

fn deny() -> Action {
    Action::Deny
}

fn allow() -> Action {
    Action::Allow
}

impl Default for QuarantineSpec {
    fn default() -> Self {
        Self { exec: Action::Deny, file_read: Action::Allow, file_write: Action::Deny, network: Action::Deny }
    }
}

impl QuarantineSpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The kernel's `restrict` bits.
    pub fn restricts(&self) -> u32 {
        use enforcer_common::verdict::restrict;
        [
            (self.exec, restrict::EXEC),
            (self.file_read, restrict::FILE_READ),
            (self.file_write, restrict::FILE_WRITE),
            (self.network, restrict::NETWORK),
        ]
        .iter()
        .filter(|(a, _)| *a == Action::Deny)
        .fold(0, |bits, (_, bit)| bits | bit)
    }
}

impl Spec {
    pub fn identity_name<'a>(&'a self, metadata: &'a Metadata) -> &'a str {
        self.identity.as_deref().unwrap_or(&metadata.name)
    }
}

/// Which cgroups belong to the identity. Exactly one of the fields is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// A cgroup v2 path relative to the cgroup root, e.g. `/system.slice/payments.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// A systemd unit name, e.g. `payments.service`: every cgroup of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// A full container id (64 hex digits) as it appears in the cgroup paths of
    /// containerd, CRI-O, Docker and podman (never matched under `/user.slice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Kubernetes pods on the agent's node (agent run with `--kubernetes`): the cgroups of
    /// their containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSelector>,
    /// Whether descendants of the selected cgroups belong to the identity (default true).
    #[serde(default = "yes")]
    pub subtree: bool,
}

/// Which pods' containers belong to the identity: all of namespace, labels, service
/// account and container name must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSelector {
    pub namespace: String,
    /// Every label listed must be on the pod with this value (none listed: every pod of
    /// the namespace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// A container name of the pod; every container when omitted (never the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    /// Step-up: denied with decision `pending` until an operator approves a time-bound
    /// grant. Rules only.
    Approve,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub exec: Action,
    #[serde(default)]
    pub file: Action,
    #[serde(default)]
    pub network: Action,
    #[serde(default)]
    pub listen: Action,
}

/// Exactly one of `path` (the file itself) and `dir` (the directory and all below it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Which accesses the rule decides; both when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<Access>>,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkRule {
    /// IPv4 or IPv6 CIDR (`10.0.0.0/8`, `2001:db8::/32`); a bare address means /32 or /128.
    pub cidr: String,
    /// `443`, `8000-8100`; all ports when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
    #[serde(default)]
    pub protocol: Protocol,
    pub action: Action,
}

/// A port (range) the identity may or may not `bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenRule {
    /// `8080`, `8000-8100`; all ports when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
    #[serde(default)]
    pub protocol: Protocol,
    pub action: Action,
}

/// A port or port range, written as a number or a `"lo-hi"` string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(schema_with = "super::resource::int_or_string")]
pub enum Ports {
    One(u32),
    Range(String),
}
