//! The agent's half of verdict aggregation (`enforcer_common::aggregate`): which repeats
//! the kernel counted without reporting still need an aggregated record.
//!
//! Per key the agent remembers the highest sequence number it has accounted for. A full
//! record with sequence S after R stands for itself; the S−R−1 calls between were
//! repeats. Once a key's window has ended the agent reads the kernel's entry and accounts
//! for its `hits`. The kernel's entry is only read, so no count is lost between the two
//! sides; an entry the kernel evicted before its last hits were read is counted in
//! [`Aggregator::evicted`]. Pure: the kernel read is a closure, so the logic is tested
//! without a kernel.

use std::collections::HashMap;

use enforcer_common::{
    aggregate::{ENTRIES, WINDOW_NS},
    event::VerdictEvent,
    maps::{AggEntry, AggKey},
};

/// Calls of a verdict the kernel counted without reporting them one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    pub count: u64,
    /// Boot-clock times of the first and last of them.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// What the agent knows of one kernel entry.
#[derive(Debug)]
struct Tracked<R> {
    epoch: u64,
    /// Highest sequence number accounted for.
    reported: u64,
    /// Boot time of the last call accounted for.
    until_ns: u64,
    /// Boot time of the window the last full record opened.
    window_ns: u64,
    /// The last full record (what an aggregated record repeats); dropped once settled.
    record: Option<R>,
    /// Every call of the window was accounted for and the window is long over: only a
    /// new full record (or a call racing it, which that record's gap covers) can follow.
    settled: bool,
}

/// How long after a window opened its last repeat can still be counted: a program that
/// read the clock inside the window may count a little later.
const SETTLE_NS: u64 = 2 * WINDOW_NS;

/// Per-key accounting of reported and counted verdicts.
#[derive(Debug)]
pub struct Aggregator<R> {
    keys: HashMap<AggKey, Tracked<R>>,
    /// Entries the kernel evicted (or re-created) before the agent had read their last
    /// counts: repeats counted since the previous read have no record.
    pub evicted: u64,
    /// Full records that arrived with a number already accounted for (a program delayed
    /// for over a window between winning it and taking its number).
    pub late: u64,
}

impl<R> Default for Aggregator<R> {
    fn default() -> Self {
        Self { keys: HashMap::new(), evicted: 0, late: 0 }
    }
}

impl<R: Clone> Aggregator<R> {
    /// A full verdict: the repeats to write before it (with the record they repeat:
    /// the previous full record of the key, or `record` itself), if any. `record` is
    /// this verdict's record, kept as the one later repeats repeat.
    pub fn full(&mut self, event: &VerdictEvent, record: &R) -> Option<(R, Repeats)> {
        if event.sequence == 0 {
            return None;
        }
        let key = AggKey::of(event);
        let previous = self.keys.remove(&key);
        let (reported, until_ns, before) = match previous {
            Some(t) if t.epoch == event.epoch => {
                if event.sequence <= t.reported {
                    // Already counted among repeats: keep the state, write the record alone.
                    self.late += 1;
                    self.keys.insert(key, t);
                    return None;
                }
                (t.reported, t.until_ns, t.record)
            }
            Some(t) => {
                if !t.settled {
                    self.evicted += 1;
                }
                (0, 0, None)
            }
            None => (0, 0, None),
        };
        self.keys.insert(
            key,
            Tracked {
                epoch: event.epoch,
                reported: event.sequence,
                until_ns: event.boot_ns,
                window_ns: event.boot_ns,
                record: Some(record.clone()),
                settled: false,
            },
        );
        let count = event.sequence - reported - 1;
        if count == 0 {
            return None;
        }
        let first_ns =
            if event.repeat_first_ns != 0 { event.repeat_first_ns.max(until_ns) } else { until_ns };
        let last_ns = if event.repeat_last_ns != 0 { event.repeat_last_ns } else { event.boot_ns };
        Some((before.unwrap_or_else(|| record.clone()), Repeats { count, first_ns, last_ns }))
    }

