//! Keys and values of the BPF maps, and the maps' names.
//!
//! Every policy-derived key carries the slot it belongs to, so a whole policy set can be
//! written next to the running one and switched in with one store to [`word::ACTIVE`].

use core::mem::size_of;

/// `Array<u64>`, [`word::COUNT`] entries: the single words the hooks read at nearly every
/// call (indices in [`word`]), side by side in one map value. Each map value is memory of
/// its own, and a hook's first look at its caller used to touch one page per word; where a
/// page costs a walk of the page tables (after a context switch, or under emulation, where
/// an exec's three such words measured a microsecond) one page for all of them is the
/// difference. Each word is an element of its own: the agent writes one without touching
/// the others, and the programs add to theirs atomically.
pub const WORDS: &str = "WORDS";

/// The elements of [`WORDS`].
pub mod word {
    /// The slot whose policy set is in force (0 or 1).
    pub const ACTIVE: u32 = 0;
    /// The generation number of the set in each slot: element `SLOT_GENERATION + slot`.
    pub const SLOT_GENERATION: u32 = 1;
    /// Bumped by the agent after every binding change, so cached resolutions made before
    /// it are never trusted again.
    pub const BIND_EPOCH: u32 = 3;
    /// Non-zero while [`QUARANTINE`](super::QUARANTINE) may hold an entry. Raised before
    /// the first entry is added and lowered after the last is removed, so a hook that
    /// reads 0 may skip the quarantine lookup.
    pub const QUARANTINE_ANY: u32 = 4;
    /// Non-zero while [`REVOKED`](super::REVOKED) may hold an entry, kept like
    /// [`QUARANTINE_ANY`].
    pub const REVOKED_ANY: u32 = 5;
    /// Non-zero while [`SETUP_TASKS`](super::SETUP_TASKS) may hold an entry. Raised by the
    /// agent before it adds one and lowered only once it finds the table empty (the
    /// programs only ever remove entries), so a hook that reads 0 may skip the lookup.
    pub const SETUP_ANY: u32 = 6;
    /// Elements in all.
    pub const COUNT: u32 = 7;

    const _: () = assert!(SLOT_GENERATION + crate::SLOTS == BIND_EPOCH, "one generation per slot");
}

/// `HashMap<CgroupKey, Binding>`: cgroups selected by an identity.
pub const CGROUP_BINDINGS: &str = "CGROUP_BINDINGS";
/// `LruHashMap<CgroupKey, u32>`: resolved identity (0 = none) of cgroups seen by a hook.
pub const CGROUP_CACHE: &str = "CGROUP_CACHE";
/// `HashMap<IdentityKey, IdentityConfig>`: mode and defaults of each identity.
pub const IDENTITIES: &str = "IDENTITIES";
/// `HashMap<PathKey, PathRule>`: exec and file rules.
pub const PATH_RULES: &str = "PATH_RULES";
/// `LpmTrie<NetKey, NetEntry>`: network rules by destination prefix.
pub const NET_RULES: &str = "NET_RULES";
/// `RingBuf`: verdict events.
pub const EVENTS: &str = "EVENTS";
/// `PerCpuArray<u64>`: counters indexed by [`crate::verdict::stat`].
pub const STATS: &str = "STATS";
/// `PerCpuArray<Scratch>`: path buffer of the LSM programs.
pub const SCRATCH: &str = "SCRATCH";
/// `HashMap<u32, Quarantine>`: quarantined identities (live state, not per slot).
pub const QUARANTINE: &str = "QUARANTINE";
/// `HashMap<RevokedKey, Revoked>`: revoked credential files, by path (live state).
pub const REVOKED: &str = "REVOKED";

/// `HashMap<GrantKey, Grant>`: time-bound exec and file grants (live state).
pub const GRANTS: &str = "GRANTS";
/// `LpmTrie<NetGrantKey, NetGrant>`: time-bound network grants (live state).
pub const NET_GRANTS: &str = "NET_GRANTS";
/// `HashMap<InodeKey, u32>`: the enforcer's own files and directories (state, socket, log).
pub const PROTECTED_INODES: &str = "PROTECTED_INODES";
/// `HashMap<u32, u32>`: process ids of the agent, which managed tasks may not signal or trace.
pub const PROTECTED_PIDS: &str = "PROTECTED_PIDS";
/// `PerCpuArray<u64>`, one entry per slot: sleepable programs currently reading that
/// slot. The agent rewrites a slot only once its count is zero.
pub const READERS: &str = "READERS";
/// `HashMap<InodeRuleKey, PathRule>`: exec and file rules by the identity (device and
/// inode) of the files and directories they name, as found when the set was installed.
pub const INODE_RULES: &str = "INODE_RULES";

/// `HashMap<IdentityKey, NetEntry>`: each identity's `listen` rules (ports it may bind),
/// in document order; the first match decides.
pub const LISTEN_RULES: &str = "LISTEN_RULES";

/// `HashMap<u32, u64>`: container init processes (thread-group id → their container's
/// cgroup id) between the runtime's `createRuntime` hook and their exec of the
/// entrypoint. Their mounts, `pivot_root` and `chroot` (the runtime finishing the
/// container's root) are allowed; the exec ends the exemption.
pub const SETUP_TASKS: &str = "SETUP_TASKS";

/// `HashMap<u32, u32>`: processes of a container runtime a policy names
/// (`spec.runtimes`), thread-group id → identity number: from the runtime's exec, through
/// its children, until each executes a program from a file. Their mounts, `pivot_root`,
/// `chroot` and executions of files with no path (runc's memfd copy of itself) are
/// allowed; every other rule still judges them.
pub const RUNTIME_TASKS: &str = "RUNTIME_TASKS";

/// `PerCpuArray<EventBuf>`: where a verdict event is built before its used bytes are
/// copied into [`EVENTS`].
pub const EVENT_BUF: &str = "EVENT_BUF";

/// `LruHashMap<AggKey, AggEntry>`: repeated identical verdicts counted in the kernel
/// (see [`crate::aggregate`]). The agent only reads it.
pub const VERDICT_AGG: &str = "VERDICT_AGG";

/// `PerCpuArray<IdentityLine>`: each CPU's cache of resolved identities and their
/// configuration, read without a hash lookup (see [`IdentityLine`]).
pub const IDENTITY_LINES: &str = "IDENTITY_LINES";

