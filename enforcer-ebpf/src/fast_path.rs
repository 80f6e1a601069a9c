//! The unmanaged caller's whole decision, from its CPU's record alone
//! (`enforcer_common::maps::CpuRecords`): a caller whose record shows no identity under
//! the slot and binding epoch in force is allowed after a dozen loads and one branch. The
//! same reading ([`read`]) gives a managed caller's identity and configuration to the
//! open cache's branch-free lookup (`lsm::quick`).
//!
//! Under emulation, where the LSM figures are measured, an exec's hook pays for every
//! branch it takes (each ends a block of translated code, looked up again after the
//! exec's switches of address space) and every page of memory it first touches: the
//! checks are folded into one word with `|` and `^`, and the words read share one page.

use core::ptr::read_volatile;

use enforcer_common::maps::{CpuTask, STAMP_PUBLISHED, TASK_STACK_SPAN};

use crate::cpu_tasks;

/// Whether the caller is allowed as unmanaged from its CPU's record, `earlier` being the
/// verdict of the LSMs before this one (which this path only ever passes on as 0). False
/// means nothing: the hook's own path decides, as it would have without this one.
///
/// True only if all of these hold, each as a term of one word that must be 0:
/// - the record and its copy of an identity line were not being written while read
///   (`seq` even and unchanged);
/// - no task changed cgroup since the record was written (`moves`);
/// - the copy was made under the published slot and binding epoch, and the stamp is
///   published (a record of zeros matches no published stamp);
/// - the copy is of the recorded cgroup's line, and names no identity;
/// - this program's stack frame is on the recorded task's stack (in the low 32 bits: a
///   stack 4 GiB away from the recorded one would pass, but the record is the running
///   task's anyway unless a context switch went unrecorded, and the frame check is the
///   second line of that defence);
/// - no earlier LSM refused.
///
/// It reads no read-only global either (each such read is a load from one more page):
/// where the records are not in use, no stamp is published (`cpu_tasks::set_stamp`).
#[inline(always)]
pub fn unmanaged(earlier: i32) -> bool {
    let line = read(earlier);
    // Laid out so that the allow falls through to the program's exit, on the code page
    // already being run.
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

/// This CPU's record and its line, read and checked without a branch (see [`unmanaged`]).
#[inline(always)]
pub fn read(earlier: i32) -> Line {
    let record = cpu_tasks::this_cpu();
    // SAFETY: this CPU's record in our own global; volatile reads keep their order around
    // the `seq` words (a writer that preempts this program runs on this CPU).
    unsafe {
        let seq = read_volatile(&raw const (*record).seq);
        let stack = read_volatile(&raw const (*record).stack);
        let cgroup_id = read_volatile(&raw const (*record).cgroup_id);
        let moves = read_volatile(&raw const (*record).moves);
        let line = &raw const (*record).line;
        let line_seq = read_volatile(&raw const (*line).seq);
        let line_cgroup = read_volatile(&raw const (*line).cgroup_id);
        let line_stamp = read_volatile(&raw const (*line).epoch);
        let words = (&raw const (*line).identity).cast::<u64>();
        let low = read_volatile(words);
        let high = read_volatile(words.add(1));
        let line_seq_after = read_volatile(&raw const (*line).seq);
        let seq_after = read_volatile(&raw const (*record).seq);
        let stamp = cpu_tasks::stamp();
        #[expect(clippy::cast_possible_truncation, reason = "the span is 16 KiB")]
        let outside = cpu_tasks::frame_offset(stack) & !(TASK_STACK_SPAN as u32 - 1);
        #[expect(clippy::cast_sign_loss, reason = "only zero or not matters")]
        let earlier = u64::from(earlier as u32);
        let bad = (seq & 1)
            | (seq ^ seq_after)
            | (line_seq & 1)
            | (line_seq ^ line_seq_after)
            | (moves ^ cpu_tasks::moves())
            | (line_stamp ^ stamp)
            | (!stamp & STAMP_PUBLISHED)
            | (line_cgroup ^ cgroup_id)
            | u64::from(outside)
            | earlier;
        #[expect(clippy::cast_possible_truncation, reason = "the identity is the low half")]
        let identity = low as u32;
        Line { record, bad, identity, low, high, stamp }
    }
}

/// 1 if `value` is 0, else 0, without a branch: the top bit of `!value & (value - 1)`,
/// written out, as the compiler turns that form back into a comparison, which has no
/// form without a branch in BPF.
#[inline(always)]
pub fn zero(value: u64) -> u64 {
    let result: u64;
    // SAFETY: register arithmetic only (named registers, as in `cpu_tasks::frame_offset`).
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