    /// Reads the kernel's entries of keys whose window has ended (`read` returns `None`
    /// for a key the kernel no longer has) and returns the repeats not yet accounted
    /// for, with the record they repeat. `all` reads every unsettled key whatever its
    /// window (when the agent stops).
    pub fn flush(
        &mut self,
        now_ns: u64,
        all: bool,
        read: impl Fn(&AggKey) -> Option<AggEntry>,
    ) -> Vec<(R, Repeats)> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        // More keys than the kernel holds: some are gone; check the settled ones too.
        let prune = self.keys.len() > ENTRIES as usize;
        for (key, t) in &mut self.keys {
            let due = all || now_ns >= t.window_ns.saturating_add(WINDOW_NS);
            if (t.settled && !prune) || !due {
                continue;
            }
            let entry = read(key).filter(|e| e.epoch == t.epoch);
            let Some(entry) = entry else {
                if !t.settled {
                    self.evicted += 1;
                }
                gone.push(*key);
                continue;
            };
            if t.settled {
                continue;
            }
            // A new window opened: its full record is on its way and accounts for it;
            // unless it is long over, then that record was dropped (ring full) and its
            // call is counted here with the window's repeats.
            if entry.window_ns != t.window_ns {
                if now_ns < entry.window_ns.saturating_add(SETTLE_NS) && !all {
                    continue;
                }
                t.window_ns = entry.window_ns;
            }
            if entry.hits > t.reported {
                let first_ns = entry.first_ns.max(t.until_ns);
                let repeats = Repeats {
                    count: entry.hits - t.reported,
                    first_ns,
                    last_ns: entry.last_ns.max(first_ns),
                };
                t.reported = entry.hits;
                t.until_ns = repeats.last_ns;
                if let Some(record) = &t.record {
                    out.push((record.clone(), repeats));
                }
            }
            if now_ns >= t.window_ns.saturating_add(SETTLE_NS) {
                t.settled = true;
                t.record = None;
            }
        }
        for key in gone {
            self.keys.remove(&key);
        }
        out
    }

    /// Keys tracked.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn event(sequence: u64, epoch: u64, at: u64) -> VerdictEvent {
        // SAFETY: all-zero is a valid VerdictEvent.
        let mut e: VerdictEvent = unsafe { std::mem::zeroed() };
        e.identity = 1;
        e.hook = 2;
        e.decision = 1;
        e.target_hash = 42;
        e.path_len = 7;
        e.sequence = sequence;
        e.epoch = epoch;
        e.boot_ns = at;
        e
    }

    fn entry(hits: u64, epoch: u64, window_ns: u64, first_ns: u64, last_ns: u64) -> AggEntry {
        AggEntry { hits, window_ns, epoch, first_ns, last_ns }
    }

    #[test]
    fn a_gap_in_sequence_numbers_is_written_before_the_next_full_record() {
        let mut agg = Aggregator::default();
        assert_eq!(agg.full(&event(1, 10, 10), &"first"), None);
        let mut next = event(6, 10, 10 + 2 * S);
        next.repeat_first_ns = 11;
        next.repeat_last_ns = 20;
        let (record, repeats) = agg.full(&next, &"second").expect("repeats");
        // The repeats repeat the first record; calls 2..=5.
        assert_eq!(record, "first");
        assert_eq!(repeats, Repeats { count: 4, first_ns: 11, last_ns: 20 });
        // Consecutive numbers: nothing between.
        assert_eq!(agg.full(&event(7, 10, 10 + 4 * S), &"third"), None);
        assert_eq!(agg.evicted, 0);
    }

    #[test]
    fn stragglers_are_flushed_once_the_window_ends_and_never_twice() {
        let mut agg = Aggregator::default();
        agg.full(&event(1, 10, 10), &"first");
        let kernel = entry(100, 10, 10, 12, 500);
        // Window not over: nothing read.
        assert!(agg.flush(10 + S / 2, false, |_| panic!("read before the window ended")).is_empty());
        let out = agg.flush(10 + S, false, |_| Some(kernel));
        assert_eq!(out, vec![("first", Repeats { count: 99, first_ns: 12, last_ns: 500 })]);
        // Read again: nothing new.
        assert!(agg.flush(10 + S + 1, false, |_| Some(kernel)).is_empty());
        // A repeat counted late (its program read the clock inside the window).
        let late = entry(101, 10, 10, 12, 600);
        let out = agg.flush(10 + S + 2, false, |_| Some(late));
        assert_eq!(out, vec![("first", Repeats { count: 1, first_ns: 500, last_ns: 600 })]);
        // Settled: no more reads.
        assert!(agg.flush(10 + 3 * S, false, |_| Some(late)).is_empty());
        assert!(agg.flush(10 + 4 * S, false, |_| panic!("settled key read")).is_empty());
        // The next window's full record follows on from what was flushed.
        assert_eq!(agg.full(&event(102, 10, 10 + 5 * S), &"next"), None);
        let (_, repeats) = agg.full(&event(110, 10, 10 + 7 * S), &"after").expect("repeats");
        assert_eq!(repeats.count, 7);
    }

    #[test]
    fn a_new_window_is_left_to_its_full_record() {
        let mut agg = Aggregator::default();
        agg.full(&event(1, 10, 10), &"first");
        // The kernel opened a new window (its record still in the ring): hits include it.
        let kernel = entry(50, 10, 10 + 2 * S, 0, 10 + 2 * S);
        assert!(agg.flush(10 + 2 * S, false, |_| Some(kernel)).is_empty());
        let (_, repeats) = agg.full(&event(50, 10, 10 + 2 * S), &"second").expect("repeats");
        assert_eq!(repeats.count, 48);
    }

    #[test]
    fn a_window_whose_full_record_was_dropped_is_flushed_once_long_over() {
        let mut agg = Aggregator::default();
        agg.full(&event(1, 10, 10), &"first");
        // Window 2 opened at 10+2S with call 5; its record never came (ring full).
        let kernel = entry(9, 10, 10 + 2 * S, 10 + 2 * S + 1, 10 + 2 * S + 9);
        assert!(agg.flush(10 + 3 * S, false, |_| Some(kernel)).is_empty());
        let out = agg.flush(10 + 4 * S, false, |_| Some(kernel));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.count, 8);
    }

    #[test]
    fn eviction_and_recreation_are_counted_and_restart_the_numbers() {
        let mut agg = Aggregator::default();
        agg.full(&event(1, 10, 10), &"first");
        // Re-created entry (new epoch): sequence restarts at 1, no gap, one eviction.
        assert_eq!(agg.full(&event(1, 99, 10 + S / 2), &"again"), None);
        assert_eq!(agg.evicted, 1);
        // Gone from the kernel before its window was read: counted, forgotten.
        assert!(agg.flush(10 + 2 * S, false, |_| None).is_empty());
        assert_eq!(agg.evicted, 2);
        assert_eq!(agg.tracked(), 0);
        // A settled key that disappears is no loss.
        agg.full(&event(1, 7, 10), &"x");
        agg.flush(10 + 3 * S, false, |_| Some(entry(1, 7, 10, 0, 10)));
        assert_eq!(agg.full(&event(1, 8, 10 + 4 * S), &"y"), None);
        assert_eq!(agg.evicted, 2);
    }

    #[test]
    fn unaggregated_and_late_records_add_nothing() {
        let mut agg = Aggregator::default();
        assert_eq!(agg.full(&event(0, 0, 10), &"alone"), None);
        assert_eq!(agg.tracked(), 0);
        agg.full(&event(5, 10, 10), &"five");
        assert_eq!(agg.full(&event(3, 10, 20), &"late"), None);
        assert_eq!(agg.late, 1);
        let (_, repeats) = agg.full(&event(8, 10, 30), &"eight").expect("repeats");
        assert_eq!(repeats.count, 2);
    }

    #[test]
    fn stopping_reads_every_open_window() {
        let mut agg = Aggregator::default();
        agg.full(&event(1, 10, 10), &"first");
        let out = agg.flush(11, true, |_| Some(entry(3, 10, 10, 10, 11)));
        assert_eq!(out, vec![("first", Repeats { count: 2, first_ns: 10, last_ns: 11 })]);
    }
}
