//! What the policy in force says about an action, without performing it — the same
//! semantics the kernel programs apply (`enforcer check`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    model::{Access, Action, Mode, Protocol},
    validate::{PathRuleSpec, Valid, normalise},
};

/// An action to explain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Request {
    Exec { path: String },
    File { path: String, access: Vec<Access> },
    Connect { address: IpAddr, port: u16, protocol: Protocol },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// `allow`, `deny` or `audit`.
    pub decision: String,
    /// `exec[i]`, `file[i]`, `network[i]` or `default`.
    pub rule: String,
    /// The deciding rule or default, in words.
    pub because: String,
}

/// Explains `request` for `policy`. Errors name a malformed request (relative path, …).
pub fn evaluate(policy: &Valid, request: &Request) -> Result<Explanation, String> {
    if let Request::Exec { path } = request {
        // As the kernel judges an exec: its own open of the program is a read, judged by
        // the file rules first; a read not allowed decides.
        let read = evaluate(policy, &program_read(path))?;
        if read.decision != "allow" {
            return Ok(read);
        }
    }
    let (action, rule, because) = match request {
        Request::Exec { path } => {
            let path = normalise(path)?;
            decide_path(&policy.exec, &path, |_| true, policy.defaults.exec, "exec")
        }
        Request::File { path, access } => {
            let path = normalise(path)?;
            if access.is_empty() {
                return Err("access must name read, write or both".to_owned());
            }
            let decide = |wanted: Access| {
                decide_path(
                    &policy.file,
                    &path,
                    |r| if wanted == Access::Read { r.read } else { r.write },
                    policy.defaults.file,
                    "file",
                )
            };
            // As the kernel judges an open: read first; an open for both needs both, and
            // the first access not allowed decides (else the write judgement).
            let read = decide(Access::Read);
            if !access.contains(&Access::Write) {
                read
            } else if !access.contains(&Access::Read) || read.0 == Action::Allow {
                decide(Access::Write)
            } else {
                read
            }
        }
        Request::Connect { address, port, protocol } => decide_net(policy, *address, *port, *protocol),
    };
    Ok(explained(policy, action, rule, because))
}

fn explained(policy: &Valid, action: Action, rule: String, because: String) -> Explanation {
    let decision = match (action, policy.mode) {
        (Action::Allow, _) => "allow",
        (Action::Deny, Mode::Enforce) => "deny",
        (Action::Deny | Action::Approve, Mode::Audit) => "audit",
        (Action::Approve, Mode::Enforce) => "pending",
    };
    Explanation { decision: decision.to_owned(), rule, because }
}

/// The read of the program at `path` that the kernel's own open for `execve` asks for.
#[must_use]
pub fn program_read(path: &str) -> Request {
    Request::File { path: path.to_owned(), access: vec![Access::Read] }
}

/// [`evaluate`] of an exec by the exec rules alone, its program's read left aside.
pub fn exec_rules(policy: &Valid, path: &str) -> Result<Explanation, String> {
    let path = normalise(path)?;
    let (action, rule, because) = decide_path(&policy.exec, &path, |_| true, policy.defaults.exec, "exec");
    Ok(explained(policy, action, rule, because))
}

fn covers(rule: &PathRuleSpec, path: &str) -> bool {
    if rule.dir {
        path == rule.path || path.strip_prefix(rule.path.as_str()).is_some_and(|rest| rest.starts_with('/'))
    } else {
        path == rule.path
    }
}

/// Most specific rule deciding the access: exact beats dir, longer dir beats shorter.
fn decide_path(
    rules: &[PathRuleSpec],
    path: &str,
    decides: impl Fn(&PathRuleSpec) -> bool,
    default: Action,
    resource: &str,
) -> (Action, String, String) {
    let best = rules.iter().filter(|r| decides(r) && covers(r, path)).max_by_key(|r| (!r.dir, r.path.len()));
    match best {
        Some(r) => (
            r.action,
            format!("{resource}[{}]", r.index),
            format!("{} {} → {}", if r.dir { "dir" } else { "path" }, r.path, action_name(r.action)),
        ),
        None => (
            default,
            "default".to_owned(),
            format!("no {resource} rule matches; default {}", action_name(default)),
        ),
    }
}

