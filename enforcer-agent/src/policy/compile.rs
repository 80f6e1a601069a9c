//! Turning validated policies into map entries (pure: no kernel I/O).
//!
//! Matching semantics the entries encode:
//! - exec and file: the most specific rule wins — an exact `path` rule over any `dir`
//!   rule, a longer `dir` over a shorter one. Read and write are decided separately; an
//!   open for both needs both allowed. No rule: the resource default.
//! - network: the longest matching CIDR wins; among rules of that CIDR the first in
//!   document order whose port and protocol match; if none matches there, the rules of
//!   the next shorter covering CIDR are tried, and so on; then the default.

use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};

use enforcer_common::{
    MAX_NET_RULES_PER_PREFIX, capacity,
    maps::{BINDING_SUBTREE, Binding, IdentityConfig, NetEntry, NetRule, PathRule, path_kind},
    path_hash,
    verdict::{
        IDENTITY_ALLOW_FILELESS_EXEC, IDENTITY_ALLOW_MOUNTS, IDENTITY_ALLOW_MOVES,
        IDENTITY_ALLOW_RAW_SOCKETS, IDENTITY_HAS_RUNTIMES, IDENTITY_LOG_ALLOW, action, mode, proto,
    },
};

use super::{
    compiled::{CompiledSet, NetPrefix, PathRuleKey},
    model::{Action, Mode, Protocol},
    validate::{NetRuleSpec, PolicyError, Valid},
};

/// A cgroup found to belong to an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBinding {
    pub identity: String,
    pub cgroup_id: u64,
    pub subtree: bool,
}

fn action_code(a: Action) -> u8 {
    match a {
        Action::Allow => action::ALLOW,
        Action::Deny => action::DENY,
        Action::Approve => action::APPROVE,
    }
}

fn proto_code(p: Protocol) -> u8 {
    match p {
        Protocol::Any => proto::ANY,
        Protocol::Tcp => proto::TCP,
        Protocol::Udp => proto::UDP,
    }
}

pub fn compile(
    policies: &[Valid],
    ids: &BTreeMap<String, u32>,
    bindings: &[ResolvedBinding],
    generation: u64,
) -> Result<CompiledSet, PolicyError> {
    let mut set = CompiledSet { generation, ..CompiledSet::default() };
    let mut paths: BTreeMap<PathRuleKey, (PathRule, String)> = BTreeMap::new();
    for policy in policies {
        let id = *ids.get(&policy.identity).expect("every identity has an id");
        set.identities.push((
            id,
            IdentityConfig {
                mode: if policy.mode == Mode::Audit { mode::AUDIT } else { mode::ENFORCE },
                exec_default: action_code(policy.defaults.exec),
                file_default: action_code(policy.defaults.file),
                net_default: action_code(policy.defaults.network),
                listen_default: action_code(policy.defaults.listen),
                pad: [0; 3],
                flags: flags(policy),
            },
        ));
        let doc = format!("policy {:?}", policy.name);
        for rule in &policy.exec {
            let kind = if rule.dir { path_kind::EXEC_DIR } else { path_kind::EXEC_EXACT };
            add_path(&mut paths, &doc, id, kind, &rule.path, Some((rule.action, rule.index)), None)?;
        }
        for rule in &policy.file {
            let kind = if rule.dir { path_kind::FILE_DIR } else { path_kind::FILE_EXACT };
            let decided = (rule.action, rule.index);
            add_path(
                &mut paths,
                &doc,
                id,
                kind,
                &rule.path,
                rule.read.then_some(decided),
                rule.write.then_some(decided),
            )?;
        }
        // Runtimes are matched by file identity only: their entries exist to give the
        // executables' device and inode when the set is installed.
        for path in &policy.runtimes {
            add_path(&mut paths, &doc, id, path_kind::RUNTIME, path, Some((Action::Allow, 0)), None)?;
        }
        compile_network(&mut set, &doc, id, &policy.network)?;
        if !policy.listen.is_empty() {
            let rules = policy.listen.iter().map(|r| (r.port_lo, r.port_hi, r.protocol, r.action, r.index));
            set.listen_rules.push((id, net_entry(rules)));
        }
    }
    set.path_names = paths.iter().map(|(k, (_, name))| (*k, name.clone())).collect();
    set.path_rules = paths.into_iter().map(|(k, (v, _))| (k, v)).collect();
    set.bindings = kernel_bindings(bindings, ids);
    check_totals(&Totals {
        identities: set.identities.len(),
        path_rules: set.path_rules.len(),
        net_prefixes: set.net_rules.len(),
        bindings: set.bindings.len(),
    })?;
    Ok(set)
}

/// The map entries of `bindings` (those of identities without a number are skipped).
pub fn kernel_bindings(bindings: &[ResolvedBinding], ids: &BTreeMap<String, u32>) -> Vec<(u64, Binding)> {
    bindings
        .iter()
        .filter_map(|binding| {
            let id = ids.get(&binding.identity)?;
            Some((
                binding.cgroup_id,
                Binding { identity: *id, flags: if binding.subtree { BINDING_SUBTREE } else { 0 } },
            ))
        })
        .collect()
}

/// How many entries of each kind a compiled set puts in one slot.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub identities: usize,
    pub path_rules: usize,
    pub net_prefixes: usize,
    pub bindings: usize,
}