/// `Array<RuleFilter>`, `SLOTS * 2` entries ([`crate::rule_filter::index`]): per slot,
/// the filters of [`PATH_RULES`] and [`INODE_RULES`] keys. Written by the agent with the
/// slot, before the flip; a clear bit lets a hook skip a lookup.
pub const RULE_FILTERS: &str = "RULE_FILTERS";

/// The section of the programs' [`CpuRecords`] global, a map of one element the loader
/// makes from it; the agent reads the counts in it ([`CpuTask::hits`]).
pub const RECORDS_SECTION: &str = ".bss";

/// The section of the programs' [`OpenCache`] global, a map of one element the loader
/// makes from it (left unpinned, as the other section maps: bpffs reserves names with
/// dots).
pub const OPEN_CACHE_SECTION: &str = ".bss.open_cache";

/// What the file rules found for recently opened files, and the exec rules for recently
/// executed ones, with the epochs that tell a reused dentry from the one an entry was
/// made for: a global of the programs (not maps they look up), so each lookup is an
/// address computed in line, with no bounds check or missing element to branch on.
/// Written and read by `file_open`, `bprm_check_security`, `mmap_file` and
/// `d_instantiate` only.
#[repr(C)]
pub struct OpenCache {
    /// Each key's entry in the element [`OpenCacheKey::index`] picks for it (see
    /// [`OpenCacheEntry`]), under its [`cache_kind`]. First: an entry's words then lie at
    /// offsets a load instruction holds (16 bits), from the entry's address.
    pub entries: [OpenCacheEntry; crate::capacity::OPEN_CACHE as usize],
    /// One per bucket of [`dentry_name_id`]s: moved whenever a dentry with a name in the
    /// bucket is given an inode (`d_instantiate`), so an entry made for a dentry that was
    /// freed is never trusted for another one allocated at the same address with the
    /// same name.
    pub dentry_epochs: [u64; crate::capacity::DENTRY_EPOCHS as usize],
}

/// Every map the kernel object must define.
pub const ALL: [&str; 24] = [
    WORDS,
    CGROUP_BINDINGS,
    CGROUP_CACHE,
    IDENTITIES,
    PATH_RULES,
    NET_RULES,
    EVENTS,
    STATS,
    SCRATCH,
    QUARANTINE,
    REVOKED,
    GRANTS,
    NET_GRANTS,
    PROTECTED_INODES,
    PROTECTED_PIDS,
    READERS,
    INODE_RULES,
    LISTEN_RULES,
    SETUP_TASKS,
    RUNTIME_TASKS,
    EVENT_BUF,
    VERDICT_AGG,
    IDENTITY_LINES,
    RULE_FILTERS,
];

/// Names of the global constants the agent sets at load time: field offsets read from
/// the running kernel's BTF, so one object works on every kernel version.
pub mod globals {
    pub const OFF_BPRM_FILE: &str = "OFF_BPRM_FILE";
    pub const OFF_FILE_F_PATH: &str = "OFF_FILE_F_PATH";
    pub const OFF_FILE_F_MODE: &str = "OFF_FILE_F_MODE";
    pub const OFF_FILE_F_INODE: &str = "OFF_FILE_F_INODE";
    pub const OFF_INODE_I_SB: &str = "OFF_INODE_I_SB";
    pub const OFF_INODE_I_INO: &str = "OFF_INODE_I_INO";
    pub const OFF_INODE_I_PRIVATE: &str = "OFF_INODE_I_PRIVATE";
    pub const OFF_SB_S_MAGIC: &str = "OFF_SB_S_MAGIC";
    pub const OFF_SB_S_DEV: &str = "OFF_SB_S_DEV";
    pub const OFF_KERNFS_PARENT: &str = "OFF_KERNFS_PARENT";
    pub const OFF_KERNFS_ID: &str = "OFF_KERNFS_ID";
    pub const OFF_KERNFS_NAME: &str = "OFF_KERNFS_NAME";
    pub const OFF_DENTRY_D_INODE: &str = "OFF_DENTRY_D_INODE";
    pub const OFF_DENTRY_NAME: &str = "OFF_DENTRY_NAME";
    pub const OFF_DENTRY_D_PARENT: &str = "OFF_DENTRY_D_PARENT";
    pub const OFF_FILE_DENTRY: &str = "OFF_FILE_DENTRY";
    pub const OFF_TASK_TGID: &str = "OFF_TASK_TGID";
    pub const OFF_TASK_CGROUPS: &str = "OFF_TASK_CGROUPS";
    pub const OFF_TASK_STACK: &str = "OFF_TASK_STACK";
    pub const OFF_CSS_SET_DFL_CGRP: &str = "OFF_CSS_SET_DFL_CGRP";
    pub const OFF_CGROUP_KN: &str = "OFF_CGROUP_KN";
    pub const OFF_VMA_VM_FILE: &str = "OFF_VMA_VM_FILE";
    pub const OFF_PATH_DENTRY: &str = "OFF_PATH_DENTRY";
    pub const OFF_UNIX_SOCK_DENTRY: &str = "OFF_UNIX_SOCK_DENTRY";
    pub const OFF_SOCKET_SK: &str = "OFF_SOCKET_SK";
    /// `task_struct.fs`.
    pub const OFF_TASK_FS: &str = "OFF_TASK_FS";
    /// `fs_struct.seq`: moved around every change of the task's root or working directory.
    pub const OFF_FS_SEQ: &str = "OFF_FS_SEQ";
    /// `fs_struct.root` plus `path.mnt`: the task's root directory (a `struct path`).
    pub const OFF_FS_ROOT_MNT: &str = "OFF_FS_ROOT_MNT";
    /// `fs_struct.root` plus `path.dentry`.
    pub const OFF_FS_ROOT_DENTRY: &str = "OFF_FS_ROOT_DENTRY";
    /// `file.f_path` plus `path.mnt`: the file's `struct path` (mount, then dentry).
    pub const OFF_FILE_MNT: &str = "OFF_FILE_MNT";
    /// `dentry.d_name` plus `qstr.hash` / `qstr.len`: the hash and length of its name.
    pub const OFF_DENTRY_NAME_HASH: &str = "OFF_DENTRY_NAME_HASH";
    pub const OFF_DENTRY_NAME_LEN: &str = "OFF_DENTRY_NAME_LEN";
    /// `dentry.d_hash` plus `hlist_bl_node.pprev`: null while the dentry is unhashed
    /// (removed from its directory).
    pub const OFF_DENTRY_HASH_PPREV: &str = "OFF_DENTRY_HASH_PPREV";
    /// Kernel address of the `mount_lock` sequence lock (from `/proc/kallsyms`; 0 when
    /// unknown, which turns the open cache ([`super::OpenCache`]) off).
    pub const MOUNT_LOCK_ADDR: &str = "MOUNT_LOCK_ADDR";
    /// `inode.i_mode`: the file's type, which tells a directory's move from a file's.
    pub const OFF_INODE_I_MODE: &str = "OFF_INODE_I_MODE";
    /// The agent's secret key of [`crate::sip::keyed`] path proofs (two words).
    pub const PATH_KEY0: &str = "PATH_KEY0";
    pub const PATH_KEY1: &str = "PATH_KEY1";
    /// The most verbose kernel diagnostics the programs log (aya-log's level numbering;
    /// 0 = none): the gate of every log call.
    pub const KERNEL_LOG: &str = "KERNEL_LOG";
    /// Non-zero if every possible CPU has a record in `CpuRecords` (at most
    /// `RECORDED_CPUS`): only then do the programs use the records.
    pub const CPU_RECORDS: &str = "CPU_RECORDS";
}

