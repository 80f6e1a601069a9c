//! Every map of the kernel programs. Names and layouts come from `enforcer_common::maps`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    SLOTS, aggregate, capacity,
    event::EventBuf,
    maps::{
        AggEntry, AggKey, Binding, CacheEntry, CgroupKey, Grant, GrantKey, IdentityConfig, IdentityKey,
        IdentityLine, InodeKey, InodeRuleKey, NetEntry, NetGrant, NetGrantKey, NetKey, PathKey, PathRule,
        Quarantine, Revoked, RevokedKey, Scratch, word,
    },
    rule_filter::{RuleFilter, which},
    verdict::stat,
};

/// The words nearly every hook reads, in one map value (`enforcer_common::maps::WORDS`;
/// indices in `word`): the slot in force and each slot's generation, the binding epoch,
/// and the "any entry" flags of the quarantine, revoked and set-up
/// tables.
#[map(name = "WORDS")]
pub static WORDS: Array<u64> = Array::with_max_entries(word::COUNT, 0);

/// Element `index` of [`WORDS`] (`None` only were the map unreadable).
#[inline(always)]
pub fn word_value(index: u32) -> Option<u64> {
    WORDS.get(index).copied()
}

/// Element `index` of [`WORDS`] read as the `u32` its low half holds (little-endian): a
/// flag, or the slot in force (`None` only were the map unreadable).
#[inline(always)]
pub fn word_low(index: u32) -> Option<u32> {
    // SAFETY: a map value of eight bytes, read once.
    WORDS.get_ptr(index).map(|at| unsafe { *at.cast::<u32>() })
}

/// The slot whose policy set is in force (0 or 1; the agent writes nothing else).
#[inline(always)]
pub fn active_slot() -> Option<u32> {
    word_low(word::ACTIVE)
}

/// The generation of the set in `slot` (0 or 1).
#[inline(always)]
pub fn slot_generation(slot: u32) -> Option<u64> {
    word_value(word::SLOT_GENERATION + slot)
}

/// Cgroups selected by an identity, directly or as the root of a subtree.
#[map(name = "CGROUP_BINDINGS")]
pub static CGROUP_BINDINGS: HashMap<CgroupKey, Binding> =
    HashMap::with_max_entries(capacity::CGROUP_BINDINGS, 0);

/// Identity resolved for a cgroup (0 = none), so repeat callers cost one lookup.
/// An eviction only costs a new ancestor walk; an entry older than the binding epoch is
/// walked again.
#[map(name = "CGROUP_CACHE")]
pub static CGROUP_CACHE: LruHashMap<CgroupKey, CacheEntry> =
    LruHashMap::with_max_entries(capacity::CGROUP_CACHE, 0);

/// Each CPU's identity lines, in front of [`CGROUP_CACHE`]: a hit costs no hash lookup
/// and carries the identity's configuration too (see `lines`).
#[map(name = "IDENTITY_LINES")]
pub static IDENTITY_LINES: PerCpuArray<IdentityLine> =
    PerCpuArray::with_max_entries(capacity::IDENTITY_LINES, 0);

/// The enforcer's own files and directories; managed tasks may not write, remove or
/// rename them (or entries of protected directories).
#[map(name = "PROTECTED_INODES")]
pub static PROTECTED_INODES: HashMap<InodeKey, u32> =
    HashMap::with_max_entries(capacity::PROTECTED_INODES, 0);

/// Path-judging LSM programs reading each slot (per CPU; a BPF program cannot migrate).
/// The agent waits for a slot's total to reach zero before rewriting it.
#[map(name = "READERS")]
pub static READERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Process ids of the agent: managed tasks may not signal or trace them.
#[map(name = "PROTECTED_PIDS")]
pub static PROTECTED_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(capacity::PROTECTED_PIDS, 0);

/// Mode and per-resource defaults of each identity.
#[map(name = "IDENTITIES")]
pub static IDENTITIES: HashMap<IdentityKey, IdentityConfig> =
    HashMap::with_max_entries(capacity::IDENTITIES, 0);

/// Exec and file rules, keyed by the hash and length of a path or directory. Entries are
/// allocated as the agent adds them.
#[map(name = "PATH_RULES")]
pub static PATH_RULES: HashMap<PathKey, PathRule> =
    HashMap::with_max_entries(capacity::PATH_RULES, BPF_F_NO_PREALLOC);

