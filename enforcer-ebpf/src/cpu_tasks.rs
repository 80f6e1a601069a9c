//! Which task each CPU runs, recorded at every context switch in the programs' own global
//! state (`enforcer_common::maps::CpuRecords`), so a hook finds its caller's cgroup with
//! loads from its CPU's record instead of a function call. A record is a hint a hook
//! checks against its own stack; any doubt sends the hook to `identity::current_rcu`'s
//! slower path. The record also carries a copy of the task's identity line
//! (`lines::copy_for`), from which `fast_path` allows an unmanaged caller outright.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{helpers::bpf_get_smp_processor_id, macros::btf_tracepoint, programs::BtfTracePointContext};
use enforcer_common::maps::{CpuRecords, CpuTask, RECORDED_CPUS, TASK_STACK_SPAN, word};

use crate::offsets::{
    OFF_CGROUP_KN, OFF_CSS_SET_DFL_CGRP, OFF_KERNFS_ID, OFF_TASK_CGROUPS, OFF_TASK_STACK, load,
};

/// The records and the words they are checked against. A global, not a map the programs
/// look up: its address is a constant of the program (no lookup, no branch), and its first
/// page holds both words and the first CPUs' records.
static mut RECORDS: CpuRecords = {
    // SAFETY: integers and arrays of integers, for which all zeros is a valid value.
    unsafe { core::mem::zeroed() }
};

/// Non-zero if every possible CPU has a record (set by the agent at load; a read-only
/// global, so the verifier sees the constant and drops the code it turns off).
#[unsafe(no_mangle)]
static CPU_RECORDS: u8 = 0;

/// Whether the records are in use: with more possible CPUs than records, two CPUs would
/// share one, and none is used (nor is a stamp published, see [`set_stamp`]).
#[inline(always)]
fn in_use() -> bool {
    // SAFETY: a read of our own read-only global, kept volatile so the verifier (which
    // knows its value) decides, not the compiler.
    unsafe { read_volatile(&raw const CPU_RECORDS) != 0 }
}

/// This CPU's record, whether or not records are in use.
#[inline(always)]
pub fn this_cpu() -> *mut CpuTask {
    // SAFETY: helper without arguments (inlined by the verifier on recent kernels).
    let cpu = unsafe { bpf_get_smp_processor_id() } as usize & (RECORDED_CPUS - 1);
    // SAFETY: an element of our own global, addressed, not read.
    unsafe { &raw mut RECORDS.records[cpu] }
}

/// The records' global, for the fast path's reads of its words at their offsets.
#[inline(always)]
pub fn globals() -> *const CpuRecords {
    &raw const RECORDS
}

/// The task moves word now (see `CpuRecords::moves`).
#[inline(always)]
pub fn moves() -> u64 {
    // SAFETY: a word of our own global, read once.
    unsafe { read_volatile(&raw const RECORDS.moves) }
}

/// The slot and binding epoch last published (see `CpuRecords::stamp`; 0 = never).
#[inline(always)]
pub fn stamp() -> u64 {
    // SAFETY: a word of our own global, read once.
    unsafe { read_volatile(&raw const RECORDS.stamp) }
}

/// The dentry moves word now (see `CpuRecords::renames`).
#[inline(always)]
pub fn renames() -> u64 {
    // SAFETY: a word of our own global, read once.
    unsafe { read_volatile(&raw const RECORDS.renames) }
}

/// Adds `delta` to the dentry moves word (`renames` only), atomically: moves run on
/// several CPUs at once.
#[inline(always)]
pub fn add_renames(delta: u64) {
    // SAFETY: a word of our own global, only ever added to atomically.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut RECORDS.renames, delta) };
}

/// Word `index` of the copy of `WORDS` (`CpuRecords::words`; `index` is masked into it).
#[inline(always)]
pub fn word(index: u32) -> u64 {
    // SAFETY: a word of our own global, read once.
    unsafe { read_volatile(&raw const RECORDS.words[index as usize % word::COUNT as usize]) }
}

/// Writes word `index` of the copy of `WORDS` (`publish` only; an index out of range
/// writes nothing).
#[inline(always)]
pub fn set_word(index: u32, value: u64) {
    if index < word::COUNT {
        // SAFETY: a word of our own global; only `publish` writes it.
        unsafe { write_volatile(&raw mut RECORDS.words[index as usize], value) };
    }
}

/// Writes the stamp (`publish` only), or leaves it unpublished where records are not in
/// use: then no record is ever trusted by [`fast_path`](crate::fast_path), which reads
/// no other sign of it.
#[inline(always)]
pub fn set_stamp(stamp: u64) {
    let stamp = if in_use() { stamp } else { 0 };
    // SAFETY: a word of our own global; only `publish` writes it, and the agent runs it
    // from one thread at a time.
    unsafe { write_volatile(&raw mut RECORDS.stamp, stamp) };
}