/// Key of [`CGROUP_BINDINGS`] and [`CGROUP_CACHE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CgroupKey {
    /// Cgroup v2 id: the inode number of the cgroup directory.
    pub cgroup_id: u64,
    pub slot: u32,
    pub pad: u32,
}

/// Value of [`CGROUP_CACHE`]: the identity resolved for a cgroup, valid only while
/// [`word::BIND_EPOCH`] still holds `epoch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub epoch: u64,
    /// Identity number, 0 = none.
    pub identity: u32,
    pub pad: u32,
}

/// Key of [`PROTECTED_INODES`]: a file by device (kernel encoding, `MAJOR << 20 | MINOR`)
/// and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub pad: u32,
}

/// Binding flag: the binding covers every descendant cgroup too.
pub const BINDING_SUBTREE: u32 = 1;

/// Value of [`CGROUP_BINDINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Identity number (never 0; 0 means "no identity" in the cache).
    pub identity: u32,
    pub flags: u32,
}

/// Key of [`IDENTITIES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    pub identity: u32,
    pub slot: u32,
}

/// Value of [`IDENTITIES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityConfig {
    /// [`crate::verdict::mode`].
    pub mode: u8,
    /// Default [`crate::verdict::action`] per resource.
    pub exec_default: u8,
    pub file_default: u8,
    pub net_default: u8,
    /// Default action for binding a port (`listen` rules).
    pub listen_default: u8,
    pub pad: [u8; 3],
    /// `IDENTITY_*` flags.
    pub flags: u32,
}

/// One line of [`IDENTITY_LINES`]: what a cgroup resolved to in one slot, under one
/// binding epoch. Line `((cgroup_id << 1) | slot) % LINES` of the CPU the hook runs on,
/// so a line serves one slot only.
///
/// Written and read only by programs on its own CPU, which may preempt one another: the
/// writer takes the line by moving `seq` from even to odd with a compare-and-exchange,
/// writes the fields and makes `seq` even again; a reader trusts what it read only if
/// `seq` was even and unchanged around its reads (a sequence lock without barriers: all
/// accesses are from one CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityLine {
    pub seq: u64,
    pub cgroup_id: u64,
    /// [`word::BIND_EPOCH`] when the resolution started; the agent bumps it after every
    /// binding change and before every flip, so an older line is never trusted.
    pub epoch: u64,
    /// Identity number, 0 = none (then `config` is unused).
    pub identity: u32,
    pub config: IdentityConfig,
}

/// The task a CPU runs, as the context switch into it recorded it: that CPU's element of
/// [`CpuRecords::records`]. It spares the hooks the function call that finds the
/// current task (on CPUs whose return mitigations make every call costly, the largest
/// part of an unmanaged call's cost).
///
/// A hook trusts an entry only if all of these hold, and otherwise finds the cgroup from
/// the task itself:
/// - `seq` is even and unchanged around its reads (the writer runs at the context switch
///   with interrupts off, so a reader sees a torn entry only across its own preemption);
/// - `moves` equals [`CpuRecords::moves`]: no task changed cgroup since the entry was written;
/// - the hook's own stack frame lies within [`TASK_STACK_SPAN`] bytes above `stack`: the
///   entry is the running task's (live tasks' kernel stacks never overlap), whatever
///   context switch the recorder might not have seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTask {
    pub seq: u64,
    /// The task's kernel stack (`task_struct.stack`: its lowest address).
    pub stack: u64,
    /// The task's cgroup v2 id.
    pub cgroup_id: u64,
    /// [`CpuRecords::moves`] when the entry was written.
    pub moves: u64,
    /// Not part of the record: where the open cache's lookup turns the kernel pointers of
    /// its key into numbers (a store and a load, where a helper read costs a function
    /// call), but for an open's, which are turned into numbers in [`CpuTask::opened`].
    /// Here, not in a map of its own, so the lookup touches no page of memory the hook
    /// has not already read.
    pub numbers: [u64; 4],
    /// A copy of the task's line of [`IDENTITY_LINES`] for the slot and binding epoch in
    /// force, made by the context switch where this CPU has one (else a cgroup id of 0),
    /// and tried by hooks before the lines, whose lookup touches two more pages of
    /// memory. Its `epoch` is the [`stamp`] of the slot and binding epoch it was copied
    /// under ([`CpuRecords::stamp`]). Only the context switch writes it, inside the
    /// record's own `seq` window: the hooks' fast path reads it under the record's `seq`,
    /// the other readers under its own, as a line is read.
    pub line: IdentityLine,
    /// The allows this CPU's hooks decided from the record and the open cache alone
    /// (`lsm::quick`), by [`hit`] index: counted here, in the page the hook has already
    /// read, not in [`STATS`], whose lookups cost branches. The agent adds them to the
    /// counters ([`CpuRecords::add_hits`]).
    pub hits: [u64; hit::COUNT],
    /// Not part of the record: what the last open for reading by a managed caller on this
    /// CPU read for the open cache, so that the exec which follows the kernel's own open
    /// of the program it runs, with no context switch in between, looks up its entry
    /// without reading them again (`open_cache::Opened`).
    pub opened: [u64; opened::COUNT],
    /// To 256 bytes: two CPUs' records never share a cache line.
    pub pad: [u64; 3],
}

