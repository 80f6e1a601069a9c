//! Repeats of a verdict within a window are counted, not reported; see
//! `enforcer_common::aggregate` for the protocol with the agent and why it loses no count.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use enforcer_common::{
    aggregate::WINDOW_NS,
    event::VerdictEvent,
    maps::{AggEntry, AggKey},
};

use crate::maps::VERDICT_AGG;

/// Room for [`repeat`]'s key and new entry.
#[repr(C)]
pub struct Scratch {
    key: AggKey,
    fresh: AggEntry,
}

/// `BPF_NOEXIST`: create only.
const NOEXIST: u64 = 1;

/// Counts the verdict at `ev` in its aggregation entry. True if it is a repeat within
/// the window (not to be reported); otherwise stamps the event with its sequence number,
/// the entry's epoch and the repeats since the last report, and it is to be reported.
///
/// Aggregation never changes a verdict: an entry that cannot be created (another CPU
/// created it first, or the map is out of memory) leaves this verdict reported on its
/// own, with sequence 0.
///
/// The key and new entry are built in `scratch`, a map value, not on the stack: the
/// report's frame is the last of the deepest call chains (see `emit::enforcer_report`).
///
/// # Safety
/// `ev` points at a filled `VerdictEvent` in a map value, `scratch` into a map value.
#[inline(always)]
pub unsafe fn repeat(ev: *mut VerdictEvent, scratch: *mut Scratch) -> bool {
    // SAFETY: as the caller promises; entry pointers are map values, updated atomically
    // where another CPU may update them too, plainly where a lost store only blurs a time.
    unsafe {
        let key = &raw mut (*scratch).key;
        key.write(AggKey::of(&*ev));
        let key = &*key;
        let now = (*ev).boot_ns;
        let Some(entry) = VERDICT_AGG.get_ptr_mut(key) else {
            let fresh = &raw mut (*scratch).fresh;
            fresh.write(AggEntry { hits: 1, window_ns: now, epoch: now, first_ns: 0, last_ns: now });
            if VERDICT_AGG.insert(key, &*fresh, NOEXIST).is_ok() {
                (*ev).sequence = 1;
                (*ev).epoch = now;
            }
            return false;
        };
        let window = core::ptr::read_volatile(&raw const (*entry).window_ns);
        // The window is won (compare-and-swap) before the call takes its number, so every
        // number taken while a window stands belongs to a repeat or to that window's winner.
        // The swap succeeded if it found what was read (its success flag is not used: the
        // IR rustc makes of it, `br i8`, is refused by the linker's LLVM: "Invalid record").
        let won = now >= window.saturating_add(WINDOW_NS)
            && atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                &raw mut (*entry).window_ns,
                window,
                now,
            )
            .0 == window;
        if !won {
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*entry).hits, 1);
            if core::ptr::read_volatile(&raw const (*entry).first_ns) == 0 {
                core::ptr::write_volatile(&raw mut (*entry).first_ns, now);
            }
            core::ptr::write_volatile(&raw mut (*entry).last_ns, now);
            return true;
        }
        let first = core::ptr::read_volatile(&raw const (*entry).first_ns);
        let last = core::ptr::read_volatile(&raw const (*entry).last_ns);
        core::ptr::write_volatile(&raw mut (*entry).first_ns, 0);
        core::ptr::write_volatile(&raw mut (*entry).last_ns, now);
        // Fail-open for aggregation only: a number not taken leaves this call reported on
        // its own (sequence 0) and out of `hits`, so it is counted exactly once.
        let Some(sequence) = take_number(&raw mut (*entry).hits) else {
            return false;
        };
        (*ev).sequence = sequence;
        (*ev).epoch = (*entry).epoch;
        if first != 0 {
            (*ev).repeat_first_ns = first;
            (*ev).repeat_last_ns = last;
        }
        false
    }
}

/// Raises `hits` by one with compare-and-swap and returns the new value, trying twice
/// (each failure means another CPU counted a repeat at that instant). The BPF target's
/// default CPU (v1, which bpf-linker is given) has no fetching atomic add ("Invalid usage
/// of the XADD return value"), but compare-and-swap works.
///
/// # Safety
/// `hits` points into a map value.
#[inline(always)]
unsafe fn take_number(hits: *mut u64) -> Option<u64> {
    for _ in 0..MAX_TRIES {
        // SAFETY: as the caller promises.
        let seen = unsafe { core::ptr::read_volatile(hits) };
        // SAFETY: as above. Success is judged by the value found (see `repeat`).
        let (found, _) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(hits, seen, seen + 1)
        };
        if found == seen {
            return Some(seen + 1);
        }
    }
    None
}

/// Attempts of [`take_number`].
const MAX_TRIES: u32 = 4;
