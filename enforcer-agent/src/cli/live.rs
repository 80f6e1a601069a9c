//! `enforcer quarantine`, `enforcer release` and `enforcer credentials …`: live state that
//! takes effect on the identity's next syscall.

use std::{fmt::Write as _, path::Path, process::ExitCode};

use hyper::Method;
use serde_json::Value;

use super::{Output, fail, print_json, runtime};
use crate::{
    api::GrantTarget,
    api::client::{Client, encode},
};

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

/// `CIDR:PORT[-PORT]/PROTO` (IPv6 in brackets): `10.0.0.0/8:443/tcp`, `10.0.0.5:53/udp`,
/// `[2001:db8::/32]:8000-8100/any`.
pub fn parse_grant_connect(text: &str) -> Result<GrantTarget, String> {
    let (cidr, ports, protocol) =
        super::split_connect(text, "CIDR:PORT/PROTO, e.g. 10.0.0.0/8:443/tcp", true)?;
    let port = super::port;
    let (port_lo, port_hi) = match ports.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(ports)?, port(ports)?),
    };
    Ok(GrantTarget::Connect { cidr: cidr.to_owned(), port_lo, port_hi, protocol })
}

pub fn grant(
    socket: &Path,
    identity: &str,
    target: &GrantTarget,
    ttl: &str,
    reason: &str,
    output: Output,
) -> ExitCode {
    let body = serde_json::json!({"identity": identity, "target": target, "ttl": ttl, "reason": reason});
    match send(socket, Method::POST, "/v1/grants", Some(body)) {
        Ok(v) => {
            show(&v, output, |v| format!("grant {} for {identity} until {}", v["id"], text(&v["expires"])))
        }
        Err(code) => code,
    }
}

pub fn grants(socket: &Path, output: Output) -> ExitCode {
    match send(socket, Method::GET, "/v1/grants", None) {
        Ok(v) => show(&v, output, |v| {
            let mut out = format!("{:<5} {:<20} {:<40} {:<31} REASON", "ID", "IDENTITY", "TARGET", "EXPIRES");
            for g in v.as_array().into_iter().flatten() {
                let t = &g["target"];
                let target = match t["kind"].as_str() {
                    Some("connect") => {
                        format!(
                            "connect {}:{}-{}/{}",
                            text(&t["cidr"]),
                            t["portLo"],
                            t["portHi"],
                            text(&t["protocol"])
                        )
                    }
                    Some("file") => format!("file {} {}", text(&t["path"]), t["access"]),
                    _ => format!("exec {}", text(&t["path"])),
                };
                let _ = write!(
                    out,
                    "\n{:<5} {:<20} {target:<40} {:<31} {}",
                    g["id"],
                    text(&g["identity"]),
                    text(&g["expires"]),
                    text(&g["reason"])
                );
            }
            out
        }),
        Err(code) => code,
    }
}

pub fn revoke_grant(socket: &Path, id: u32, output: Output) -> ExitCode {
    match send(socket, Method::DELETE, &format!("/v1/grants/{id}"), None) {
        Ok(v) => show(&v, output, |_| format!("grant {id} revoked")),
        Err(code) => code,
    }
}

pub fn approvals(socket: &Path, output: Output) -> ExitCode {
    match send(socket, Method::GET, "/v1/approvals", None) {
        Ok(v) => show(&v, output, |v| {
            let mut out =
                format!("{:<5} {:<20} {:<44} {:>8}  PROCESS", "ID", "IDENTITY", "TARGET", "ATTEMPTS");
            for a in v.as_array().into_iter().flatten() {
                let t = &a["target"];
                let target = match t["kind"].as_str() {
                    Some("connect") => {
                        format!("connect {}:{}/{}", text(&t["cidr"]), t["portLo"], text(&t["protocol"]))
                    }
                    Some("file") => format!("file {} {}", text(&t["path"]), t["access"]),
                    _ => format!("exec {}", text(&t["path"])),
                };
                let _ = write!(
                    out,
                    "\n{:<5} {:<20} {target:<44} {:>8}  pid {} {}",
                    a["id"],
                    text(&a["identity"]),
                    a["attempts"],
                    a["pid"],
                    text(&a["comm"])
                );
            }
            out
        }),
        Err(code) => code,
    }
}

pub fn answer(
    socket: &Path,
    id: u32,
    approve: bool,
    ttl: Option<&str>,
    reason: Option<&str>,
    output: Output,
) -> ExitCode {
    let verb = if approve { "approve" } else { "deny" };
    let body = serde_json::json!({"ttl": ttl, "reason": reason});
    match send(socket, Method::POST, &format!("/v1/approvals/{id}/{verb}"), Some(body)) {
        Ok(v) => show(&v, output, |v| {
            if approve {
                format!(
                    "request {id} approved: grant {} until {}",
                    v["grant"]["id"],
                    text(&v["grant"]["expires"])
                )
            } else {
                format!("request {id} denied")
            }
        }),
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Protocol;

    #[test]
    fn parses_grant_targets() {
        assert_eq!(
            parse_grant_connect("10.0.0.0/8:443/tcp").unwrap(),
            GrantTarget::Connect {
                cidr: "10.0.0.0/8".into(),
                port_lo: 443,
                port_hi: 443,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            parse_grant_connect("[2001:db8::/32]:8000-8100/any").unwrap(),
            GrantTarget::Connect {
                cidr: "2001:db8::/32".into(),
                port_lo: 8000,
                port_hi: 8100,
                protocol: Protocol::Any
            }
        );
        assert!(parse_grant_connect("10.0.0.0/8:443").is_err());
        assert!(parse_grant_connect("10.0.0.0/8/tcp").is_err());
    }
}
