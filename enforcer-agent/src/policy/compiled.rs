//! A policy set compiled to map entries, without a slot: what the kernel maps must hold.

use enforcer_common::maps::{Binding, IdentityConfig, NetEntry, PathRule};

/// Path rule key without its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathRuleKey {
    pub identity: u32,
    pub kind: u8,
    pub hash: u64,
    pub len: u16,
}

/// Rule key by file identity without its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeRuleKey {
    pub identity: u32,
    pub kind: u8,
    /// Kernel encoding (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    pub ino: u64,
}

/// Network prefix key without its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetPrefix {
    pub identity: u32,
    /// IPv6 form (IPv4 mapped); `prefix_len` counts bits of this address.
    pub addr: [u8; 16],
    pub prefix_len: u8,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompiledSet {
    pub generation: u64,
    pub identities: Vec<(u32, IdentityConfig)>,
    /// cgroup id → binding.
    pub bindings: Vec<(u64, Binding)>,
    pub path_rules: Vec<(PathRuleKey, PathRule)>,
    /// The path each path rule key stands for (the kernel only sees hashes), from which
    /// the rules by file identity are found when the set is installed.
    pub path_names: Vec<(PathRuleKey, String)>,
    /// The path rules again, by the identity of the files they name (filled on install).
    pub inode_rules: Vec<(InodeRuleKey, PathRule)>,
    pub net_rules: Vec<(NetPrefix, NetEntry)>,
    /// identity → its `listen` rules.
    pub listen_rules: Vec<(u32, NetEntry)>,
}
