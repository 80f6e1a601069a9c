//! `enforcer verdicts tail` (live, through the agent) and `enforcer verdicts show` (from
//! the log file): verdicts for people or machines.

use std::{io::BufRead as _, io::Write as _, path::Path, process::ExitCode};

use http_body_util::BodyExt as _;
use hyper::Method;
use serde_json::Value;

use super::{Output, fail, runtime};
use crate::api::client::{Client, encode};

#[derive(clap::Args)]
pub struct TailArgs {
    /// Only verdicts of this identity.
    #[arg(long)]
    identity: Option<String>,
    /// Only verdicts of this policy.
    #[arg(long)]
    policy: Option<String>,
    /// Only this decision (allow, deny, audit).
    #[arg(long)]
    decision: Option<String>,
    /// Only this hook (`exec`, `file_open`, `connect4`, `connect6`, `sendmsg4`, `sendmsg6`).
    #[arg(long)]
    hook: Option<String>,
    /// Start with the records since this RFC 3339 time (e.g. 2026-11-22T10:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Start with the last N records (default 10; ignored with --since).
    #[arg(long, default_value_t = 10)]
    last: usize,
    /// Print what is there and exit instead of following.
    #[arg(long)]
    no_follow: bool,
}

pub fn tail(socket: &Path, args: &TailArgs, output: Output) -> ExitCode {
    let mut query = vec![format!("last={}", args.last)];
    if !args.no_follow {
        query.push("follow=true".to_owned());
    }
    for (key, value) in [
        ("identity", &args.identity),
        ("policy", &args.policy),
        ("decision", &args.decision),
        ("hook", &args.hook),
        ("since", &args.since),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode(value)));
        }
    }
    let path = format!("/v1/verdicts?{}", query.join("&"));
    runtime().block_on(async {
        let response = match Client::new(socket).send(Method::GET, &path, None).await {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let mut body = response.into_body();
        let mut pending = Vec::new();
        let stdout = std::io::stdout();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else { continue };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                let text = match output {
                    Output::Json => line,
                    Output::Text => serde_json::from_str::<Value>(&line).map_or(line, |r| text(&r)),
                };
                let mut out = stdout.lock();
                // A closed pipe (e.g. `| head`) ends the tail quietly.
                if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                    return ExitCode::SUCCESS;
                }
            }
        }
        ExitCode::SUCCESS
    })
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// Verdict log to read.
    #[arg(long, default_value = "/var/log/enforcer/verdicts.jsonl")]
    log_file: std::path::PathBuf,
    /// Only verdicts of this identity.
    #[arg(long)]
    identity: Option<String>,
    /// Only this decision (allow, deny, audit).
    #[arg(long)]
    decision: Option<String>,
    /// Only this hook (`exec`, `file_open`, `connect4`, `connect6`, `sendmsg4`, `sendmsg6`).
    #[arg(long)]
    hook: Option<String>,
}

pub fn show(args: &ShowArgs, output: Output) -> ExitCode {
    let file = match std::fs::File::open(&args.log_file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", args.log_file.display());
            return ExitCode::FAILURE;
        }
    };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        let Ok(record) = serde_json::from_str::<Value>(&line) else { continue };
        if !matches(args, &record) {
            continue;
        }
        match output {
            Output::Json => println!("{line}"),
            Output::Text => println!("{}", text(&record)),
        }
    }
    ExitCode::SUCCESS
}

fn matches(args: &ShowArgs, record: &Value) -> bool {
    let filter = crate::api::VerdictFilter {
        identity: args.identity.clone(),
        policy: None,
        decision: args.decision.clone(),
        hook: args.hook.clone(),
    };
    filter.matches(record["type"].as_str().unwrap_or_default(), |name| record[name].as_str())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A verdict's target in a few words, whatever its shape (see `record::Target`).
fn target_text(target: &Value) -> String {
    let access = || target["access"].as_array().into_iter().flatten().map(s).collect::<Vec<_>>().join("+");
    if target["path"].is_string() {
        format!("{} ({})", s(&target["path"]), access())
    } else if target["address"].is_string() {
        format!("{}:{}/{}", s(&target["address"]), s(&target["port"]), s(&target["protocol"]))
    } else if target["family"].is_string() {
        format!("socket {}/{} protocol {}", s(&target["family"]), s(&target["type"]), s(&target["protocol"]))
    } else if !target["process"].is_null() {
        format!("process {}", s(&target["process"]))
    } else if target["command"].is_string() {
        s(&target["command"])
    } else if !target["flags"].is_null() {
        format!("{} (flags {:#x})", s(&target["name"]), target["flags"].as_u64().unwrap_or(0))
    } else if target["access"].is_array() {
        format!("{} ({})", s(&target["name"]), access())
    } else {
        s(&target["name"])
    }
}

/// One readable line per record.
pub fn text(r: &Value) -> String {
    let time = s(&r["time"]);
    let time = time.get(..19).map_or(time.clone(), |t| format!("{t}Z"));
    match r["type"].as_str() {
        Some("verdict") => {
            let what = target_text(&r["target"]);
            format!(
                "{time}  {:<5}  {:<9}  {:<14} {:<11} pid {:<6} {:<15} {what}",
                s(&r["decision"]).to_uppercase(),
                s(&r["hook"]),
                s(&r["identity"]),
                s(&r["rule"]),
                s(&r["pid"]),
                s(&r["comm"]),
            )
        }
        Some("policy") => {
            let names: Vec<String> = r["policies"].as_array().into_iter().flatten().map(s).collect();
            format!(
                "{time}  policy generation {} applied ({}): {}",
                s(&r["generation"]),
                s(&r["source"]),
                names.join(", ")
            )
        }
        Some("dropped") => {
            format!("{time}  {} verdict events dropped (total {})", s(&r["count"]), s(&r["total"]))
        }
        Some("agent") => {
            format!("{time}  agent {} (pid {}): {}", s(&r["event"]), s(&r["pid"]), s(&r["detail"]))
        }
        _ => r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_a_verdict_line() {
        let r = serde_json::json!({
            "type": "verdict", "time": "2026-11-22T02:49:32.315347320Z", "decision": "deny", "hook": "file_open",
            "identity": "payments-api", "rule": "file[0]", "pid": 42, "comm": "cat",
            "target": {"path": "/srv/secrets/billing/db.key", "access": ["read"]}
        });
        let line = text(&r);
        assert!(line.starts_with("2026-11-22T02:49:32Z  DENY   file_open"), "{line}");
        assert!(line.ends_with("/srv/secrets/billing/db.key (read)"), "{line}");
        let n = serde_json::json!({"type": "verdict", "time": "t", "target": {"address": "10.0.0.1", "port": 443, "protocol": "tcp"}});
        assert!(text(&n).ends_with("10.0.0.1:443/tcp"));
        for (target, shown) in [
            (serde_json::json!({"name": "ci-output", "access": ["write"]}), "ci-output (write)"),
            (serde_json::json!({"name": "/srv", "flags": 4096}), "/srv (flags 0x1000)"),
            (
                serde_json::json!({"family": "packet", "type": "raw", "protocol": 0}),
                "socket packet/raw protocol 0",
            ),
            (serde_json::json!({"process": 7}), "process 7"),
            (serde_json::json!({"command": "BPF_OBJ_GET"}), "BPF_OBJ_GET"),
            (serde_json::json!({"name": "pin"}), "pin"),
        ] {
            let line = text(&serde_json::json!({"type": "verdict", "time": "t", "target": target}));
            assert!(line.ends_with(shown), "{line}");
        }
    }
}