/// How [`CpuRecords::renames`] counts the kernel's dentry moves (`d_move`, `d_exchange`:
/// every rename, and the moves of some network file systems), for the open cache: its
/// entries hold while no directory moved since their judgement, and none is made or used
/// while a move is under way.
///
/// A move's start adds one move under way (and one directory move, if a directory moves);
/// its end adds one more directory move (if one) and takes the move under way off again,
/// but only if its start was counted: a start and an end are paired by the task making
/// the move, so an end whose start was never counted (a move under way as the programs
/// were attached) takes nothing off. An end never counted leaves a move under way for
/// good: the open cache then stays off (it fails closed).
pub mod renames {
    /// One move under way (the low half).
    pub const UNDER_WAY: u64 = 1;
    /// One directory move (the high half; it wraps within it, never into the low half).
    pub const DIRECTORY: u64 = 1 << 32;

    /// What the start of a move adds.
    #[must_use]
    pub const fn started(directory: bool) -> u64 {
        UNDER_WAY + if directory { DIRECTORY } else { 0 }
    }

    /// What the end of a move adds (with wrapping), `paired` if its start was counted.
    #[must_use]
    pub const fn done(directory: bool, paired: bool) -> u64 {
        let directory = if directory { DIRECTORY } else { 0 };
        if paired { directory.wrapping_sub(UNDER_WAY) } else { directory }
    }

    /// The directory move count of `word`, or `None` while a move is under way.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "the two halves")]
    pub const fn settled(word: u64) -> Option<u32> {
        if word as u32 == 0 { Some((word >> 32) as u32) } else { None }
    }
}

/// Indices of [`CpuTask::opened`]: the key's and the root's pointers as the open read
/// them, as numbers, its `struct file` and the record's `seq` as the open read them, the
/// other key and stamp words it read, and a word that is 0 only if it read them whole.
pub mod opened {
    // The key's and the root's pointers first, in the order `open_cache::opened_now`
    // turns them into numbers here.
    pub const MNT: usize = 0;
    pub const DENTRY: usize = 1;
    pub const ROOT_MNT: usize = 2;
    pub const ROOT_DENTRY: usize = 3;
    pub const FILE: usize = 4;
    pub const SEQ: usize = 5;
    pub const NAME_ID: usize = 6;
    /// The directory move count in the low half, the mount count in the high half.
    pub const SEQUENCES: usize = 7;
    pub const DENTRY_EPOCH: usize = 8;
    pub const BAD: usize = 9;
    pub const COUNT: usize = 10;
}

/// Indices of [`CpuTask::hits`]: each allow from the open cache is counted once, under
/// the kind of call and whether a rule or the default decided it (the `_DEFAULT` index
/// is the `_RULE` one plus one).
pub mod hit {
    /// Execs a rule allows (each an allow and a `stat::EXEC_CACHE_HITS`).
    pub const EXEC_RULE: usize = 0;
    /// Execs no rule names, allowed by the default (also `stat::DEFAULT_FALLBACK`).
    pub const EXEC_DEFAULT: usize = 1;
    /// Opens for reading a rule allows (each an allow and a `stat::OPEN_CACHE_HITS`).
    pub const OPEN_RULE: usize = 2;
    /// Opens for reading no rule names, allowed by the default (also
    /// `stat::DEFAULT_FALLBACK`).
    pub const OPEN_DEFAULT: usize = 3;
    /// Executable mappings an exec rule allows (counted as execs are).
    pub const MAPPED_RULE: usize = 4;
    /// Executable mappings no exec rule names, allowed without a verdict
    /// (`stat::EXEC_CACHE_HITS` only).
    pub const MAPPED: usize = 5;
    pub const COUNT: usize = 6;
}

/// CPUs [`CpuRecords`] has a record for. A machine with more possible CPUs uses none
/// (the agent tells the programs at load, see [`globals::CPU_RECORDS`]): every hook then
/// finds its caller the slower way.
/// 512 with records of 256 bytes: the agent reads the whole global to add up the hits,
/// and keeps it at 128 KiB.
pub const RECORDED_CPUS: usize = 512;

/// The kernel programs' own global state (their `.bss`, a map value the agent only
/// reads, for the counts in [`CpuTask::hits`]): the record of each CPU's task and the two words a hook checks a record
/// against, side by side, so an unmanaged caller's whole decision reads one page of
/// memory on a machine of up to 15 CPUs, and two on a larger one. Under emulation a page
/// first touched after a context switch costs 300–600 ns, and a map lookup two or three
/// branches of about 200 ns each (there each branch ends a block of translated code,
/// and the next block is looked up again after every switch of address space).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpuRecords {
    /// Moved at every cgroup migration of a task, so no CPU's record written before the
    /// move is trusted after it.
    pub moves: u64,
    /// The slot in force and the binding epoch as last published ([`stamp`]; 0 = never
    /// published, which no record matches). Written only by the `publish` program, which
    /// writes the same two values into [`WORDS`] first, so it never claims more than
    /// they say.
    pub stamp: u64,
    /// A copy of [`WORDS`] (indices in [`word`]) as of the last publication, made by
    /// `publish` before it writes the stamp: the slots' generations and the "any entry"
    /// flags, for the hooks' fast paths to read without a lookup. The agent publishes
    /// again after each change of a flag, raised before its table gains an entry and
    /// lowered after the table is empty, so the copy errs as the words do.
    pub words: [u64; word::COUNT as usize],
    pub pad: [u64; 13 - word::COUNT as usize],
    /// The dentry moves ([`renames`]): the moves under way in the low half, the
    /// directory moves done or under way in the high half. In the second cache line, away
    /// from the words every hook reads, as it is written at every rename on the host.
    pub renames: u64,
    /// Element `cpu` is that CPU's: written by the context switch on it and read by the
    /// hooks that run there.
    pub records: [CpuTask; RECORDED_CPUS],
}

impl CpuRecords {
    /// Adds the allows counted in the records ([`CpuTask::hits`]) to `totals`, the
    /// counters summed over CPUs in `stat` order.
    pub fn add_hits(&self, totals: &mut [u64; crate::verdict::stat::COUNT as usize]) {
        use crate::verdict::stat;
        for record in &self.records {
            let [exec_rule, exec_default, open_rule, open_default, mapped_rule, mapped] = record.hits;
            let (exec, open) = (exec_rule + exec_default + mapped_rule, open_rule + open_default);
            totals[stat::EXEC_CACHE_HITS as usize] += exec + mapped;
            totals[stat::OPEN_CACHE_HITS as usize] += open;
            totals[stat::DEFAULT_FALLBACK as usize] += exec_default + open_default;
            totals[stat::ALLOW as usize] += exec + open;
        }
    }
}

