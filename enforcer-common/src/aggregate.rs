//! Repeated identical verdicts, counted in the kernel instead of queued one by one.
//!
//! The kernel keeps one [`crate::maps::AggEntry`] per [`crate::maps::AggKey`] in the LRU
//! map `VERDICT_AGG`. Every call of a verdict raises the entry's `hits` atomically, so
//! each call gets its own sequence number. The first call, and the first call after a
//! [`WINDOW_NS`] window has passed, wins the window (compare-and-swap of `window_ns`) and
//! is reported in full, carrying its sequence number; every other call is only counted.
//! A window is won before the call takes its number, so a reader that sees `hits` and
//! then an unchanged, ended window has seen only unreported repeats.
//!
//! The agent remembers per key the highest sequence number it has accounted for. A full
//! record with sequence S after R means the S−R−1 calls between were repeats: it writes
//! one aggregated record for them before the full one. Once a window has ended, the agent
//! reads the entry (the kernel's copy is never written by the agent) and writes an
//! aggregated record for the hits it has not accounted for. Nothing is ever reset, so no
//! update can be lost between the two sides. `pending` verdicts (approval requests) are
//! never aggregated. An entry the LRU evicts before the agent read its last hits loses
//! those hits from the records (the kernel's `deny`/`audit` counters stay exact); the
//! agent counts such entries.

/// How long repeats of a reported verdict are only counted.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// Entries of `VERDICT_AGG`: distinct verdicts tracked at once.
pub const ENTRIES: u32 = 8192;