/// Refuses a set whose entries do not fit in one slot.
pub fn check_totals(totals: &Totals) -> Result<(), PolicyError> {
    check_capacity("identities", totals.identities, capacity::IDENTITIES)?;
    check_capacity("exec and file rules", totals.path_rules, capacity::PATH_RULES)?;
    check_capacity("network prefixes", totals.net_prefixes, capacity::NET_PREFIXES)?;
    check_capacity("cgroup bindings", totals.bindings, capacity::CGROUP_BINDINGS)
}

/// The identity's `IDENTITY_*` flags.
fn flags(policy: &Valid) -> u32 {
    let spec = &policy.source.spec;
    [
        (policy.log_allowed, IDENTITY_LOG_ALLOW),
        (policy.allow_cgroup_moves, IDENTITY_ALLOW_MOVES),
        (spec.allow_mounts, IDENTITY_ALLOW_MOUNTS),
        (spec.allow_raw_sockets, IDENTITY_ALLOW_RAW_SOCKETS),
        (spec.allow_fileless_exec, IDENTITY_ALLOW_FILELESS_EXEC),
        (!policy.runtimes.is_empty(), IDENTITY_HAS_RUNTIMES),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |bits, (_, bit)| bits | bit)
}

/// Each slot holds one set, so a set may use half of each map.
fn check_capacity(what: &str, used: usize, map_capacity: u32) -> Result<(), PolicyError> {
    let limit = (map_capacity / enforcer_common::SLOTS) as usize;
    if used > limit {
        return Err(PolicyError::new(
            "policy set",
            "(set)",
            format!("{used} {what} exceed the limit of {limit}"),
        ));
    }
    Ok(())
}

fn add_path(
    paths: &mut BTreeMap<PathRuleKey, (PathRule, String)>,
    doc: &str,
    identity: u32,
    kind: u8,
    path: &str,
    read: Option<(Action, u32)>,
    write: Option<(Action, u32)>,
) -> Result<(), PolicyError> {
    let key = PathRuleKey {
        identity,
        kind,
        hash: path_hash(path.as_bytes()),
        len: u16::try_from(path.len()).expect("validated path length"),
    };
    let entry = match paths.entry(key) {
        Entry::Vacant(v) => v.insert((PathRule::empty(), path.to_owned())),
        Entry::Occupied(o) => {
            let existing = o.into_mut();
            if existing.1 != path {
                return Err(PolicyError::new(
                    doc,
                    "(rules)",
                    format!("paths {:?} and {path:?} hash alike; rename one", existing.1),
                ));
            }
            existing
        }
    };
    if let Some((a, index)) = read {
        entry.0.read_action = action_code(a);
        entry.0.read_rule = index;
    }
    if let Some((a, index)) = write {
        entry.0.write_action = action_code(a);
        entry.0.write_rule = index;
    }
    Ok(())
}

/// A kernel rule list from (port range, protocol, action, rule index), in order; callers
/// check there are at most [`MAX_NET_RULES_PER_PREFIX`].
fn net_entry(rules: impl Iterator<Item = (u16, u16, Protocol, Action, u32)>) -> NetEntry {
    let mut entry = NetEntry { count: 0, pad: 0, rules: [NetRule::default(); MAX_NET_RULES_PER_PREFIX] };
    for (slot, (port_lo, port_hi, protocol, action, rule)) in entry.rules.iter_mut().zip(rules) {
        *slot = NetRule {
            port_lo,
            port_hi,
            proto: proto_code(protocol),
            action: action_code(action),
            pad: 0,
            rule,
        };
        entry.count += 1;
    }
    entry
}

/// One entry per distinct CIDR of the identity. Rules are grouped by CIDR once, and each
/// CIDR finds the rules of the CIDRs covering it by looking up its own address cut to each
/// shorter prefix length in use (at most 129), so the work is O(n log n), not O(n²).
fn compile_network(
    set: &mut CompiledSet,
    doc: &str,
    identity: u32,
    rules: &[NetRuleSpec],
) -> Result<(), PolicyError> {
    // Rules of each CIDR, in document order.
    let mut by_cidr: BTreeMap<([u8; 16], u8), Vec<&NetRuleSpec>> = BTreeMap::new();
    for rule in rules {
        by_cidr.entry((rule.addr, rule.prefix_len)).or_default().push(rule);
    }
    let lengths: BTreeSet<u8> = by_cidr.keys().map(|(_, len)| *len).collect();
    for ((addr, prefix_len), own) in &by_cidr {
        // Own rules first, then those of ever shorter covering prefixes; document order within.
        let mut applicable: Vec<&NetRuleSpec> = own.clone();
        for len in lengths.range(..*prefix_len).rev() {
            if let Some(wider) = by_cidr.get(&(super::net::masked(addr, *len), *len)) {
                applicable.extend(wider);
            }
        }
        if applicable.len() > MAX_NET_RULES_PER_PREFIX {
            let cidr = &applicable[0].cidr;
            return Err(PolicyError::new(
                doc,
                "spec.network",
                format!(
                    "{} rules apply to destinations in {cidr} (its own and those of wider CIDRs); the limit is {MAX_NET_RULES_PER_PREFIX}",
                    applicable.len()
                ),
            ));
        }
        let rules = applicable.iter().map(|r| (r.port_lo, r.port_hi, r.protocol, r.action, r.index));
        set.net_rules.push((NetPrefix { identity, addr: *addr, prefix_len: *prefix_len }, net_entry(rules)));
    }
    Ok(())
}