/// [`CpuRecords::stamp`] for a slot and binding epoch: a bit no unpublished word has,
/// the epoch, and the slot in the lowest bit (as a line's index holds it).
#[must_use]
pub const fn stamp(epoch: u64, slot: u32) -> u64 {
    STAMP_PUBLISHED | (epoch << 1) | (slot & 1) as u64
}

/// The bit every published [`stamp`] has.
pub const STAMP_PUBLISHED: u64 = 1 << 63;

/// Bytes of a kernel stack a hook's frame may lie above `CpuTask::stack`: the x86-64
/// and arm64 `THREAD_SIZE`. A kernel with larger stacks (KASAN) puts frames higher: the
/// check then fails and hooks take the slower path; it never matches another task's
/// stack, which starts at least a guard page past this span.
pub const TASK_STACK_SPAN: u64 = 16 * 1024;

/// Kinds of path rule keys.
pub mod path_kind {
    pub const EXEC_EXACT: u8 = 1;
    pub const EXEC_DIR: u8 = 2;
    pub const FILE_EXACT: u8 = 3;
    pub const FILE_DIR: u8 = 4;
    /// A container runtime's executable (`spec.runtimes`), by file identity only.
    pub const RUNTIME: u8 = 5;
}

/// Key of [`PATH_RULES`]: a path (exact) or a directory (subtree), by hash and length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PathKey {
    /// [`crate::path_hash`] of the normalised path without trailing slash.
    pub hash: u64,
    pub identity: u32,
    /// Length of the path in bytes.
    pub len: u16,
    /// [`path_kind`].
    pub kind: u8,
    pub slot: u8,
}

/// Key of [`INODE_RULES`]: a file or directory named by a rule, by device (kernel
/// encoding) and inode number; `kind` is a [`path_kind`] like in [`PathKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeRuleKey {
    pub ino: u64,
    pub dev: u32,
    pub identity: u32,
    pub kind: u8,
    pub slot: u8,
    pub pad: [u8; 6],
}

/// Value of [`PATH_RULES`]: what the rule says for each access, and which rule says it.
/// Exec rules use the `read` half.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// [`crate::sip::keyed`] of the path (0 in [`INODE_RULES`]): the index (hash and
    /// length) can be forged, this proof cannot without the agent's key.
    pub check: u64,
    pub read_action: u8,
    pub write_action: u8,
    pub pad: u16,
    pub read_rule: u32,
    pub write_rule: u32,
    pub pad2: u32,
}

impl PathRule {
    /// A rule that decides nothing yet.
    #[must_use]
    pub const fn empty() -> Self {
        Self { check: 0, read_action: 0, write_action: 0, pad: 0, read_rule: 0, write_rule: 0, pad2: 0 }
    }
}

/// Data part of the [`NET_RULES`] LPM key. The first 64 bits (slot, identity) are always
/// part of the prefix; IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetKey {
    pub slot: u32,
    pub identity: u32,
    pub addr: [u8; 16],
}

/// Bits of [`NetKey`] that are always matched before the address.
pub const NET_KEY_FIXED_BITS: u32 = 64;

/// One network rule inside a [`NetEntry`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetRule {
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`crate::verdict::proto`].
    pub proto: u8,
    /// [`crate::verdict::action`].
    pub action: u8,
    pub pad: u16,
    /// Index of the rule in the policy's `network` list.
    pub rule: u32,
}

/// Value of [`NET_RULES`]: the rules that apply to destinations under this prefix, most
/// specific prefix first, in document order within a prefix. The first match decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEntry {
    pub count: u32,
    pub pad: u32,
    pub rules: [NetRule; crate::MAX_NET_RULES_PER_PREFIX],
}

/// Value of [`QUARANTINE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quarantine {
    /// [`crate::verdict::restrict`] bits.
    pub restricts: u32,
    pub pad: u32,
}

/// Key of [`REVOKED`]: the exact path, by hash and length like [`PathKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevokedKey {
    pub hash: u64,
    pub len: u32,
    pub pad: u32,
}

/// What a path grant allows.
pub mod grant_kind {
    pub const EXEC: u8 = 1;
    pub const FILE_READ: u8 = 2;
    pub const FILE_WRITE: u8 = 3;
}

/// Key of [`GRANTS`]: one identity, one exact path, one access.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantKey {
    pub hash: u64,
    pub identity: u32,
    pub len: u16,
    /// [`grant_kind`].
    pub kind: u8,
    pub pad: u8,
}

/// Value of [`GRANTS`]: valid while `CLOCK_BOOTTIME` is before `expires_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub expires_ns: u64,
    pub id: u32,
    pub pad: u32,
    /// [`crate::sip::keyed`] of the path.
    pub check: u64,
}

/// Value of [`REVOKED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub id: u32,
    pub pad: u32,
    /// [`crate::sip::keyed`] of the path.
    pub check: u64,
}

/// Data of the [`NET_GRANTS`] LPM key: the identity (always matched) and the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetGrantKey {
    pub identity: u32,
    pub addr: [u8; 16],
}

/// Bits of [`NetGrantKey`] always matched before the address.
pub const NET_GRANT_FIXED_BITS: u32 = 32;

/// Value of [`NET_GRANTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetGrant {
    pub expires_ns: u64,
    pub id: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`crate::verdict::proto`].
    pub proto: u8,
    pub pad: [u8; 7],
}

/// Value of [`SCRATCH`]: a per-CPU path buffer. `owner` detects reuse by another task
/// while a program was preempted (on a preemptible kernel).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    pub owner: u64,
    /// The [`OpenCache`] key and stamp of the open being judged, read before its path.
    pub staged: OpenStaged,
    pub buf: [u8; crate::MAX_PATH],
}

