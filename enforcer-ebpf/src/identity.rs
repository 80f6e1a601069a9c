//! Which identity the current task belongs to, from its cgroup (behind `lines`).

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task_btf, bpf_loop,
};
use enforcer_common::{
    MAX_CGROUP_DEPTH,
    maps::{BINDING_SUBTREE, CacheEntry, CgroupKey, CpuTask, word},
};

use crate::{
    diag,
    maps::{CGROUP_BINDINGS, CGROUP_CACHE, word_value},
    offsets::{OFF_CGROUP_KN, OFF_CSS_SET_DFL_CGRP, OFF_KERNFS_ID, OFF_TASK_CGROUPS, offset},
};

/// The current task's cgroup id and the binding epoch, read before any resolution.
#[inline(always)]
pub fn current() -> (u64, u64) {
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    (cgroup_id, epoch())
}

/// The binding epoch: a binding added after this read bumps it, so a resolution that
/// missed it is stamped stale. (0 if unreadable: entries stamped 0 are then trusted only
/// until the agent's first bump, as before any binding change.)
#[inline(always)]
fn epoch() -> u64 {
    word_value(word::BIND_EPOCH).unwrap_or(0)
}

/// [`current`] for programs that run inside an RCU read-side section (every program here:
/// none is sleepable): the cgroup id is read through the task's BTF-typed pointers
/// (`task->cgroups->dfl_cgrp->kn->id`), without the helper's function calls and RCU lock.
/// A sleepable program would have to use [`current`]: outside RCU the task's `css_set`
/// may be freed under the read.
#[inline(always)]
pub fn current_rcu() -> (u64, u64, Option<*mut CpuTask>) {
    // This CPU's record of its running task (`cpu_tasks::caller_record`), when it provably is the
    // running task's: no function call at all. The record comes back with it: it holds a
    // copy of an identity line (see `lines::get`).
    if let Some(record) = crate::cpu_tasks::caller_record()
        && let Some(id) = crate::cpu_tasks::current_cgroup(record)
    {
        return (id, epoch(), Some(record));
    }
    let (id, epoch) = from_task();
    (id, epoch, None)
}

/// [`current_rcu`] without the CPU's task record, for the full judgements of the exec,
/// open and mapping programs (their first look at the caller, `policy::seen`, uses the
/// record): with both ways of finding the caller there too, `file_open` once exceeded the
/// verifier's million instructions on 6.12.
#[inline(always)]
pub fn from_task() -> (u64, u64) {
    of_task(current_task())
}

/// The current task (BTF-typed).
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task_btf() }.cast::<u8>().cast_const()
}

/// [`from_task`] for the current task already found (BTF-typed).
#[inline(always)]
pub fn of_task(task: *const u8) -> (u64, u64) {
    // SAFETY: BTF-typed loads at offsets from the kernel's BTF; the verifier checks each
    // against the member's type, and a faulting load reads 0 instead of trapping.
    let id = unsafe {
        let set = *task.add(offset(&OFF_TASK_CGROUPS)).cast::<*const u8>();
        let cgroup = *set.add(offset(&OFF_CSS_SET_DFL_CGRP)).cast::<*const u8>();
        let kn = *cgroup.add(offset(&OFF_CGROUP_KN)).cast::<*const u8>();
        *kn.add(offset(&OFF_KERNFS_ID)).cast::<u64>()
    };
    // No cgroup id is 0: a load that read 0 is asked of the helper instead.
    if id == 0 {
        return current();
    }
    (id, epoch())
}

/// The identity `cgroup_id` has in `slot` (0 = none), for `hook` (named in diagnostics);
/// `None` if it could not be resolved (treated as unmanaged, and cached nowhere).
///
/// A cgroup seen before costs one cache lookup. Otherwise the ancestors are walked from
/// the root down and the deepest binding wins, so a cgroup created under a bound one is
/// covered from its first syscall, before the agent has seen it.
#[inline(always)]
pub fn resolve(cgroup_id: u64, slot: u32, epoch: u64, hook: u32) -> Option<u32> {
    let key = CgroupKey { cgroup_id, slot, pad: 0 };
    // SAFETY: plain value read once.
    if let Some(entry) = unsafe { CGROUP_CACHE.get(&key) }
        && entry.epoch == epoch
    {
        return Some(entry.identity);
    }
    let mut walk = Walk { cgroup_id, slot, identity: 0 };
    // Under `bpf_loop`: unrolled, this walk made every program verify 32 copies of it.
    // SAFETY: the callback only touches `walk` and calls helpers.
    let done = unsafe { bpf_loop(MAX_CGROUP_DEPTH, ancestor as *mut c_void, (&raw mut walk).cast(), 0) };
    // Fail-open: bpf_loop fails only for bad arguments, which are constants here; an
    // unresolved task is then treated as unmanaged and not cached.
    if done < 0 {
        diag::error!(
            "hook {}: cgroup ancestor walk failed (bpf_loop {}): cgroup {} allowed as unmanaged (fail-open)",
            hook: u32 = hook,
            done: i64 = done,
            cgroup: u64 = cgroup_id,
        );
        return None;
    }
    let identity = walk.identity;
    // Fail-open on cache insert failure: it only means the next call walks again.
    if let Err(e) = CGROUP_CACHE.insert(&key, &CacheEntry { epoch, identity, pad: 0 }, 0) {
        diag::info!(
            "hook {}: CGROUP_CACHE insert failed ({}): the next call walks again",
            hook: u32 = hook,
            error: i32 = e,
        );
    }
    Some(identity)
}

/// State of the ancestor walk, shared with the `bpf_loop` callback.
#[repr(C)]
struct Walk {
    cgroup_id: u64,
    slot: u32,
    /// The deepest binding found so far (0 = none).
    identity: u32,
}

/// One level of the walk from the root down: the deepest binding wins. Returns 1 past
/// the task's own cgroup.
#[inline(never)]
unsafe extern "C" fn ancestor(level: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` passed to bpf_loop.
    let walk = unsafe { &mut *ctx.cast::<Walk>() };
    // SAFETY: helper with a scalar argument; returns 0 past the task's own level.
    #[expect(clippy::cast_possible_truncation, reason = "level < MAX_CGROUP_DEPTH")]
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    if id == 0 {
        return 1;
    }
    let key = CgroupKey { cgroup_id: id, slot: walk.slot, pad: 0 };
    // SAFETY: plain value read once.
    if let Some(binding) = unsafe { CGROUP_BINDINGS.get(&key) }
        && (binding.flags & BINDING_SUBTREE != 0 || id == walk.cgroup_id)
    {
        walk.identity = binding.identity;
    }
    i64::from(id == walk.cgroup_id)
}
