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
/// verdict of the LSMs before this one (see [`Look::unmanaged`]).
#[inline(always)]
pub fn unmanaged(earlier: impl FnOnce() -> i32) -> bool {
    look(earlier).unmanaged()
}

/// What the fast path read of this CPU's record: the record, `bad` (0 only if every
/// term [`Look::unmanaged`] lists but the identity holds), the first word of the copy of
/// the caller's line (its identity in the low half) and the record's `seq` as first read.
/// A managed caller's hook passes them on, as four arguments, to the open cache's lookup
/// (`lsm::quick`), which reads the rest of the line from the record ([`line`]) and the
/// record's `seq` once more last: the window that covers the fast path's reads then
/// covers its own too, and they are not made twice.
#[derive(Clone, Copy)]
pub struct Look {
    pub record: *mut CpuTask,
    pub bad: u64,
    pub low: u64,
    pub seq: u64,
}

impl Look {
    /// Whether the caller is allowed as unmanaged. False means nothing: the hook's own
    /// path decides, as it would have without this one.
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
    pub fn unmanaged(&self) -> bool {
        // The allow's exit lies a few instructions on, on the code page already being run.
        core::intrinsics::likely((self.bad | (self.low & u64::from(u32::MAX))) == 0)
    }
}

/// What this CPU's record says of the caller: `bad` is 0 only if every term
/// [`Look::unmanaged`] lists but the identity holds and the record's `seq` is still
/// `seq` when read last (the reader of the line compares it), and then `identity` (0 =
/// none) and its configuration's two words are those of the caller under `stamp`, the
/// slot and binding epoch in force.
pub struct Line {
    /// This CPU's record, read once per hook (`cpu_tasks::this_cpu`).
    pub record: *mut CpuTask,
    pub bad: u64,
    /// The record's `seq` as the fast path first read it: whoever reads the record's
    /// words after the fast path reads `seq` last, and compares it with this.
    pub seq: u64,
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

/// The line of the caller a [`Look`] found managed (or could not trust): the rest of the
/// copy, its second configuration word and its stamp, read from the record in the same
/// window of `seq`, which the reader of the line closes (`Line::seq`).
#[inline(always)]
pub fn line(record: *mut CpuTask, bad: u64, low: u64, seq: u64) -> Line {
    // SAFETY: words of this CPU's record in our own global, read once each, volatile, so
    // before the reader's last read of `seq`.
    let (high, stamp) = unsafe {
        let at = (&raw const (*record).line).cast::<u8>();
        (
            core::ptr::read_volatile(at.add(offset_of!(IdentityLine, identity) + 8).cast::<u64>()),
            core::ptr::read_volatile(at.add(offset_of!(IdentityLine, epoch)).cast::<u64>()),
        )
    };
    #[expect(clippy::cast_possible_truncation, reason = "the identity is the low half")]
    let identity = low as u32;
    Line { record, bad, seq, identity, low, high, stamp }
}

/// This CPU's record read and checked without a branch (see [`Look::unmanaged`]).
/// `earlier` is called after this CPU's number is read: a value read before that helper
/// call would have to be kept across it, in a register the program then saves and
/// restores at every call.
///
/// The record and its copy of a line are written in one window of the record's `seq`
/// (`cpu_tasks::sched_switch`), so that one `seq` covers both. The copy is of the
/// recorded cgroup's line or empty, and an empty copy's stamp word (all ones) matches no
/// stamp: the copy's own `seq` and cgroup id are not read here.
#[inline(always)]
pub fn look(earlier: impl FnOnce() -> i32) -> Look {
    let record = cpu_tasks::this_cpu();
    #[expect(clippy::cast_sign_loss, reason = "only zero or not matters")]
    let earlier = u64::from(earlier() as u32);
    let (bad, low, seq): (u64, u64, u64);
    let mut record = record;
    // The reads in the order the `seq` words need, and the terms folded as they come, in
    // six registers: a value the compiler kept across the folding would sit in a register
    // the program saves and restores at each call. The globals' words are read inside
    // the window; either order is as sound (a move or a publication after the record was
    // written changes the word read).
    // SAFETY: loads from this CPU's record and the records' global words, at offsets
    // inside them, and register arithmetic. Named registers: the `w` names of operands
    // need a target feature the compiler does not see in the default CPU, although it
    // has it.
    unsafe {
        core::arch::asm!(
            "r5 = *(u64 *)(r2 + {seq})",
            "r4 = *(u64 *)(r2 + {stack})",
            // The frame's offset above the recorded stack, outside the span? The
            // verifier lets a privileged program copy the low half of its frame pointer
            // as a number (a whole pointer only compares).
            "w0 = w10",
            "w0 -= w4",
            "r0 &= {outside}",
            "r3 |= r0",
            "r4 = *(u64 *)(r2 + {moves})",
            "r0 = *(u64 *)(r1 + {moves_now})",
            "r4 ^= r0",
            "r3 |= r4",
            "r4 = *(u64 *)(r2 + {epoch})",
            "r0 = *(u64 *)(r1 + {stamp_now})",
            "r4 ^= r0",
            "r3 |= r4",
            // Not published: the stamp's top bit clear.
            "r0 ^= -1",
            "r0 >>= 63",
            "r3 |= r0",
            "r4 = *(u64 *)(r2 + {low})",
            "r1 = *(u64 *)(r2 + {seq})",
            "r1 ^= r5",
            "r3 |= r1",
            "r0 = r5",
            "r0 &= 1",
            "r3 |= r0",
            seq = const offset_of!(CpuTask, seq),
            stack = const offset_of!(CpuTask, stack),
            moves = const offset_of!(CpuTask, moves),
            epoch = const offset_of!(CpuTask, line) + offset_of!(IdentityLine, epoch),
            low = const offset_of!(CpuTask, line) + offset_of!(IdentityLine, identity),
            moves_now = const offset_of!(CpuRecords, moves),
            stamp_now = const offset_of!(CpuRecords, stamp),
            outside = const OUTSIDE,
            out("r0") _,
            inout("r1") cpu_tasks::globals() => _,
            // Out again, where a managed caller's hook passes it on (with `bad`, `low` and
            // `seq`, in the registers of `lsm::quick`'s arguments): the compiler would
            // otherwise keep its own copy from before, in a register saved and restored
            // at every run.
            inout("r2") record,
            inout("r3") earlier => bad,
            out("r4") low,
            out("r5") seq,
            options(readonly, nostack),
        );
    }
    Look { record, bad, low, seq }
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

/// 1 if the top bit of `pointers` is clear, else 0, without a branch (as in [`zero`]).
/// Every kernel address has its top bit set, and a load of the kernel's memory that
/// faulted reads 0: given kernel pointers `&`-ed together, 1 if any of them is not one.
#[inline(always)]
pub fn any_not_kernel(pointers: u64) -> u64 {
    let result: u64;
    // SAFETY: register arithmetic only (named registers, as in `look`).
    unsafe {
        core::arch::asm!(
            "r0 = r1",
            "r0 ^= -1",
            "r0 >>= 63",
            out("r0") result,
            in("r1") pointers,
            options(pure, nomem, nostack),
        );
    }
    result
}