/// An [`OpenCache`] key and its stamp, staged for the entry a full judgement makes.
/// Kept in the per-CPU buffer rather than on the 512-byte stack; `valid` is 0 where the
/// cache could not be used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenStaged {
    pub valid: u64,
    pub key: OpenCacheKey,
    pub stamp: OpenStamp,
    /// The entry's words ([`OpenFindings::words`]), built here rather than on the stack.
    /// Another task reusing the buffer meanwhile can only make an entry of its own key
    /// whose stamp is stale, or its own consistent one: the words are copied from here
    /// only after the key and root were read again and found to be the staged ones.
    pub words: [u64; OPEN_CACHE_WORDS],
}

/// Key of [`VERDICT_AGG`]: what makes two verdicts the same verdict. Built from the
/// event by [`AggKey::of`], on both sides, so the agent finds the entry of a record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AggKey {
    pub cgroup_id: u64,
    pub generation: u64,
    /// FNV-1a of the path or name (0 when there is none).
    pub target_hash: u64,
    /// Network: the address.
    pub addr: [u8; 16],
    pub identity: u32,
    pub rule: u32,
    /// Access bits, or the process, command or flags an object verdict names.
    pub access: u32,
    /// Bytes of path or name.
    pub len: u32,
    pub port: u16,
    pub family: u16,
    pub hook: u8,
    pub decision: u8,
    pub reason: u8,
    pub proto: u8,
}

impl AggKey {
    /// The key of `event`'s verdict: identity, cgroup, policy generation, hook, rule,
    /// decision, reason and target; not the process, thread or time.
    #[inline(always)]
    #[must_use]
    #[expect(clippy::inline_always, reason = "BPF-to-BPF calls cost verifier state; inlined on purpose")]
    #[expect(clippy::cast_possible_truncation, reason = "hook, decision and reason codes are below 256")]
    pub fn of(event: &crate::event::VerdictEvent) -> Self {
        Self {
            cgroup_id: event.cgroup_id,
            generation: event.generation,
            target_hash: event.target_hash,
            addr: event.addr,
            identity: event.identity,
            rule: event.rule,
            access: event.access,
            len: event.path_len,
            port: event.port,
            family: event.family,
            hook: event.hook as u8,
            decision: event.decision as u8,
            reason: event.reason as u8,
            proto: event.proto,
        }
    }
}

/// Value of [`VERDICT_AGG`]. `hits` is only ever raised atomically by the kernel, and
/// comes first so a reader that copies the value in address order reads it before
/// `window_ns` (see [`crate::aggregate`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AggEntry {
    /// Calls of this verdict since the entry was created, reported or not.
    pub hits: u64,
    /// When the current window opened: the time of the last reported call.
    pub window_ns: u64,
    /// When the entry was created; identifies it across an eviction.
    pub epoch: u64,
    /// First repeat (not reported) in the current window; 0 if none yet.
    pub first_ns: u64,
    /// Last call.
    pub last_ns: u64,
}

/// Key of [`OpenCache`]: the opened file as the kernel names it (its mount and dentry)
/// and who asks under which slot, for which rules. Addresses are only compared, never followed. The
/// dentry comes with its name's [`dentry_name_id`], which also picks its
/// [`OpenCache::dentry_epochs`] bucket. The caller's root is part of the [`OpenStamp`]; it needs no
/// epoch: a root directory that is an ancestor of the file is pinned by it (it cannot be
/// freed and its address reused), and every root that is not one shows the file by the
/// same path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenCacheKey {
    /// The file's `struct path` (mount, then dentry: the kernel's order, read in one).
    pub mnt: u64,
    pub dentry: u64,
    pub name_id: u32,
    /// [`OpenCacheKey::who`]: the identity, the kind of rules and the slot in one word.
    pub who: u32,
}

/// What stands for a dentry's name in [`OpenCacheKey`] and picks its [`OpenCache::dentry_epochs`]
/// bucket: the name's hash mixed with its length. Names the kernel makes up without a
/// hash (pipes, sockets, anonymous inodes, each file system's root `/`) differ by length.
#[must_use]
pub const fn dentry_name_id(hash: u32, len: u32) -> u32 {
    hash ^ len.wrapping_mul(0x9e37_79b9)
}

/// What can change the path a dentry is shown by, or the rules that judge it, read
/// before a judgement: an [`OpenCache`] entry is used only while all of it still holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenStamp {
    /// [`word::SLOT_GENERATION`] of the slot judged with.
    pub generation: u64,
    /// The [`OpenCache::dentry_epochs`] bucket of the file's dentry.
    pub dentry_epoch: u64,
    /// The caller's root directory (`struct path`: mount, then dentry), which the path
    /// is shown from.
    pub root_mnt: u64,
    pub root_dentry: u64,
    /// The directory moves counted in [`CpuRecords::renames`] (a move of a directory above
    /// the file changes its path; one of the file itself moves its name's
    /// [`OpenCache::dentry_epochs`] bucket instead), and the kernel's `mount_lock`
    /// sequence count, moved by every mount-tree change.
    pub rename_seq: u32,
    pub mount_seq: u32,
}

/// Element of [`OpenCache::entries`]: what the path scan and the walk by file identity found
/// for one key (the path's hash, length and keyed proof, and the rule for each access),
/// valid while its [`OpenStamp`] matches the one read at the call. Live state
/// (quarantine, revoked credentials, grants) is never cached: it is consulted at every
/// call.
///
/// Held under a sequence count: another CPU may be writing the element (for this key or
/// another sharing it) while a program reads it. A writer takes the element by moving
/// `seq` from even to odd with a compare-and-exchange (so writers exclude each other; one
/// that finds it odd writes nothing), writes the key and the words, and makes `seq` even
/// again. A reader reads `seq`, then each word once, then `seq` again, and uses the words
/// only if both reads gave the same even count and the key is its own. A zeroed element
/// matches no key (no key has a mount of 0).
///
/// The reader's loads stay in program order without a barrier on x86-64, the
/// architecture the programs are built and tested for (loads are not reordered with
/// other loads there, nor stores with other stores).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenCacheEntry {
    pub seq: u64,
    /// See [`OpenCacheKey::words`].
    pub key: [u64; OPEN_CACHE_KEY_WORDS],
    /// See [`OpenFindings::words`].
    pub words: [u64; OPEN_CACHE_WORDS],
}

/// Words of an [`OpenCacheEntry`] after its key.
pub const OPEN_CACHE_WORDS: usize = 9;

/// Words of an [`OpenCacheKey`], kept in its entry.
pub const OPEN_CACHE_KEY_WORDS: usize = 3;

