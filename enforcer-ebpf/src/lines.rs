//! Each CPU's identity lines: what a cgroup resolved to in a slot, and that identity's
//! configuration, found by indexing an array (no hash, no key compare). A line is a
//! cache only: a miss, a line another CPU-local writer holds, or a line from an older
//! binding epoch falls back to `identity::resolve` and the `IDENTITIES` lookup.
//!
//! Layout and locking: `enforcer_common::maps::IdentityLine`.

use core::intrinsics::{AtomicOrdering, atomic_cxchg};
use core::ptr::{read_volatile, write_volatile};

use enforcer_common::{
    SLOTS, capacity,
    maps::{IdentityConfig, IdentityLine},
};

use crate::maps::IDENTITY_LINES;

const _: () = assert!(SLOTS == 2, "a line's index carries the slot in its lowest bit");
const _: () = assert!(capacity::IDENTITY_LINES.is_power_of_two());

/// What a line holds: the identity (0 = none) and, for an identity, its configuration.
#[derive(Clone, Copy)]
pub struct Resolved {
    pub identity: u32,
    pub config: IdentityConfig,
}

#[inline(always)]
fn line(cgroup_id: u64, slot: u32) -> Option<*mut IdentityLine> {
    #[expect(clippy::cast_possible_truncation, reason = "only the low bits index")]
    let index = (((cgroup_id as u32) << 1) | (slot & 1)) & (capacity::IDENTITY_LINES - 1);
    IDENTITY_LINES.get_ptr_mut(index)
}

/// The line for `cgroup_id` in `slot`, if it was written under `epoch` and no writer on
/// this CPU was inside it while it was read.
#[inline(always)]
pub fn get(cgroup_id: u64, slot: u32, epoch: u64) -> Option<Resolved> {
    let line = line(cgroup_id, slot)?;
    // SAFETY: `line` is this CPU's map value; volatile reads keep their order (a
    // preempting writer runs on this CPU, so program order is all the order needed).
    unsafe {
        let seq = read_volatile(&raw const (*line).seq);
        if seq & 1 != 0 {
            return None;
        }
        let id = read_volatile(&raw const (*line).cgroup_id);
        let stamp = read_volatile(&raw const (*line).epoch);
        let identity = read_volatile(&raw const (*line).identity);
        // An unmanaged line's configuration is unused: not read, so the unmanaged path
        // pays for four loads, not nine.
        let config =
            if identity == 0 { IdentityConfig::default() } else { read_volatile(&raw const (*line).config) };
        if read_volatile(&raw const (*line).seq) != seq || id != cgroup_id || stamp != epoch {
            return None;
        }
        Some(Resolved { identity, config })
    }
}

/// Records what `cgroup_id` resolved to in `slot` under `epoch`. Skipped (a later call
/// resolves again) when another program on this CPU is writing the line.
#[inline(always)]
pub fn put(cgroup_id: u64, slot: u32, epoch: u64, resolved: &Resolved) {
    let Some(line) = line(cgroup_id, slot) else {
        return;
    };
    // SAFETY: as in `get`; the compare-and-exchange makes this program the line's only
    // writer until `seq` is even again.
    unsafe {
        let seq = read_volatile(&raw const (*line).seq);
        // The exchange succeeded if it found what was read (see `aggregate` on why its
        // success flag is not used).
        if seq & 1 != 0
            || atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                &raw mut (*line).seq,
                seq,
                seq.wrapping_add(1),
            )
            .0 != seq
        {
            return;
        }
        write_volatile(&raw mut (*line).cgroup_id, cgroup_id);
        write_volatile(&raw mut (*line).epoch, epoch);
        write_volatile(&raw mut (*line).identity, resolved.identity);
        write_volatile(&raw mut (*line).config, resolved.config);
        write_volatile(&raw mut (*line).seq, seq.wrapping_add(2));
    }
}
