//! `enforcer status`, `enforcer identities` and `enforcer check`.

use std::{path::Path, process::ExitCode};

use hyper::Method;

use super::{Output, fail, print_json, runtime};
use crate::{
    api::{CheckRequest, IdentityInfo, Status, client::Client},
    policy::{
        evaluate::{Explanation, Request},
        model::{Access, Protocol},
    },
};

pub fn status(socket: &Path, output: Output) -> ExitCode {
    let s: Status = match runtime().block_on(Client::new(socket).call(Method::GET, "/v1/status", None)) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Output::Json = output {
        print_json(&s);
        return ExitCode::SUCCESS;
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("agent       enforcer {} (up {} s)", s.version, s.uptime_seconds);
    println!(
        "kernel      {} (BPF LSM {}, BTF {}{})",
        s.kernel,
        yes(s.bpf_lsm),
        yes(s.btf),
        if s.network_only { ", network only" } else { "" }
    );
    println!(
        "policy      generation {}, {} policies, {} identities, {} cgroups",
        s.generation, s.policies, s.identities, s.cgroups
    );
    println!("programs");
    for p in &s.programs {
        let verified = p.verified_insns.map(|n| format!("  {n} insns verified")).unwrap_or_default();
        let id = p.id.map(|n| format!("  id {n}")).unwrap_or_default();
        println!(
            "  {:<22} {:<34} {}{id}{verified}",
            p.name,
            p.hook,
            if p.attached { "attached" } else { "not attached" }
        );
    }
    println!("maps");
    for m in &s.maps {
        println!("  {:<22} {:>6} / {}", m.map, m.used, m.capacity);
    }
    println!("counters");
    for (name, value) in &s.counters {
        println!("  {name:<22} {value}");
    }
    println!("verdict log {}", s.log_file);
    ExitCode::SUCCESS
}

pub fn identities(socket: &Path, output: Output) -> ExitCode {
    let list: Vec<IdentityInfo> =
        match runtime().block_on(Client::new(socket).call(Method::GET, "/v1/identities", None)) {
            Ok(l) => l,
            Err(e) => return fail(&e),
        };
    if let Output::Json = output {
        print_json(&list);
        return ExitCode::SUCCESS;
    }
    println!("{:<24} {:<24} {:>9}  CGROUPS", "IDENTITY", "POLICY", "PROCESSES");
    for i in &list {
        let cgroups: Vec<String> =
            i.cgroups.iter().map(|c| format!("{} ({})", c.path, c.processes)).collect();
        let cgroups = if cgroups.is_empty() { "-".to_owned() } else { cgroups.join(", ") };
        println!("{:<24} {:<24} {:>9}  {cgroups}", i.identity, i.policy, i.processes);
    }
    ExitCode::SUCCESS
}

/// The action of `enforcer check`, from its flags.
pub struct Action {
    pub exec: Option<String>,
    pub file: Option<String>,
    pub access: Vec<Access>,
    pub connect: Option<String>,
}

/// `ADDR:PORT/PROTO` (IPv6 in brackets), e.g. `10.0.0.1:443/tcp`, `[::1]:53/udp`.
pub fn parse_connect(text: &str) -> Result<(std::net::IpAddr, u16, Protocol), String> {
    let (host, port, protocol) = super::split_connect(text, "ADDR:PORT/PROTO (IPv6 as [::1]:53/udp)", false)?;
    let addr = host.parse().map_err(|_| format!("{host:?} is not an IP address"))?;
    Ok((addr, super::port(port)?, protocol))
}

pub fn check(socket: &Path, identity: &str, action: Action, output: Output) -> ExitCode {
    let request = match (action.exec, action.file, action.connect) {
        (Some(path), None, None) => Request::Exec { path },
        (None, Some(path), None) => {
            if action.access.is_empty() {
                eprintln!("error: --file needs --access read, write or both");
                return ExitCode::from(2);
            }
            Request::File { path, access: action.access }
        }
        (None, None, Some(target)) => match parse_connect(&target) {
            Ok((address, port, protocol)) => Request::Connect { address, port, protocol },
            Err(e) => {
                eprintln!("error: --connect {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("error: give exactly one of --exec, --file, --connect");
            return ExitCode::from(2);
        }
    };
    let body =
        serde_json::to_string(&CheckRequest { identity: identity.to_owned(), request }).expect("serialises");
    let e: Explanation =
        match runtime().block_on(Client::new(socket).call(Method::POST, "/v1/check", Some(body))) {
            Ok(e) => e,
            Err(e) => return fail(&e),
        };
    match output {
        Output::Json => print_json(&e),
        Output::Text => println!("{} by {}: {}", e.decision, e.rule, e.because),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connect_targets() {
        assert_eq!(
            parse_connect("10.0.0.1:443/tcp").unwrap(),
            ("10.0.0.1".parse().unwrap(), 443, Protocol::Tcp)
        );
        assert_eq!(parse_connect("[::1]:53/udp").unwrap(), ("::1".parse().unwrap(), 53, Protocol::Udp));
        assert!(parse_connect("10.0.0.1:443").is_err());
        assert!(parse_connect("10.0.0.1/tcp").is_err());
        assert!(parse_connect("10.0.0.1:443/icmp").is_err());
    }
}
