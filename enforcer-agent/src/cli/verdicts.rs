//! `enforcer verdicts show`: reads the verdict log and prints it for people or machines.

use std::{io::BufRead as _, process::ExitCode};

use serde_json::Value;

use super::Output;

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
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

pub fn show(args: &ShowArgs) -> ExitCode {
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
        match args.output {
            Output::Json => println!("{line}"),
            Output::Text => println!("{}", text(&record)),
        }
    }
    ExitCode::SUCCESS
}

fn matches(args: &ShowArgs, record: &Value) -> bool {
    let is =
        |field: &str, want: Option<&String>| want.is_none_or(|w| record[field].as_str() == Some(w.as_str()));
    let filtered = args.identity.is_some() || args.decision.is_some() || args.hook.is_some();
    if filtered && record["type"] != "verdict" {
        return false;
    }
    is("identity", args.identity.as_ref())
        && is("decision", args.decision.as_ref())
        && is("hook", args.hook.as_ref())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// One readable line per record.
pub fn text(r: &Value) -> String {
    let time = s(&r["time"]);
    let time = time.get(..19).map_or(time.clone(), |t| format!("{t}Z"));
    match r["type"].as_str() {
        Some("verdict") => {
            let target = &r["target"];
            let what = if target["path"].is_string() {
                let access: Vec<String> = target["access"].as_array().into_iter().flatten().map(s).collect();
                format!("{} ({})", s(&target["path"]), access.join("+"))
            } else {
                format!("{}:{}/{}", s(&target["address"]), s(&target["port"]), s(&target["protocol"]))
            };
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
    }
}