/// An [`OpenCacheEntry`]'s contents, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFindings {
    pub stamp: OpenStamp,
    pub hash: u64,
    pub proof: u64,
    /// (action, rule index) for reading and for writing.
    pub read: (u8, u32),
    pub write: (u8, u32),
    pub len: u16,
}

impl OpenFindings {
    /// The entry's words: generation, dentry epoch, rename and mount sequences, hash,
    /// proof, rules, then actions and length.
    #[must_use]
    pub const fn words(&self) -> [u64; OPEN_CACHE_WORDS] {
        [
            self.stamp.generation,
            self.stamp.dentry_epoch,
            self.stamp.root_mnt,
            self.stamp.root_dentry,
            self.stamp.rename_seq as u64 | (self.stamp.mount_seq as u64) << 32,
            self.hash,
            self.proof,
            self.read.1 as u64 | (self.write.1 as u64) << 32,
            self.read.0 as u64 | (self.write.0 as u64) << 8 | (self.len as u64) << 16,
        ]
    }

    /// The findings `words` hold (what [`Self::words`] made).
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "unpacking what words() packed")]
    pub const fn of(words: &[u64; OPEN_CACHE_WORDS]) -> Self {
        Self {
            stamp: OpenStamp {
                generation: words[0],
                dentry_epoch: words[1],
                root_mnt: words[2],
                root_dentry: words[3],
                rename_seq: words[4] as u32,
                mount_seq: (words[4] >> 32) as u32,
            },
            hash: words[5],
            proof: words[6],
            read: (words[8] as u8, words[7] as u32),
            write: ((words[8] >> 8) as u8, (words[7] >> 32) as u32),
            len: (words[8] >> 16) as u16,
        }
    }
}

impl OpenCacheKey {
    /// The [`OpenCache::entries`] element this key's entry lives in: the key's words but
    /// its [`cache_kind`] mixed and multiplied, the product's top bits, with the kind's
    /// bit flipping the lowest. Two keys that share an element take turns in it (the later
    /// entry replaces the earlier, its key with it).
    ///
    /// A file's exec entry is thus its open entry's neighbour, in the same page of memory
    /// but for a pair that straddles a page's end (one in 20 at 104 bytes an entry): an
    /// exec reads it just after the kernel's open of the program read the open entry.
    #[must_use]
    #[inline]
    pub const fn index(&self) -> u32 {
        const BITS: u32 = crate::capacity::OPEN_CACHE.trailing_zeros();
        const KIND: u32 = OpenCacheKey::who(0, 1, 0);
        let mixed = self.mnt
            ^ self.dentry.rotate_left(29)
            ^ (self.name_id as u64 | ((self.who & !KIND) as u64) << 32).rotate_left(47);
        let element = (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - BITS)) as u32;
        element ^ (self.who & KIND) >> KIND.trailing_zeros()
    }

    /// The key as words, in order.
    #[must_use]
    pub const fn words(&self) -> [u64; OPEN_CACHE_KEY_WORDS] {
        [self.mnt, self.dentry, self.name_id as u64 | (self.who as u64) << 32]
    }

    /// `identity` (below 2^30: identity numbers are below [`crate::capacity::IDENTITIES`]),
    /// the [`cache_kind`] of the findings and `slot` (0 or 1) in one word.
    #[must_use]
    pub const fn who(identity: u32, kind: u32, slot: u32) -> u32 {
        identity | (kind & 1) << 30 | slot << 31
    }
}

/// Which rules an [`OpenCache`] entry holds the findings of: an open's file rules or
/// the exec rules (looked up alike for an exec and an executable mapping), for the same
/// file. Part of the key, so neither is ever taken for the other.
pub mod cache_kind {
    pub const OPEN: u32 = 0;
    pub const EXEC: u32 = 1;
}

const _: () = assert!(crate::capacity::IDENTITIES <= 1 << 30);

