//! `publish`: the one writer of the slot in force and the binding epoch, in both places
//! the programs read them. Never attached: the agent runs it (`BPF_PROG_TEST_RUN`) with
//! the new values as its two arguments, so the words of `WORDS` and the stamp the
//! records are checked against (`CpuRecords::stamp`, in a global the agent cannot write
//! word by word) change together, from one call. It also refreshes the global's copy of
//! the other words (`CpuRecords::words`), which the agent has it do after each change of
//! one.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use enforcer_common::maps::{stamp, word};

use crate::{cpu_tasks, maps::WORDS};

/// Writes the binding epoch (argument 0), then the slot in force (argument 1), then
/// copies every word for the fast paths, then writes the stamp of both. Returns 0, or 1 if a word could not be reached (nothing written then).
#[raw_tracepoint(tracepoint = "publish")]
pub fn publish(ctx: RawTracePointContext) -> i32 {
    let epoch: u64 = ctx.arg(0);
    let slot: u64 = ctx.arg(1);
    // Elements of an array within its size always exist; were one missing, the agent
    // gets an error and changes nothing it has not reported.
    let (Some(epoch_word), Some(slot_word)) =
        (WORDS.get_ptr_mut(word::BIND_EPOCH), WORDS.get_ptr_mut(word::ACTIVE))
    else {
        return 1;
    };
    // SAFETY: map values of eight bytes each, written once. The epoch moves before the
    // slot (see the agent's `install`), and the stamp last: a hook that trusts a record
    // under the old stamp judged before this call.
    unsafe {
        core::ptr::write_volatile(epoch_word, epoch);
        core::ptr::write_volatile(slot_word, slot & 1);
    }
    // The copy the fast paths read (`CpuRecords::words`), before the stamp that makes
    // records trusted: a missing word is left as it was and refused like the others.
    for index in 0..word::COUNT {
        let Some(value) = WORDS.get_ptr(index) else {
            return 1;
        };
        // SAFETY: a map value of eight bytes, read once.
        cpu_tasks::set_word(index, unsafe { core::ptr::read_volatile(value) });
    }
    #[expect(clippy::cast_possible_truncation, reason = "a slot number")]
    cpu_tasks::set_stamp(stamp(epoch, slot as u32));
    0
}
