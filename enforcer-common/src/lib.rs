//! Types shared by the kernel programs and the agent.
//!
//! Every type that crosses the kernel/user boundary is `#[repr(C)]`, `Copy`, made of
//! fixed-width integers with explicit padding, and has its size pinned at compile time.
//! Enumerations cross as `u32`/`u8` constants and are decoded on the user side.
#![no_std]

pub mod aggregate;
pub mod event;
pub mod maps;
pub mod rule_filter;
pub mod sip;
pub mod verdict;

/// Version of the kernel/user ABI; carried in every event and bumped on any layout change.
pub const ABI_VERSION: u16 = 4;

/// Longest path (including the terminating NUL) the kernel programs can judge.
/// A path that does not fit is denied and reported with reason `path-too-long`.
pub const MAX_PATH: usize = 4096;

/// How many cgroup levels below the root the kernel walks to find a bound ancestor.
pub const MAX_CGROUP_DEPTH: u32 = 32;

/// How many directory levels above a file the kernel checks for rules by identity
/// (device and inode); deeper ancestors are matched by path only.
pub const MAX_DIR_DEPTH: u32 = 64;

/// Network rules one identity can have that apply to a single destination prefix
/// (the rules of the prefix itself plus those of every shorter prefix covering it).
pub const MAX_NET_RULES_PER_PREFIX: usize = 16;

/// Policy sets are double-buffered: userspace fills the inactive slot, then flips
/// [`maps::word::ACTIVE`] so each syscall sees one whole set.
pub const SLOTS: u32 = 2;

/// Capacities of the maps (entries over both slots).
pub mod capacity {
    pub const IDENTITIES: u32 = 2 * 1024;
    pub const LISTEN_RULES: u32 = IDENTITIES;
    pub const CGROUP_BINDINGS: u32 = 2 * 8192;
    pub const CGROUP_CACHE: u32 = 65_536;
    /// Per CPU, 40 bytes each: 40 KiB of kernel memory per CPU. A power of two.
    pub const IDENTITY_LINES: u32 = 1024;
    /// Hash maps allocated as entries are added (`BPF_F_NO_PREALLOC`): preallocated, the
    /// two would pin about 57 MB whatever the policies hold.
    pub const PATH_RULES: u32 = 2 * 131_072;
    pub const INODE_RULES: u32 = 2 * 131_072;
    /// An LPM trie: its nodes are always allocated as prefixes are added.
    pub const NET_PREFIXES: u32 = 2 * 65_536;
    /// 4 MiB: a verdict record is 160 bytes plus its path (typically 200–300 bytes in
    /// the ring with its 8-byte header), so this holds some 15,000 of them; repeats are
    /// counted in the kernel rather than queued. The consumer maps the data area twice,
    /// so the agent's resident memory grows by twice this size.
    pub const EVENTS_BYTES: u32 = 4 * 1024 * 1024;
    pub const QUARANTINE: u32 = 1024;
    pub const REVOKED: u32 = 4096;
    pub const GRANTS: u32 = 4096;
    pub const NET_GRANTS: u32 = 4096;
    pub const PROTECTED_INODES: u32 = 64;
    pub const PROTECTED_PIDS: u32 = 16;
    pub const SETUP_TASKS: u32 = 1024;
    pub const RUNTIME_TASKS: u32 = 4096;
    /// A power of two (see `OpenCacheKey::index`); 80 bytes each: 1.25 MiB of kernel
    /// memory.
    pub const OPEN_CACHE: u32 = 16_384;
    /// A power of two: a dentry's bucket is taken from its address.
    pub const DENTRY_EPOCHS: u32 = 4096;
}

/// FNV-1a 64-bit offset basis; path rules are keyed by this hash of the path bytes.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, the same function the kernel programs compute byte by byte.
#[must_use]
pub fn path_hash(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::path_hash;

    #[test]
    fn path_hash_is_fnv1a_64() {
        // Reference values of FNV-1a 64.
        assert_eq!(path_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(path_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(path_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
