//! What `enforcer check` answers once live state is taken into account, in the kernel's
//! precedence: a revoked credential, then a quarantine, then the policy, then a grant
//! that lifts a policy denial (never a live one). Mirrors `enforcer-ebpf` `lsm.rs` and
//! `sock.rs`; the policy part is [`evaluate`].

use std::net::IpAddr;

use enforcer_common::verdict::restrict;

use crate::{
    daemon::live::{GrantTarget, LiveState},
    policy::{
        evaluate::{Explanation, Request, evaluate, exec_rules, program_read},
        model::{Access, Protocol},
        net::{self, cidr},
        validate::{Valid, normalise},
    },
};

/// Explains `request` for `policy` with `live` state as of `now_unix_ns`.
pub fn explain(
    live: &LiveState,
    policy: &Valid,
    request: &Request,
    now_unix_ns: i64,
) -> Result<Explanation, String> {
    let quarantined = if live.quarantines.contains_key(&policy.identity) {
        policy.source.spec.quarantine.restricts()
    } else {
        0
    };
    let live_grants = || {
        live.grants.values().filter(move |g| g.identity == policy.identity && g.expires_unix_ns > now_unix_ns)
    };
    match request {
        Request::Exec { path } => {
            // As the kernel judges an exec: its own open of the program is a read, judged
            // (revoked credential, quarantine, policy, grant) first; a read not allowed
            // decides.
            let read = explain(live, policy, &program_read(path), now_unix_ns)?;
            if read.decision != "allow" {
                return Ok(read);
            }
            if quarantined & restrict::EXEC != 0 {
                return Ok(quarantine("exec"));
            }
            let path = normalise(path)?;
            let judged = exec_rules(policy, &path)?;
            let grant =
                live_grants().find(|g| matches!(&g.target, GrantTarget::Exec { path: p } if *p == path));
            Ok(granted(judged, grant.map(|g| g.id)))
        }
        Request::File { path, access } => {
            let normal = normalise(path)?;
            if let Some(revoked) = live.revoked.get(&normal) {
                return Ok(Explanation {
                    decision: "deny".to_owned(),
                    rule: format!("credential[{}]", revoked.id),
                    because: format!("{normal} is a revoked credential: denied to every identity"),
                });
            }
            let (read, write) = (access.contains(&Access::Read), access.contains(&Access::Write));
            let bits =
                if read { restrict::FILE_READ } else { 0 } | if write { restrict::FILE_WRITE } else { 0 };
            if quarantined & bits != 0 {
                return Ok(quarantine("this file access"));
            }
            // Each access judged and granted on its own, then combined as the kernel does.
            let one = |wanted: Access| -> Result<Explanation, String> {
                let judged = evaluate(policy, &Request::File { path: path.clone(), access: vec![wanted] })?;
                let grant = live_grants().find(|g| {
                    matches!(&g.target, GrantTarget::File { path: p, access } if *p == normal && access.contains(&wanted))
                });
                Ok(granted(judged, grant.map(|g| g.id)))
            };
            let read_judged = one(Access::Read)?;
            if !write {
                return Ok(read_judged);
            }
            if !read || read_judged.decision == "allow" {
                return one(Access::Write);
            }
            Ok(read_judged)
        }
        Request::Connect { address, port, protocol } => {
            if quarantined & restrict::NETWORK != 0 {
                return Ok(quarantine("network"));
            }
            let judged = evaluate(policy, request)?;
            Ok(granted(judged, net_grant(live_grants(), *address, *port, *protocol)))
        }
    }
}

fn quarantine(what: &str) -> Explanation {
    Explanation {
        decision: "deny".to_owned(),
        rule: "quarantine".to_owned(),
        because: format!("the identity is quarantined: {what} denied"),
    }
}

/// A policy denial (or audit, or pending) lifted by a grant, as the kernel's
/// `granted_path`/`granted_net` do.
fn granted(judged: Explanation, grant: Option<u32>) -> Explanation {
    match grant {
        Some(id) if judged.decision != "allow" => Explanation {
            decision: "allow".to_owned(),
            rule: format!("grant[{id}]"),
            because: format!("grant {id} allows it until it expires ({})", judged.because),
        },
        _ => judged,
    }
}

