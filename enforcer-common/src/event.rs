//! The verdict event the kernel programs send through the [`crate::maps::EVENTS`] ring
//! buffer for every deny and audit verdict (and allow verdicts when a policy asks).

use core::mem::size_of;

/// Kind of record in the ring buffer.
pub const EVENT_VERDICT: u16 = 1;
/// A cgroup was created ([`CgroupEvent`]).
pub const EVENT_CGROUP_MKDIR: u16 = 2;

/// A new cgroup, sent from the `cgroup_mkdir` tracepoint so the agent binds cgroups that
/// selectors pick by name within milliseconds of their creation.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupEvent {
    /// [`crate::ABI_VERSION`].
    pub abi: u16,
    /// [`EVENT_CGROUP_MKDIR`].
    pub kind: u16,
    /// Bytes of `path` in use (without NUL).
    pub path_len: u32,
    pub cgroup_id: u64,
    /// Path relative to the root of the cgroup's hierarchy (`/a/b`).
    pub path: [u8; crate::MAX_PATH],
}

const _: () = assert!(size_of::<CgroupEvent>() == 16 + crate::MAX_PATH);

/// One verdict.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VerdictEvent {
    /// [`crate::ABI_VERSION`].
    pub abi: u16,
    /// [`EVENT_VERDICT`].
    pub kind: u16,
    /// [`crate::verdict::hook`].
    pub hook: u32,
    /// `CLOCK_BOOTTIME` in nanoseconds.
    pub boot_ns: u64,
    /// Generation of the policy set that judged the access.
    pub generation: u64,
    pub cgroup_id: u64,
    pub identity: u32,
    /// Index of the matching rule in its resource list, or [`crate::verdict::RULE_DEFAULT`].
    pub rule: u32,
    /// [`crate::verdict::decision`].
    pub decision: u32,
    /// [`crate::verdict::reason`].
    pub reason: u32,
    /// Errno returned to the caller (0 when allowed).
    pub errno: i32,
    /// Thread-group id (the process id users know).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// File: [`crate::verdict::access`] bits. Signal and ptrace: the target process id.
    /// `bpf`: the command. Otherwise unused.
    pub access: u32,
    /// Network: [`crate::verdict::proto`].
    pub proto: u8,
    pub pad0: u8,
    /// Network: destination port (host order).
    pub port: u16,
    /// Network: `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub pad1: u16,
    /// Network: destination address, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    pub comm: [u8; 16],
    /// Exec and file: bytes of `path` in use (without NUL). Unlink, rmdir and rename:
    /// the entry's name (last component only).
    pub path_len: u32,
    pub pad2: u32,
    pub path: [u8; crate::MAX_PATH],
}

const _: () = assert!(size_of::<VerdictEvent>() == 120 + crate::MAX_PATH);
