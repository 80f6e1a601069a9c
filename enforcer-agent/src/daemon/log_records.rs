//! The verdict log's records about the agent itself: policy changes, lost events, and the
//! agent's start, takeover and stop.

use serde::Serialize;

use crate::daemon::{engine::Engine, record::clock::wall_now, verdict_log::VerdictLog};

crate::log_record!(PolicyRecord<'_>, DroppedRecord, AgentRecord);

#[derive(Serialize)]
struct PolicyRecord<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    generation: u64,
    policies: Vec<&'a str>,
    source: &'a str,
    /// Uid of the API caller that made the change (none for startup and SIGHUP).
    uid: Option<u32>,
}

#[derive(Serialize)]
struct DroppedRecord {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Events lost since the previous report.
    count: u64,
    /// Events lost since the programs were loaded.
    total: u64,
}

#[derive(Serialize)]
struct AgentRecord {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    pid: u32,
    detail: String,
}

pub fn write_policy_record(log: &mut VerdictLog, engine: &Engine, source: &str, uid: Option<u32>) {
    let record = PolicyRecord {
        time: wall_now(),
        kind: "policy",
        generation: engine.generation(),
        policies: engine.policies().iter().map(|p| p.name.as_str()).collect(),
        source,
        uid,
    };
    if let Err(e) = log.write(&record) {
        tracing::warn!(error = %e, "writing verdict log");
    }
}

pub fn write_agent_record(log: &mut VerdictLog, event: &'static str, detail: String) {
    let record = AgentRecord { time: wall_now(), kind: "agent", event, pid: std::process::id(), detail };
    if let Err(e) = log.write(&record) {
        tracing::warn!(error = %e, "writing verdict log");
    }
}

/// Reports events the kernel could not hand over since the previous report.
pub fn write_dropped(log: &mut VerdictLog, count: u64, total: u64) {
    let record = DroppedRecord { time: wall_now(), kind: "dropped", count, total };
    if let Err(e) = log.write(&record) {
        tracing::warn!(error = %e, "writing verdict log");
    }
}