/// `sched:sched_switch(preempt, prev, next, prev_state)`: records `next` as the task this
/// CPU runs. Runs with interrupts off, so no hook on this CPU runs inside the write.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // Observing only: with records not in use, hooks never read them.
    if !in_use() {
        return 0;
    }
    let next: *const u8 = ctx.arg(2);
    // Read before the task: a move after this read leaves the record stale-stamped.
    let moves = moves();
    // SAFETY: BTF-typed loads from the tracepoint's task argument (see `offsets::load`).
    let (stack, cgroup_id) = unsafe {
        let stack: u64 = load(next, &OFF_TASK_STACK);
        let set: *const u8 = load(next, &OFF_TASK_CGROUPS);
        let cgroup: *const u8 = load(set, &OFF_CSS_SET_DFL_CGRP);
        let kn: *const u8 = load(cgroup, &OFF_CGROUP_KN);
        (stack, load::<u64>(kn, &OFF_KERNFS_ID))
    };
    let entry = this_cpu();
    let known;
    // SAFETY: this CPU's record; no other writer runs on this CPU meanwhile.
    unsafe {
        let seq = read_volatile(&raw const (*entry).seq) | 1;
        write_volatile(&raw mut (*entry).seq, seq);
        // A load that faulted read 0 (no task has either): recorded as nothing, so hooks
        // on this CPU take the slower path until the next switch.
        known = stack != 0 && cgroup_id != 0;
        write_volatile(&raw mut (*entry).stack, if known { stack } else { 0 });
        write_volatile(&raw mut (*entry).cgroup_id, cgroup_id);
        write_volatile(&raw mut (*entry).moves, moves);
        // The task's identity line, where this CPU has one, so its hooks need not look
        // it up (a task recorded as nothing gets an empty copy). Inside the record's
        // window: a hook's fast path reads the record and the copy under the record's
        // `seq` alone (`fast_path::read`).
        crate::lines::copy_for(entry, if known { cgroup_id } else { 0 });
        write_volatile(&raw mut (*entry).seq, seq.wrapping_add(1));
    }
    0
}

/// `cgroup:cgroup_attach_task(dst_cgrp, path, task, threadgroup)`: a task (or a whole
/// process) changed cgroup, possibly while running on another CPU: every CPU's record
/// written before now stops being trusted.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(_ctx: BtfTracePointContext) -> i32 {
    // SAFETY: a word of our own global, updated atomically.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut RECORDS.moves, 1) };
    0
}

/// This CPU's record, for [`current_cgroup`], the copy of an identity line it holds and
/// the open cache's words. Every `None` is neither open nor closed: the caller then reads
/// the cgroup from the task itself and its line from `IDENTITY_LINES`.
#[inline(always)]
pub fn record() -> Option<*mut CpuTask> {
    in_use().then(this_cpu)
}

/// [`record`] for finding the caller: with kernel diagnostics on, the programs carry
/// their logging code, and `file_open` verified with both ways of finding the caller
/// exceeds the verifier's million instructions: diagnostics take the task's way only
/// (the verifier sees the constant and drops this one).
#[inline(always)]
pub fn caller_record() -> Option<*mut CpuTask> {
    if crate::diag::enabled(crate::diag::ERROR) {
        return None;
    }
    record()
}

/// The running task's cgroup id from this CPU's record (`record`), if the record is
/// provably the running task's and no task changed cgroup since it was written.
#[inline(always)]
pub fn current_cgroup(entry: *const CpuTask) -> Option<u64> {
    // Every `None` here is neither open nor closed: the caller then reads the cgroup from
    // the task itself.
    // SAFETY: this CPU's record; volatile reads keep their order around `seq`.
    let (stack, cgroup_id) = unsafe {
        let seq = read_volatile(&raw const (*entry).seq);
        let stack = read_volatile(&raw const (*entry).stack);
        let cgroup_id = read_volatile(&raw const (*entry).cgroup_id);
        let moves = read_volatile(&raw const (*entry).moves);
        if seq & 1 != 0 || read_volatile(&raw const (*entry).seq) != seq || stack == 0 {
            return None;
        }
        if moves != self::moves() {
            return None;
        }
        (stack, cgroup_id)
    };
    // This program's stack frame is on the running task's kernel stack: inside the
    // recorded task's stack only if the record is the running task's. Compared as a
    // pointer (the verifier lets a privileged program compare, not convert, one).
    let marker = 0u8;
    let frame = core::hint::black_box(&raw const marker);
    if frame < stack as *const u8 || frame >= stack.wrapping_add(TASK_STACK_SPAN) as *const u8 {
        return None;
    }
    Some(cgroup_id)
}