/// The kernel keeps network grants in an LPM trie: the grant with the longest CIDR that
/// covers the address decides, and only if its ports and protocol match.
fn net_grant<'a>(
    grants: impl Iterator<Item = &'a crate::daemon::live::GrantEntry>,
    address: IpAddr,
    port: u16,
    protocol: Protocol,
) -> Option<u32> {
    let addr = net::v6_form(address);
    let covering = grants
        .filter_map(|g| match &g.target {
            GrantTarget::Connect { cidr: text, port_lo, port_hi, protocol: p } => {
                let (prefix, bits) = cidr(text).ok()?;
                net::contains(&prefix, bits, &addr).then_some((bits, g.id, *port_lo, *port_hi, *p))
            }
            _ => None,
        })
        .max_by_key(|(bits, ..)| *bits)?;
    let (_, id, lo, hi, p) = covering;
    ((p == Protocol::Any || p == protocol) && (lo..=hi).contains(&port)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::{parse, validate_set};

    fn policy() -> Valid {
        let yaml = "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {cgroupPath: /p}\n  mode: audit\n  exec:\n    - {path: /bin/tool, action: deny}\n  file:\n    - {path: /secret, action: deny}\n  network:\n    - {cidr: 10.0.0.0/8, action: deny}\n";
        validate_set(&parse("t", yaml).unwrap()).unwrap().remove(0)
    }

    fn answer(live: &LiveState, request: &Request) -> (String, String) {
        let e = explain(live, &policy(), request, 1_000).unwrap();
        (e.decision, e.rule)
    }

    fn s(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn live_state_comes_in_the_kernel_order() {
        let mut live = LiveState::default();
        let exec = Request::Exec { path: "/bin/tool".into() };
        let read = Request::File { path: "/secret".into(), access: vec![Access::Read] };
        let connect =
            Request::Connect { address: "10.1.1.1".parse().unwrap(), port: 443, protocol: Protocol::Tcp };
        // Policy alone: audit mode.
        assert_eq!(answer(&live, &exec), s("audit", "exec[0]"));
        // A grant lifts a policy verdict.
        live.add_grant("p", GrantTarget::Exec { path: "/bin/tool".into() }, 60, "r", 0, 0, "t".into())
            .unwrap();
        let net = GrantTarget::Connect {
            cidr: "10.1.0.0/16".into(),
            port_lo: 443,
            port_hi: 443,
            protocol: Protocol::Tcp,
        };
        live.add_grant("p", net, 60, "r", 0, 0, "t".into()).unwrap();
        assert_eq!(answer(&live, &exec), s("allow", "grant[1]"));
        assert_eq!(answer(&live, &connect), s("allow", "grant[2]"));
        // The longest covering grant decides, even when its port does not match.
        let wide = GrantTarget::Connect {
            cidr: "10.0.0.0/8".into(),
            port_lo: 80,
            port_hi: 80,
            protocol: Protocol::Any,
        };
        live.add_grant("p", wide, 60, "r", 0, 0, "t".into()).unwrap();
        let other_port =
            Request::Connect { address: "10.1.1.1".parse().unwrap(), port: 80, protocol: Protocol::Tcp };
        assert_eq!(answer(&live, &other_port), s("audit", "network[0]"));
        // A revoked credential and a quarantine deny even in audit mode, grants or not.
        live.revoke("/secret", "leaked", 0, "t".into()).unwrap();
        assert_eq!(answer(&live, &read), s("deny", "credential[1]"));
        // Running a program reads it: a revoked credential cannot be run either.
        assert_eq!(answer(&live, &Request::Exec { path: "/secret".into() }), s("deny", "credential[1]"));
        live.quarantines.insert(
            "p".into(),
            crate::daemon::live::QuarantineEntry { reason: "r".into(), uid: 0, since: "t".into() },
        );
        assert_eq!(answer(&live, &exec), s("deny", "quarantine"));
        assert_eq!(answer(&live, &connect), s("deny", "quarantine"));
        // An expired grant is no grant.
        let later = explain(
            &LiveState { quarantines: std::collections::BTreeMap::default(), ..live.clone() },
            &policy(),
            &exec,
            i64::MAX,
        );
        assert_eq!(later.unwrap().decision, "audit");
    }
}
