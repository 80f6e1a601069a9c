//! Reader counts of the policy slots, for the path-judging LSM programs (exec, open,
//! mapping): their judgement is long (path, scan, inode walk) and, on a preemptible
//! kernel, the task running one can be preempted inside its RCU section between reading
//! the active slot word (`word::ACTIVE`) and its last map lookup, for long enough that
//! two policy applies could flip back to its slot and start rewriting it. The agent waits
//! until a slot has no reader before rewriting it.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::maps::{READERS, active_slot};

/// Adds `delta` (wrapping) to a counter atomically. `core`'s atomic types offer no
/// read-modify-write on the BPF target, so the intrinsic is used directly; LLVM lowers it
/// to the BPF atomic add instruction, which the verifier accepts on map values.
#[inline(always)]
fn add(counter: *mut u64, delta: u64) {
    // SAFETY: `counter` is a valid map value pointer; the add is atomic.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, delta) };
}

/// Registers the program as a reader of the slot in force and returns that slot.
///
/// The count is raised before the active slot is read again: either the agent's check sees the
/// count, or this re-read sees the agent's flip and the program moves to the new slot.
#[inline(always)]
pub fn enter() -> Option<u32> {
    for _ in 0..3 {
        let slot = active_slot()?;
        // Updated only atomically: a program preempting this one on the same CPU may
        // update the same counter.
        let counter = READERS.get_ptr_mut(slot)?;
        add(counter, 1);
        if active_slot() == Some(slot) {
            return Some(slot);
        }
        add(counter, u64::MAX);
    }
    None
}

/// Ends the read registered by [`enter`].
#[inline(always)]
pub fn leave(slot: u32) {
    // The program has not migrated (BPF programs run with migration disabled), so
    // this is the counter it raised.
    if let Some(counter) = READERS.get_ptr_mut(slot) {
        add(counter, u64::MAX);
    }
}