const _: () = assert!(size_of::<OpenCacheKey>() == 24);
// A map value is at most `KMALLOC_MAX_SIZE` bytes, 4 MiB on x86-64's kernels.
const _: () = assert!(size_of::<OpenCache>() <= 4 << 20);
const _: () = assert!(size_of::<OpenStamp>() == 40);
const _: () = assert!(size_of::<OpenCacheEntry>() == 104);
const _: () = assert!(size_of::<AggKey>() == 64);
const _: () = assert!(size_of::<AggEntry>() == 40);
const _: () = assert!(size_of::<CgroupKey>() == 16);
const _: () = assert!(size_of::<Binding>() == 8);
const _: () = assert!(size_of::<CacheEntry>() == 16);
const _: () = assert!(size_of::<InodeKey>() == 16);
const _: () = assert!(size_of::<IdentityKey>() == 8);
const _: () = assert!(size_of::<IdentityConfig>() == 12);
const _: () = assert!(size_of::<PathKey>() == 16);
const _: () = assert!(size_of::<PathRule>() == 24);
const _: () = assert!(size_of::<InodeRuleKey>() == 24);
const _: () = assert!(size_of::<NetKey>() == 24);
const _: () = assert!(size_of::<NetRule>() == 12);
const _: () = assert!(size_of::<NetEntry>() == 8 + 12 * crate::MAX_NET_RULES_PER_PREFIX);
const _: () = assert!(size_of::<Scratch>() == 8 + 144 + crate::MAX_PATH);
const _: () = assert!(size_of::<OpenStaged>() == 144);
const _: () = assert!(size_of::<Quarantine>() == 8);
const _: () = assert!(size_of::<IdentityLine>() == 40);
// Five words: `seq`, `cgroup_id`, `epoch`, then `identity` and `config` (copied as two
// words at the context switch, see `CpuTask::line`).
const _: () = assert!(core::mem::offset_of!(IdentityLine, identity) == 24);
const _: () = assert!(size_of::<CpuTask>() == 256);
const _: () = assert!(core::mem::offset_of!(CpuRecords, records) == 128);
const _: () = assert!(RECORDED_CPUS.is_power_of_two());
const _: () = assert!(size_of::<RevokedKey>() == 16);
const _: () = assert!(size_of::<GrantKey>() == 16);
const _: () = assert!(size_of::<Grant>() == 24);
const _: () = assert!(size_of::<Revoked>() == 16);
const _: () = assert!(size_of::<NetGrantKey>() == 20);
const _: () = assert!(size_of::<NetGrant>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): plain-old-data, `#[repr(C)]`, no padding left implicit, any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::CgroupKey {}
    unsafe impl aya::Pod for super::Binding {}
    unsafe impl aya::Pod for super::IdentityKey {}
    unsafe impl aya::Pod for super::IdentityConfig {}
    unsafe impl aya::Pod for super::PathKey {}
    unsafe impl aya::Pod for super::PathRule {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::NetEntry {}
    unsafe impl aya::Pod for super::Quarantine {}
    unsafe impl aya::Pod for super::RevokedKey {}
    unsafe impl aya::Pod for super::GrantKey {}
    unsafe impl aya::Pod for super::Grant {}
    unsafe impl aya::Pod for super::Revoked {}
    unsafe impl aya::Pod for super::NetGrantKey {}
    unsafe impl aya::Pod for super::NetGrant {}
    unsafe impl aya::Pod for super::CacheEntry {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::InodeRuleKey {}
    unsafe impl aya::Pod for super::AggKey {}
    unsafe impl aya::Pod for super::AggEntry {}
    unsafe impl aya::Pod for crate::rule_filter::RuleFilter {}
    unsafe impl aya::Pod for super::CpuRecords {}
}

#[cfg(test)]
mod open_cache_tests {
    use super::*;

    #[test]
    fn findings_round_trip_through_their_words() {
        let findings = OpenFindings {
            stamp: OpenStamp {
                generation: 7,
                dentry_epoch: u64::MAX - 1,
                root_mnt: 0xffff_8880_0000_1000,
                root_dentry: 0xffff_8880_0000_2000,
                rename_seq: 0xfffe,
                mount_seq: u32::MAX,
            },
            hash: 0x0123_4567_89ab_cdef,
            proof: 42,
            read: (crate::verdict::action::DENY, 3),
            write: (crate::verdict::action::ALLOW, u32::MAX),
            len: 4095,
        };
        assert_eq!(OpenFindings::of(&findings.words()), findings);
    }

    /// Dentries come from one slab, 192 bytes apart: the files of a directory, opened by
    /// one identity, must spread over the elements rather than share a few.
    #[test]
    fn neighbouring_dentries_spread_over_the_elements() {
        let mut used = [0u64; crate::capacity::OPEN_CACHE as usize / 64];
        for i in 0..4096u64 {
            let key = OpenCacheKey {
                mnt: 0xffff_8880_0412_3400,
                dentry: 0xffff_8880_1234_0000 + i * 192,
                name_id: dentry_name_id(0x1234_5678 ^ u32::try_from(i).unwrap(), 8),
                who: OpenCacheKey::who(3, cache_kind::OPEN, 1),
            };
            let index = key.index() as usize;
            assert!(index < crate::capacity::OPEN_CACHE as usize);
            used[index / 64] |= 1 << (index % 64);
        }
        // 4,096 keys thrown at 16,384 elements at random fill about 3,600.
        let filled: u32 = used.iter().map(|bits| bits.count_ones()).sum();
        assert!(filled > 3400, "{filled} elements");
        // The same file for another identity, or for the exec rules, is another element: for the
        // exec rules, the neighbouring one.
        let key = OpenCacheKey {
            mnt: 1 << 40,
            dentry: 1 << 41,
            name_id: 5,
            who: OpenCacheKey::who(3, cache_kind::OPEN, 0),
        };
        let exec = OpenCacheKey { who: OpenCacheKey::who(3, cache_kind::EXEC, 0), ..key };
        let other = OpenCacheKey { who: OpenCacheKey::who(4, cache_kind::OPEN, 0), ..key };
        assert_eq!(key.index() ^ exec.index(), 1, "the exec entry is the open entry's neighbour");
        assert_ne!(key.index(), other.index());
        assert_ne!(key.index() ^ 1, other.index());
    }
}

#[cfg(test)]
mod renames_tests {
    use super::renames::{DIRECTORY, done, settled, started};

    fn apply(word: u64, delta: u64) -> u64 {
        word.wrapping_add(delta)
    }

    #[test]
    fn nothing_is_settled_while_a_move_is_under_way() {
        let mut word = 0;
        assert_eq!(settled(word), Some(0));
        // A file's move: under way, then settled with no directory counted.
        word = apply(word, started(false));
        assert_eq!(settled(word), None);
        word = apply(word, done(false, true));
        assert_eq!(settled(word), Some(0));
        // Two overlapping moves, one of a directory: settled only after both, with the
        // directory counted at its start and again at its end.
        word = apply(word, started(true));
        word = apply(word, started(false));
        assert_eq!(settled(word), None);
        word = apply(word, done(true, true));
        assert_eq!(settled(word), None, "the file's move is still under way");
        word = apply(word, done(false, true));
        assert_eq!(settled(word), Some(2));
    }

    #[test]
    fn an_end_without_its_start_takes_nothing_off_and_a_lost_end_keeps_the_cache_off() {
        // A move under way as the programs were attached: only its end is seen.
        let word = apply(0, done(true, false));
        assert_eq!(settled(word), Some(1), "the directory move still counts");
        let word = apply(word, done(false, false));
        assert_eq!(settled(word), Some(1));
        // A start whose end is never seen.
        let word = apply(word, started(false));
        assert_eq!(settled(word), None);
    }

    #[test]
    fn the_directory_count_wraps_within_its_half() {
        let word = u64::from(u32::MAX) * DIRECTORY;
        let word = apply(word, started(true));
        let word = apply(word, done(true, true));
        assert_eq!(settled(word), Some(1));
    }
}

#[cfg(test)]
mod stamp_tests {
    use super::*;

    #[test]
    fn a_stamp_is_published_and_names_its_slot_and_epoch() {
        let stamps = [stamp(0, 0), stamp(0, 1), stamp(1, 0), stamp(1, 1), stamp(7, 1)];
        for (i, a) in stamps.iter().enumerate() {
            assert_ne!(a & STAMP_PUBLISHED, 0, "published");
            // Neither a record of zeros nor an empty copy (epoch word of all ones).
            assert_ne!(*a, 0);
            assert_ne!(*a, u64::MAX);
            for b in &stamps[i + 1..] {
                assert_ne!(a, b, "distinct slots and epochs give distinct stamps");
            }
        }
        // The copy at the context switch reads the slot and epoch back from the stamp.
        let s = stamp(41, 1);
        assert_eq!((s & !STAMP_PUBLISHED) >> 1, 41);
        assert_eq!(s & 1, 1);
    }
}
