//! A flood of denials: every call refused, no event dropped, every distinct verdict in the
//! log, and the records of a repeated verdict (full ones and aggregated ones) adding up to
//! exactly the number of calls.

use std::time::{Duration, Instant};

use enforcer_tests::{Agent, AgentDirs, TestCgroup, field, open_errno, policy, run_in, write_file};
use libc::{EPERM, O_RDONLY};

const FLOOD: usize = 100_000;
/// Every this many calls, the workload opens a second denied file.
const OTHER_EVERY: usize = 1000;

/// Calls a record stands for: its `count` when aggregated, else one.
fn calls(record: &serde_json::Value) -> u64 {
    record["count"].as_u64().unwrap_or(1)
}

/// Calls the verdict records of `path` stand for, and how many records there are.
fn tally(agent: &Agent, path: &str) -> (u64, usize) {
    let records: Vec<_> = agent
        .records()
        .into_iter()
        .filter(|r| field(r, "type") == "verdict" && field(r, "hook") == "file_open")
        .filter(|r| r["target"]["path"] == path)
        .collect();
    (records.iter().map(calls).sum(), records.len())
}

#[test]
fn a_flood_of_denials_loses_nothing_and_adds_up_exactly() {
    let flooded = "/tmp/flood/denied.txt";
    let other = "/tmp/flood/other.txt";
    write_file(flooded, "x");
    write_file(other, "y");
    let cgroup = TestCgroup::new("flood");
    let dirs = AgentDirs::new(
        "flood",
        &policy("flood-policy", &cgroup, "  file:\n    - dir: /tmp/flood\n      action: deny\n"),
    );
    let agent = Agent::start(&dirs, "detach");
    let started = Instant::now();
    // The workload counts calls that were not refused with EPERM; 0 means all were.
    let not_refused = run_in(Some(&cgroup), || {
        let mut wrong = 0;
        for i in 0..FLOOD {
            if open_errno(flooded, O_RDONLY) != EPERM {
                wrong += 1;
            }
            if i % OTHER_EVERY == 0 && open_errno(other, O_RDONLY) != EPERM {
                wrong += 1;
            }
        }
        i32::from(wrong != 0)
    });
    let elapsed = started.elapsed();
    assert_eq!(not_refused, 0, "every open in the flood is refused with EPERM");
    println!("{FLOOD} denied opens (plus {}) in {elapsed:?}", FLOOD / OTHER_EVERY);

    // The last repeats are written once their window has ended (a second or two).
    let want = u64::try_from(FLOOD).expect("fits");
    let want_other = u64::try_from(FLOOD / OTHER_EVERY).expect("fits");
    let deadline = Instant::now() + Duration::from_secs(60);
    while (tally(&agent, flooded).0 < want || tally(&agent, other).0 < want_other)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Settle: nothing more may come.
    std::thread::sleep(Duration::from_secs(3));
    let (total, records) = tally(&agent, flooded);
    let (total_other, _) = tally(&agent, other);
    println!("{records} records stand for the {total} denials of {flooded}");
    assert_eq!(total, want, "the records of the flooded file add up to exactly the calls");
    assert_eq!(total_other, want_other, "the interleaved second file is reported, exactly");
    assert!(records < FLOOD / 10, "repeats are aggregated ({records} records for {FLOOD} calls)");
    let aggregated = agent
        .records()
        .into_iter()
        .find(|r| r["target"]["path"] == flooded && r["count"].is_u64())
        .expect("an aggregated record");
    assert_eq!(aggregated["decision"], "deny");
    assert_eq!(aggregated["rule"], "file[0]");
    assert!(aggregated["firstTime"].is_string() && aggregated["lastTime"].is_string(), "{aggregated}");

    let (code, out, err) = agent.cli(&["status", "--output", "json"]);
    assert_eq!(code, 0, "status: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["counters"]["events_dropped"], 0, "no event dropped: {}", status["counters"]);
    assert_eq!(status["counters"]["aggregates_evicted"], 0, "no entry evicted: {}", status["counters"]);
    let denied = status["counters"]["deny"].as_u64().expect("deny counter");
    assert!(denied >= want + want_other, "the kernel counted every denial ({denied})");
    // The verifier's instruction counts, for the record.
    let (_, text, _) = agent.cli(&["status"]);
    for line in text.lines().filter(|l| l.contains("insns verified")) {
        println!("{line}");
    }
}
