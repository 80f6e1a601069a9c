//! The operator verbs of the `enforcer` command, one module each.
//!
//! Exit codes: 0 success; 1 failure (agent unreachable, internal error); 2 invalid input
//! (bad arguments, invalid policy, request refused as malformed); 3 not found; 4 the
//! caller may not use the API.

pub mod args;
pub mod cluster;
pub mod live;
pub mod oci_hook;
pub mod policy;
pub mod status;
pub mod verdicts;

use std::process::ExitCode;

use crate::api::client::ClientError;

/// Output format of a verb.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A runtime for one CLI call.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// Prints the error and returns its exit code.
pub fn fail(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

/// `HOST:PORTS/PROTO` split into its parts, the shape of both `check --connect`
/// (`10.0.0.1:443/tcp`) and `grant --connect` (`10.0.0.0/8:8000-8100/any`); an IPv6 host
/// goes in brackets (`[::1]:53/udp`). `any` admits the protocol `any`.
pub fn split_connect<'a>(
    text: &'a str,
    shape: &str,
    any: bool,
) -> Result<(&'a str, &'a str, crate::policy::model::Protocol), String> {
    use crate::policy::model::Protocol;
    let usage = || format!("{text:?}: expected {shape}");
    let (rest, proto) = text.rsplit_once('/').ok_or_else(usage)?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "any" if any => Protocol::Any,
        other if any => return Err(format!("protocol {other:?}: use tcp, udp or any")),
        other => return Err(format!("protocol {other:?}: use tcp or udp")),
    };
    let (host, ports) = rest.rsplit_once(':').ok_or_else(usage)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Ok((host, ports, protocol))
}

/// A port number, or an error naming it.
pub fn port(text: &str) -> Result<u16, String> {
    text.parse::<u16>().map_err(|_| format!("{text:?} is not a port"))
}

pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).expect("serialises"));
}
