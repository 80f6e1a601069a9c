//! Each CPU's identity lines: what a cgroup resolved to in a slot, and that identity's
//! configuration, found by indexing an array (no hash, no key compare). A line is a
//! cache only: a miss, a line another CPU-local writer holds, or a line from an older
//! binding epoch falls back to `identity::resolve` and the `IDENTITIES` lookup. The
//! context switch copies the incoming task's line into its CPU's task record
//! (`CpuTask::line`), where a hook that read the record tries it first.
//!
//! Layout and locking: `enforcer_common::maps::IdentityLine`.

use core::intrinsics::{AtomicOrdering, atomic_cxchg};
use core::ptr::{read_volatile, write_volatile};

use enforcer_common::{
    SLOTS, capacity,
    maps::{CpuTask, IdentityConfig, IdentityLine, STAMP_PUBLISHED, stamp},
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
/// this CPU was inside it while it was read. With this CPU's task record (`record`), the
/// record's copy of a line (see [`copy_for`]) is tried first.
#[inline(always)]
pub fn get(cgroup_id: u64, slot: u32, epoch: u64, record: Option<*mut CpuTask>) -> Option<Resolved> {
    if let Some(record) = record {
        // SAFETY: a field of this CPU's map value.
        let copy = unsafe { &raw const (*record).line };
        if let Some(found) = read(copy, cgroup_id, stamp(epoch, slot)) {
            return Some(found);
        }
    }
    read(line(cgroup_id, slot)?, cgroup_id, epoch)
}

/// Copies into `record` (this CPU's task record) the line of `cgroup_id` under the slot
/// and binding epoch last published (`cpu_tasks::stamp`), or marks the copy empty where
/// there is none. Called at
/// the context switch to a task of that cgroup, with interrupts off: no hook on this CPU
/// runs meanwhile, and a hook preempted inside its read of the copy sees `seq` moved.
/// Hooks only read the copy; the lines themselves are written by hooks.
#[inline(always)]
pub fn copy_for(record: *mut CpuTask, cgroup_id: u64) {
    // The line's words after `seq`: cgroup id, epoch, then the identity and its
    // configuration as two words, copied as they are. No line: no caller has cgroup id
    // 0, nor an epoch word of all ones.
    let mut words = [0, u64::MAX, 0, 0];
    let published = crate::cpu_tasks::stamp();
    let epoch = (published & !STAMP_PUBLISHED) >> 1;
    #[expect(clippy::cast_possible_truncation, reason = "the lowest bit")]
    let slot = published as u32 & 1;
    if cgroup_id != 0
        && published & STAMP_PUBLISHED != 0
        && let Some(line) = line(cgroup_id, slot)
    {
        // SAFETY: this CPU's map value, read under its `seq` as in `read`.
        unsafe {
            let at = line.cast::<u64>();
            let seq = read_volatile(at);
            let found = [
                read_volatile(at.add(1)),
                read_volatile(at.add(2)),
                read_volatile(at.add(3)),
                read_volatile(at.add(4)),
            ];
            if seq & 1 == 0 && read_volatile(at) == seq && found[0] == cgroup_id && found[1] == epoch {
                words = [cgroup_id, published, found[2], found[3]];
            }
        }
    }
    // SAFETY: this CPU's map value; the only writer of the copy.
    unsafe {
        let copy = (&raw mut (*record).line).cast::<u64>();
        let seq = read_volatile(copy) | 1;
        write_volatile(copy, seq);
        for (i, word) in words.iter().enumerate() {
            write_volatile(copy.add(i + 1), *word);
        }
        write_volatile(copy, seq.wrapping_add(1));
    }
}

/// Records what `cgroup_id` resolved to in `slot` under `epoch`. Skipped (a later call
/// resolves again) when another program on this CPU is writing the line.
#[inline(always)]
pub fn put(cgroup_id: u64, slot: u32, epoch: u64, resolved: &Resolved) {
    let Some(line) = line(cgroup_id, slot) else {
        return;
    };
    // SAFETY: as in `read`; the compare-and-exchange makes this program the line's only
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

/// What `line` (this CPU's) holds for `cgroup_id` under `epoch`, read under its `seq`.
#[inline(always)]
fn read(line: *const IdentityLine, cgroup_id: u64, epoch: u64) -> Option<Resolved> {
    // SAFETY: `line` is in this CPU's map value; volatile reads keep their order (a
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