fn decide_net(policy: &Valid, address: IpAddr, port: u16, protocol: Protocol) -> (Action, String, String) {
    let addr = super::net::v6_form(address);
    let mut candidates: Vec<_> =
        policy.network.iter().filter(|r| super::net::contains(&r.addr, r.prefix_len, &addr)).collect();
    candidates.sort_by_key(|r| (std::cmp::Reverse(r.prefix_len), r.index));
    let hit = candidates.into_iter().find(|r| {
        (r.protocol == Protocol::Any || r.protocol == protocol) && (r.port_lo..=r.port_hi).contains(&port)
    });
    match hit {
        Some(r) => (
            r.action,
            format!("network[{}]", r.index),
            format!(
                "{} ports {}-{} {:?} → {}",
                r.cidr,
                r.port_lo,
                r.port_hi,
                r.protocol,
                action_name(r.action)
            )
            .to_lowercase(),
        ),
        None => (
            policy.defaults.network,
            "default".to_owned(),
            format!("no network rule matches; default {}", action_name(policy.defaults.network)),
        ),
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Approve => "approve",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::{parse, validate_set};

    fn policy() -> Valid {
        let yaml = r"
apiVersion: enforcer.dev/v1
kind: Policy
metadata: {name: p}
spec:
  selector: {cgroupPath: /a}
  defaults: {network: deny}
  exec:
    - {dir: /opt/tools, action: deny}
  file:
    - {dir: /etc/app, access: [read], action: allow}
    - {dir: /etc, action: deny}
    - {path: /etc/app/config, access: [write], action: allow}
  network:
    - {cidr: 10.0.0.0/8, ports: 443, protocol: tcp, action: allow}
    - {cidr: 10.1.0.0/16, ports: 443, protocol: udp, action: deny}
";
        validate_set(&parse("t", yaml).unwrap()).unwrap().remove(0)
    }

    fn check(request: &Request) -> (String, String) {
        let e = evaluate(&policy(), request).unwrap();
        (e.decision, e.rule)
    }

    fn s(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn exec_and_file_follow_most_specific_rule() {
        assert_eq!(check(&Request::Exec { path: "/opt/tools/sh".into() }), s("deny", "exec[0]"));
        assert_eq!(check(&Request::Exec { path: "/opt/toolsx".into() }), s("allow", "default"));
        // Running a program reads it: a program whose reading is denied is refused.
        assert_eq!(check(&Request::Exec { path: "/etc/tool".into() }), s("deny", "file[1]"));
        assert_eq!(check(&Request::Exec { path: "/etc/app/tool".into() }), s("allow", "default"));
        let file = |path: &str, access: Vec<Access>| Request::File { path: path.into(), access };
        assert_eq!(check(&file("/etc/app/x", vec![Access::Read])), s("allow", "file[0]"));
        assert_eq!(check(&file("/etc/app/x", vec![Access::Write])), s("deny", "file[1]"));
        assert_eq!(check(&file("/etc/app/config", vec![Access::Write])), s("allow", "file[2]"));
        assert_eq!(check(&file("/etc/app/config", vec![Access::Read, Access::Write])), s("allow", "file[2]"));
        assert_eq!(check(&file("/etc/passwd", vec![Access::Read, Access::Write])), s("deny", "file[1]"));
        assert_eq!(check(&file("/tmp/x", vec![Access::Read])), s("allow", "default"));
        assert!(evaluate(&policy(), &file("etc", vec![Access::Read])).is_err());
    }

    #[test]
    fn network_takes_longest_prefix_then_falls_back() {
        let connect =
            |a: &str, port, protocol| Request::Connect { address: a.parse().unwrap(), port, protocol };
        assert_eq!(check(&connect("10.1.2.3", 443, Protocol::Udp)), s("deny", "network[1]"));
        assert_eq!(check(&connect("10.1.2.3", 443, Protocol::Tcp)), s("allow", "network[0]"));
        assert_eq!(check(&connect("::ffff:10.9.9.9", 443, Protocol::Tcp)), s("allow", "network[0]"));
        assert_eq!(check(&connect("10.1.2.3", 80, Protocol::Tcp)), s("deny", "default"));
    }
}