/// Exec and file rules by the identity of the files and directories they name; allocated
/// as added, like [`PATH_RULES`].
#[map(name = "INODE_RULES")]
pub static INODE_RULES: HashMap<InodeRuleKey, PathRule> =
    HashMap::with_max_entries(capacity::INODE_RULES, BPF_F_NO_PREALLOC);

/// `listen` rules of each identity (the ports it may bind), by (identity, slot).
#[map(name = "LISTEN_RULES")]
pub static LISTEN_RULES: HashMap<IdentityKey, NetEntry> =
    HashMap::with_max_entries(capacity::LISTEN_RULES, 0);

/// Network rules, keyed by (slot, identity, destination prefix).
#[map(name = "NET_RULES")]
pub static NET_RULES: LpmTrie<NetKey, NetEntry> = LpmTrie::with_max_entries(capacity::NET_PREFIXES, 0);

/// Verdict events for the agent. A full buffer drops the event, never the decision.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// Per-CPU verdict under construction; only its used bytes go to [`EVENTS`]. No buffer
/// means no event: counted as dropped, the verdict stands.
#[map(name = "EVENT_BUF")]
pub static EVENT_BUF: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's verdict on its way from a hook to `emit::enforcer_report`.
#[map(name = "REPORT_BUF")]
pub static REPORT_BUF: PerCpuArray<crate::emit::Report> = PerCpuArray::with_max_entries(1, 0);

/// Repeats of identical verdicts, counted instead of reported (`enforcer_common::aggregate`).
/// An entry that cannot be created leaves its verdict reported on its own.
#[map(name = "VERDICT_AGG")]
pub static VERDICT_AGG: LruHashMap<AggKey, AggEntry> = LruHashMap::with_max_entries(aggregate::ENTRIES, 0);

/// Counters the kernel keeps about itself (indexes in `enforcer_common::verdict::stat`).
#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Per-CPU path buffer: a 4 KiB path does not fit on the 512-byte BPF stack.
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Processes of a container runtime a policy names, from its exec until they execute a
/// program (see `enforcer_common::maps::RUNTIME_TASKS`). A full map leaves a runtime's
/// child unmarked: its mounts are then refused (fail-closed).
#[map(name = "RUNTIME_TASKS")]
pub static RUNTIME_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(capacity::RUNTIME_TASKS, 0);

/// Container init processes finishing their set-up (see `enforcer_common::maps::SETUP_TASKS`).
#[map(name = "SETUP_TASKS")]
pub static SETUP_TASKS: HashMap<u32, u64> = HashMap::with_max_entries(capacity::SETUP_TASKS, 0);

/// Quarantined identities and what their quarantine restricts. Checked before the
/// policy, on every call, so a quarantine takes effect on the identity's next syscall.
#[map(name = "QUARANTINE")]
pub static QUARANTINE: HashMap<u32, Quarantine> = HashMap::with_max_entries(capacity::QUARANTINE, 0);

/// Per slot, the filters of [`PATH_RULES`] and [`INODE_RULES`] keys (see
/// `enforcer_common::rule_filter`): 32 KiB each, 128 KiB in all.
#[map(name = "RULE_FILTERS")]
pub static RULE_FILTERS: Array<RuleFilter> = Array::with_max_entries(SLOTS * which::COUNT, 0);

/// Revoked credential files: opening one is denied to every identity, whatever its policy.
#[map(name = "REVOKED")]
pub static REVOKED: HashMap<RevokedKey, Revoked> = HashMap::with_max_entries(capacity::REVOKED, 0);

/// Time-bound exec and file grants. The expiry is compared with the kernel clock on each
/// call, so a grant stops working at its instant with or without the agent.
#[map(name = "GRANTS")]
pub static GRANTS: HashMap<GrantKey, Grant> = HashMap::with_max_entries(capacity::GRANTS, 0);

/// Time-bound network grants by (identity, destination prefix).
#[map(name = "NET_GRANTS")]
pub static NET_GRANTS: LpmTrie<NetGrantKey, NetGrant> = LpmTrie::with_max_entries(capacity::NET_GRANTS, 0);

/// Adds one to a counter. A counter that cannot be found is not worth failing a syscall.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}
