//! `enforcer quarantine`, `enforcer release` and `enforcer credentials …`: live state that
//! takes effect on the identity's next syscall.

use std::{fmt::Write as _, path::Path, process::ExitCode};

use hyper::Method;
use serde_json::Value;

use super::{Output, fail, print_json, runtime};
use crate::api::client::{Client, encode};

fn send(socket: &Path, method: Method, path: &str, body: Option<Value>) -> Result<Value, ExitCode> {
    runtime()
        .block_on(Client::new(socket).call(method, path, body.map(|b| b.to_string())))
        .map_err(|e| fail(&e))
}

fn show(value: &Value, output: Output, text: impl FnOnce(&Value) -> String) -> ExitCode {
    match output {
        Output::Json => print_json(value),
        Output::Text => println!("{}", text(value)),
    }
    ExitCode::SUCCESS
}

pub fn quarantine(socket: &Path, identity: &str, reason: &str, output: Output) -> ExitCode {
    let body = serde_json::json!({"identity": identity, "reason": reason});
    match send(socket, Method::POST, "/v1/quarantine", Some(body)) {
        Ok(v) => show(&v, output, |_| format!("{identity}: quarantined ({reason})")),
        Err(code) => code,
    }
}

pub fn release(socket: &Path, identity: &str, output: Output) -> ExitCode {
    match send(socket, Method::DELETE, &format!("/v1/quarantine/{}", encode(identity)), None) {
        Ok(v) => show(&v, output, |_| format!("{identity}: released")),
        Err(code) => code,
    }
}

pub fn list_quarantines(socket: &Path, output: Output) -> ExitCode {
    match send(socket, Method::GET, "/v1/quarantine", None) {
        Ok(v) => show(&v, output, |v| {
            let mut out = format!("{:<24} {:<6} {:<31} REASON", "IDENTITY", "UID", "SINCE");
            for (identity, q) in v.as_object().into_iter().flatten() {
                let _ = write!(
                    out,
                    "\n{identity:<24} {:<6} {:<31} {}",
                    q["uid"],
                    text(&q["since"]),
                    text(&q["reason"])
                );
            }
            out
        }),
        Err(code) => code,
    }
}

pub fn revoke(socket: &Path, path: &str, reason: &str, output: Output) -> ExitCode {
    let body = serde_json::json!({"path": path, "reason": reason});
    match send(socket, Method::POST, "/v1/credentials/revoked", Some(body)) {
        Ok(v) => {
            show(&v, output, |v| format!("{}: revoked (credential[{}], {reason})", text(&v["path"]), v["id"]))
        }
        Err(code) => code,
    }
}

pub fn unrevoke(socket: &Path, path: &str, output: Output) -> ExitCode {
    match send(socket, Method::DELETE, &format!("/v1/credentials/revoked?path={}", encode(path)), None) {
        Ok(v) => show(&v, output, |v| format!("{}: no longer revoked", text(&v["path"]))),
        Err(code) => code,
    }
}

pub fn list_revoked(socket: &Path, output: Output) -> ExitCode {
    match send(socket, Method::GET, "/v1/credentials/revoked", None) {
        Ok(v) => show(&v, output, |v| {
            let mut out = format!("{:<6} {:<40} {:<6} {:<31} REASON", "ID", "PATH", "UID", "SINCE");
            for (path, r) in v.as_object().into_iter().flatten() {
                let _ = write!(
                    out,
                    "\n{:<6} {path:<40} {:<6} {:<31} {}",
                    r["id"],
                    r["uid"],
                    text(&r["since"]),
                    text(&r["reason"])
                );
            }
            out
        }),
        Err(code) => code,
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}
