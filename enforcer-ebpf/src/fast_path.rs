//! The unmanaged caller's whole decision, from its CPU's record alone
//! (`enforcer_common::maps::CpuRecords`): a caller whose record shows no identity under
//! the slot and binding epoch in force is allowed after eight loads and one branch. The
//! same reading ([`read`]) gives a managed caller's identity and configuration to the
//! open cache's branch-free lookup (`lsm::quick`).
//!
//! Under emulation, where the LSM figures are measured, an exec's hook pays for every
//! branch it takes (each ends a block of translated code, looked up again after the
//! exec's switches of address space) and every page of memory it first touches: the
//! checks are folded into one word with `|` and `^`, and the words read share one page.

use core::mem::offset_of;

use enforcer_common::maps::{CpuRecords, CpuTask, IdentityLine, STAMP_PUBLISHED, TASK_STACK_SPAN};

use crate::cpu_tasks;

/// Whether the caller is allowed as unmanaged from its CPU's record, `earlier` being the
/// verdict of the LSMs before this one (which this path only ever passes on as 0). False
/// means nothing: the hook's own path decides, as it would have without this one.
///
/// True only if all of these hold, each as a term of one word that must be 0:
/// - the record, with its copy of an identity line, was not being written while read
///   (`seq` even and unchanged);
/// - no task changed cgroup since the record was written (`moves`);
/// - the copy was made under the published slot and binding epoch, and the stamp is
///   published (a record of zeros matches no published stamp);
/// - the copy (of the recorded cgroup's line, or empty) names no identity;
/// - this program's stack frame is on the recorded task's stack (in the low 32 bits: a
///   stack 4 GiB away from the recorded one would pass, but the record is the running
///   task's anyway unless a context switch went unrecorded, and the frame check is the
///   second line of that defence);
/// - no earlier LSM refused.
///
/// It reads no read-only global either (each such read is a load from one more page):
/// where the records are not in use, no stamp is published (`cpu_tasks::set_stamp`).
#[inline(always)]
pub fn unmanaged(earlier: impl FnOnce() -> i32) -> bool {
    let line = read::<false>(earlier);
    // The allow's exit lies a few instructions on, on the code page already being run.
    core::intrinsics::likely((line.bad | u64::from(line.identity)) == 0)
}

/// What this CPU's record says of the caller: `bad` is 0 only if every term
/// [`unmanaged`] lists but the identity holds, and then `identity` (0 = none) and its
/// configuration's two words are those of the caller under `stamp`, the slot and binding
/// epoch in force.
pub struct Line {
    /// This CPU's record, read once per hook (`cpu_tasks::this_cpu`).
    pub record: *mut CpuTask,
    pub bad: u64,
    pub identity: u32,
    /// The line's configuration as it lies in memory: the mode and the exec, file and
    /// network defaults in bytes 4 to 7 of `low` (after the identity), the listen
    /// default and the flags in `high` (flags in its upper half).
    pub low: u64,
    pub high: u64,
    pub stamp: u64,
}

impl Line {
    /// The exec default of the configuration.
    #[inline(always)]
    pub fn exec_default(&self) -> u64 {
        (self.low >> 40) & 0xff
    }

    /// The file default of the configuration.
    #[inline(always)]
    pub fn file_default(&self) -> u64 {
        (self.low >> 48) & 0xff
    }

    /// The configuration's `IDENTITY_*` flags.
    #[inline(always)]
    pub fn flags(&self) -> u64 {
        self.high >> 32
    }
}

const _: () = {
    use enforcer_common::maps::{IdentityConfig, IdentityLine};
    assert!(core::mem::offset_of!(IdentityLine, identity) == 24);
    assert!(core::mem::offset_of!(IdentityLine, config) == 28);
    assert!(core::mem::offset_of!(IdentityConfig, exec_default) == 1);
    assert!(core::mem::offset_of!(IdentityConfig, file_default) == 2);
    assert!(core::mem::offset_of!(IdentityConfig, flags) == 8);
    assert!(core::mem::size_of::<IdentityLine>() == 40);
};

