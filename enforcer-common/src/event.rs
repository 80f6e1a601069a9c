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
    /// FNV-1a ([`crate::path_hash`]) of the `path_len` bytes of `path` (0 when empty):
    /// with the other fields it forms the verdict's [`crate::maps::AggKey`].
    pub target_hash: u64,
    /// Calls counted by this verdict's aggregation entry up to and including this one
    /// (see [`crate::aggregate`]); 0 when the verdict is not aggregated.
    pub sequence: u64,
    /// Creation time (boot clock) of that entry: a new value means a new entry.
    pub epoch: u64,
    /// First and last repeats of the verdict the kernel counted without reporting them
    /// since the previous report (boot clock; 0 when there were none).
    pub repeat_first_ns: u64,
    pub repeat_last_ns: u64,
    /// Only the first `path_len` bytes travel through the ring buffer: a record is
    /// [`VERDICT_HEADER`] + `path_len` bytes long.
    pub path: [u8; crate::MAX_PATH],
}

/// Bytes of a [`VerdictEvent`] before `path`; every record carries at least these.
pub const VERDICT_HEADER: usize = 160;

const _: () = assert!(size_of::<VerdictEvent>() == VERDICT_HEADER + crate::MAX_PATH);
const _: () = assert!(core::mem::offset_of!(VerdictEvent, path) == VERDICT_HEADER);

/// Value of the per-CPU `EVENT_BUF` map: where a verdict is built before the used part
/// is copied into the ring buffer. `owner` (the builder's pid/tgid) detects a program
/// that preempted the builder on the same CPU and reused the buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventBuf {
    pub owner: u64,
    pub event: VerdictEvent,
}

const _: () = assert!(size_of::<EventBuf>() == 8 + size_of::<VerdictEvent>());
