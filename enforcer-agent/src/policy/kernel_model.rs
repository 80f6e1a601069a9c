//! A user-space model of the kernel programs' lookups, run over a compiled set: the same
//! keys, the same walk over path prefixes, the same longest-prefix match and rule scan.
//! It exists so the differential test can compare the kernel's matching with
//! [`super::evaluate`] on every query; it must follow `enforcer-ebpf` step by step.

use enforcer_common::{
    maps::{IdentityConfig, NetEntry, PathRule, path_kind},
    path_hash,
    verdict::{RULE_DEFAULT, action, mode, proto},
};

use super::{
    compiled::{CompiledSet, PathRuleKey},
    evaluate::Request,
    model::{Access, Protocol},
};

/// (decision, rule) as `enforcer check` spells them: `allow`/`deny`/`audit`/`pending`,
/// `exec[i]`/`file[i]`/`network[i]`/`default`.
pub fn decide(set: &CompiledSet, identity: u32, request: &Request) -> (String, String) {
    let config = set.identities.iter().find(|(id, _)| *id == identity).expect("identity in the set").1;
    let (judged, resource) = match request {
        Request::Exec { path } => {
            // `lsm.rs::file_open`: the kernel's own open of the program is judged as a read
            // before `bprm_check_security` judges the exec.
            let (read, _) = scan(set, identity, path, path_kind::FILE_EXACT, path_kind::FILE_DIR);
            let read = from_rule(read, config.file_default);
            if read.0 == action::ALLOW {
                let found = scan(set, identity, path, path_kind::EXEC_EXACT, path_kind::EXEC_DIR);
                (from_rule(found.0, config.exec_default), "exec")
            } else {
                (read, "file")
            }
        }
        Request::File { path, access } => {
            let (read, write) = scan(set, identity, path, path_kind::FILE_EXACT, path_kind::FILE_DIR);
            (file_judgement(config, read, write, access), "file")
        }
        Request::Connect { address, port, protocol } => {
            let addr = match address {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            let protocol = match protocol {
                Protocol::Tcp => proto::TCP,
                Protocol::Udp => proto::UDP,
                Protocol::Any => proto::ANY,
            };
            (from_rule(net_rule(set, identity, addr, *port, protocol), config.net_default), "network")
        }
    };
    let decision = if judged.0 == action::ALLOW {
        "allow"
    } else if config.mode == mode::AUDIT {
        "audit"
    } else if judged.0 == action::APPROVE {
        "pending"
    } else {
        "deny"
    };
    let rule =
        if judged.1 == RULE_DEFAULT { "default".to_owned() } else { format!("{resource}[{}]", judged.1) };
    (decision.to_owned(), rule)
}

fn from_rule(found: (u8, u32), default: u8) -> (u8, u32) {
    if found.0 == action::NONE { (default, RULE_DEFAULT) } else { found }
}

/// `lsm.rs::file_judgement`: read first; an open for both needs both.
fn file_judgement(config: IdentityConfig, read: (u8, u32), write: (u8, u32), access: &[Access]) -> (u8, u32) {
    let read = from_rule(read, config.file_default);
    if !access.contains(&Access::Write) {
        return read;
    }
    let write = from_rule(write, config.file_default);
    if !access.contains(&Access::Read) || read.0 == action::ALLOW {
        return write;
    }
    read
}

/// `path.rs::lookup`: every directory prefix (at each `/` after the first byte), then the
/// whole path as a directory, then as an exact path; a later hit overrides per access.
fn scan(set: &CompiledSet, identity: u32, path: &str, exact: u8, dir: u8) -> ((u8, u32), (u8, u32)) {
    let bytes = path.as_bytes();
    let mut found = ((action::NONE, 0), (action::NONE, 0));
    for (at, byte) in bytes.iter().enumerate() {
        if *byte == b'/' && at > 0 {
            apply(&mut found, lookup(set, identity, dir, &bytes[..at]));
        }
    }
    apply(&mut found, lookup(set, identity, dir, bytes));
    apply(&mut found, lookup(set, identity, exact, bytes));
    found
}

fn lookup(set: &CompiledSet, identity: u32, kind: u8, bytes: &[u8]) -> Option<PathRule> {
    let key = PathRuleKey { identity, kind, hash: path_hash(bytes), len: u16::try_from(bytes.len()).ok()? };
    set.path_rules.iter().find(|(k, _)| *k == key).map(|(_, rule)| *rule)
}

fn apply(found: &mut ((u8, u32), (u8, u32)), rule: Option<PathRule>) {
    let Some(rule) = rule else { return };
    if rule.read_action != action::NONE {
        found.0 = (rule.read_action, rule.read_rule);
    }
    if rule.write_action != action::NONE {
        found.1 = (rule.write_action, rule.write_rule);
    }
}

/// `sock.rs::rule_for`: the longest prefix entry of the identity covering `addr`, then
/// its rules in order until one matches port and protocol.
fn net_rule(set: &CompiledSet, identity: u32, addr: [u8; 16], port: u16, protocol: u8) -> (u8, u32) {
    let covering = set
        .net_rules
        .iter()
        .filter(|(p, _)| p.identity == identity && within(&p.addr, p.prefix_len, &addr))
        .max_by_key(|(p, _)| p.prefix_len);
    let Some((_, entry)) = covering else { return (action::NONE, 0) };
    let entry: &NetEntry = entry;
    entry
        .rules
        .iter()
        .take(entry.count as usize)
        .find(|r| (r.proto == proto::ANY || r.proto == protocol) && (r.port_lo..=r.port_hi).contains(&port))
        .map_or((action::NONE, 0), |r| (r.action, r.rule))
}

/// The trie's bitwise prefix match, written out here on purpose: the model should not
/// share the agent's CIDR code it is compared against.
fn within(prefix: &[u8; 16], len: u8, addr: &[u8; 16]) -> bool {
    let bits = u128::from_be_bytes(*prefix) ^ u128::from_be_bytes(*addr);
    len == 0 || bits >> (128 - u32::from(len)) == 0
}