/// This CPU's record and its line, read and checked without a branch (see [`unmanaged`]);
/// the configuration's second word (`high`) only if `HIGH` (else 0). `earlier` is called
/// after this CPU's number is read: a value read before that helper call would have to be
/// kept across it, in a register the program then saves and restores at every call.
///
/// The record and its copy of a line are written in one window of the record's `seq`
/// (`cpu_tasks::sched_switch`), so that one `seq` covers both. The copy is of the
/// recorded cgroup's line or empty, and an empty copy's stamp word (all ones) matches no
/// stamp: the copy's own `seq` and cgroup id are not read here.
#[inline(always)]
pub fn read<const HIGH: bool>(earlier: impl FnOnce() -> i32) -> Line {
    let record = cpu_tasks::this_cpu();
    #[expect(clippy::cast_sign_loss, reason = "only zero or not matters")]
    let earlier = u64::from(earlier() as u32);
    let (bad, low, high, stamp): (u64, u64, u64, u64);
    // The reads in the order the `seq` words need, and the terms folded as they come, in
    // six registers: a value the compiler kept across the folding would sit in a register
    // the program saves and restores at each call. The globals' words are read inside
    // the window; either order is as sound (a move or a publication after the record was
    // written changes the word read).
    macro_rules! checked_read {
        ($($high:literal, $at:expr)?) => {
            // SAFETY: loads from this CPU's record and the records' global words, at
            // offsets inside them, and register arithmetic. Named registers: the `w`
            // names of operands need a target feature the compiler does not see in the
            // default CPU, although it has it.
            unsafe {
                core::arch::asm!(
                    "r0 = *(u64 *)(r1 + {seq})",
                    "r4 = *(u64 *)(r1 + {stack})",
                    // The frame's offset above the recorded stack, outside the span? The
                    // verifier lets a privileged program copy the low half of its frame
                    // pointer as a number (a whole pointer only compares).
                    "w5 = w10",
                    "w5 -= w4",
                    "r5 &= {outside}",
                    "r3 |= r5",
                    "r4 = *(u64 *)(r1 + {moves})",
                    "r5 = *(u64 *)(r2 + {moves_now})",
                    "r4 ^= r5",
                    "r3 |= r4",
                    "r4 = *(u64 *)(r1 + {epoch})",
                    "r5 = *(u64 *)(r2 + {stamp_now})",
                    "r4 ^= r5",
                    "r3 |= r4",
                    // Not published: the stamp's top bit clear.
                    "r4 = r5",
                    "r4 ^= -1",
                    "r4 >>= 63",
                    "r3 |= r4",
                    "r4 = *(u64 *)(r1 + {low})",
                    $($high,)?
                    "r1 = *(u64 *)(r1 + {seq})",
                    "r1 ^= r0",
                    "r0 &= 1",
                    "r0 |= r1",
                    "r0 |= r3",
                    seq = const offset_of!(CpuTask, seq),
                    stack = const offset_of!(CpuTask, stack),
                    moves = const offset_of!(CpuTask, moves),
                    epoch = const offset_of!(CpuTask, line) + offset_of!(IdentityLine, epoch),
                    low = const offset_of!(CpuTask, line) + offset_of!(IdentityLine, identity),
                    $(high = const $at,)?
                    moves_now = const offset_of!(CpuRecords, moves),
                    stamp_now = const offset_of!(CpuRecords, stamp),
                    outside = const OUTSIDE,
                    out("r0") bad,
                    inout("r1") record => _,
                    inout("r2") cpu_tasks::globals() => high,
                    inout("r3") earlier => _,
                    out("r4") low,
                    out("r5") stamp,
                    options(readonly, nostack),
                );
            }
        };
    }
    if HIGH {
        checked_read!(
            "r2 = *(u64 *)(r1 + {high})",
            offset_of!(CpuTask, line) + offset_of!(IdentityLine, identity) + 8
        );
    } else {
        checked_read!();
    }
    let high = if HIGH { high } else { 0 };
    #[expect(clippy::cast_possible_truncation, reason = "the identity is the low half")]
    let identity = low as u32;
    Line { record, bad, identity, low, high, stamp }
}

/// The mask whose bits, set in a frame's offset above the recorded stack, put the frame
/// outside that stack: as an immediate, sign-extended from 32 bits (the offset is 32
/// bits, zero-extended, so the upper half does not matter).
#[expect(clippy::cast_possible_truncation, clippy::cast_possible_wrap, reason = "the span is 16 KiB")]
const OUTSIDE: i32 = !(TASK_STACK_SPAN as u32 - 1) as i32;

const _: () = assert!(STAMP_PUBLISHED == 1 << 63, "the published bit is read as the top bit");

/// 1 if `value` is 0, else 0, without a branch: the top bit of `!value & (value - 1)`,
/// written out, as the compiler turns that form back into a comparison, which has no
/// form without a branch in BPF.
#[inline(always)]
pub fn zero(value: u64) -> u64 {
    let result: u64;
    // SAFETY: register arithmetic only (named registers, as in `read`).
    unsafe {
        core::arch::asm!(
            "r0 = r1",
            "r0 ^= -1",
            "r1 -= 1",
            "r0 &= r1",
            "r0 >>= 63",
            out("r0") result,
            inout("r1") value => _,
            options(pure, nomem, nostack),
        );
    }
    result
}
