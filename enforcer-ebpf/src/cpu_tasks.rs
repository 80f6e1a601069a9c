//! Which task each CPU runs, recorded at every context switch (`enforcer_common::maps::CpuTask`),
//! so a hook finds its caller's cgroup with loads from this CPU's entry instead of a
//! function call. The entry is a hint a hook checks against its own stack; any doubt
//! sends the hook to `identity::current_rcu`'s slower path. The entry also carries a copy
//! of the task's identity line (`lines::copy_for`).

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use enforcer_common::maps::{CpuTask, TASK_STACK_SPAN, word};

use crate::{
    maps::{CPU_TASKS, WORDS, word_value},
    offsets::{OFF_CGROUP_KN, OFF_CSS_SET_DFL_CGRP, OFF_KERNFS_ID, OFF_TASK_CGROUPS, OFF_TASK_STACK, load},
};

/// `sched:sched_switch(preempt, prev, next, prev_state)`: records `next` as the task this
/// CPU runs. Runs with interrupts off, so no hook on this CPU runs inside the write.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let next: *const u8 = ctx.arg(2);
    // Read before the task: a move after this read leaves the entry stale-stamped.
    let moves = word_value(word::TASK_MOVES).unwrap_or(0);
    // SAFETY: BTF-typed loads from the tracepoint's task argument (see `offsets::load`).
    let (stack, cgroup_id) = unsafe {
        let stack: u64 = load(next, &OFF_TASK_STACK);
        let set: *const u8 = load(next, &OFF_TASK_CGROUPS);
        let cgroup: *const u8 = load(set, &OFF_CSS_SET_DFL_CGRP);
        let kn: *const u8 = load(cgroup, &OFF_CGROUP_KN);
        (stack, load::<u64>(kn, &OFF_KERNFS_ID))
    };
    // Observing only: index 0 always exists; were it missing, hooks would find no record
    // and take the slower path (neither open nor closed).
    let Some(entry) = CPU_TASKS.get_ptr_mut(0) else {
        return 0;
    };
    let known;
    // SAFETY: this CPU's map value; no other writer runs on this CPU meanwhile.
    unsafe {
        let seq = read_volatile(&raw const (*entry).seq) | 1;
        write_volatile(&raw mut (*entry).seq, seq);
        // A load that faulted read 0 (no task has either): recorded as nothing, so hooks
        // on this CPU take the slower path until the next switch.
        known = stack != 0 && cgroup_id != 0;
        write_volatile(&raw mut (*entry).stack, if known { stack } else { 0 });
        write_volatile(&raw mut (*entry).cgroup_id, cgroup_id);
        write_volatile(&raw mut (*entry).moves, moves);
        write_volatile(&raw mut (*entry).seq, seq.wrapping_add(1));
    }
    // The task's identity line, where this CPU has one, so its hooks need not look it
    // up (a task recorded as nothing gets an empty copy).
    crate::lines::copy_for(entry, if known { cgroup_id } else { 0 });
    0
}

/// `cgroup:cgroup_attach_task(dst_cgrp, path, task, threadgroup)`: a task (or a whole
/// process) changed cgroup, possibly while running on another CPU: every CPU's entry
/// written before now stops being trusted.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(_ctx: BtfTracePointContext) -> i32 {
    // Index 0 of an array always exists, so the bump cannot be skipped; were it skipped,
    // records would outlive a move (fail-open), which is why hooks also require the same
    // task moves value they can read: a map they cannot read sends them the slow way.
    if let Some(moves) = WORDS.get_ptr_mut(word::TASK_MOVES) {
        // SAFETY: a map value, updated atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(moves, 1) };
    }
    0
}

/// This CPU's entry, for [`current_cgroup`] and the copy of an identity line it holds.
/// Every `None` is neither open nor closed: the caller then reads the cgroup from the
/// task itself and its line from `IDENTITY_LINES`.
#[inline(always)]
pub fn record() -> Option<*mut CpuTask> {
    // With kernel diagnostics on, the programs carry their logging code, and `file_open`
    // verified with both ways of finding the caller exceeds the verifier's million
    // instructions: diagnostics take the task's way only (the verifier sees the constant
    // and drops this one).
    if crate::diag::enabled(crate::diag::ERROR) {
        return None;
    }
    CPU_TASKS.get_ptr_mut(0)
}

/// The running task's cgroup id from this CPU's entry (`record`), if the entry is
/// provably the running task's and no task changed cgroup since it was written.
#[inline(always)]
pub fn current_cgroup(entry: *const CpuTask) -> Option<u64> {
    // Every `None` here is neither open nor closed: the caller then reads the cgroup from
    // the task itself.
    // SAFETY: this CPU's map value; volatile reads keep their order around `seq`.
    let (stack, cgroup_id) = unsafe {
        let seq = read_volatile(&raw const (*entry).seq);
        let stack = read_volatile(&raw const (*entry).stack);
        let cgroup_id = read_volatile(&raw const (*entry).cgroup_id);
        let moves = read_volatile(&raw const (*entry).moves);
        if seq & 1 != 0 || read_volatile(&raw const (*entry).seq) != seq || stack == 0 {
            return None;
        }
        if moves != word_value(word::TASK_MOVES)? {
            return None;
        }
        (stack, cgroup_id)
    };
    // This program's stack frame is on the running task's kernel stack: inside the
    // recorded task's stack only if the entry is the running task's. Compared as a
    // pointer (the verifier lets a privileged program compare, not convert, one).
    let marker = 0u8;
    let frame = core::hint::black_box(&raw const marker);
    if frame < stack as *const u8 || frame >= stack.wrapping_add(TASK_STACK_SPAN) as *const u8 {
        return None;
    }
    Some(cgroup_id)
}
