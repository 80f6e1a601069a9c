//! Parsing YAML documents and checking them, before anything is applied.

use std::{collections::BTreeMap, fmt, sync::Arc};

use super::{
    model::{self, API_VERSION, Action, Mode, Policy, Ports, Protocol},
    yaml,
};
pub use super::{
    paths::{MAX_RULE_PATH, normalise},
    selector::SelectorSpec,
};

/// Largest number of rules of one resource in one policy: as many as a set's path entries,
/// so one policy can use the whole of a set (the set's limits are checked when compiled).
pub const MAX_RULES_PER_RESOURCE: usize =
    (enforcer_common::capacity::PATH_RULES / enforcer_common::SLOTS) as usize;
/// Largest number of policies (identities) in one set.
pub const MAX_POLICIES: usize = 1024;

/// A problem with one document: where, which field, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{document}: {field}: {problem}")]
pub struct PolicyError {
    pub document: String,
    pub field: String,
    pub problem: String,
}

impl PolicyError {
    pub fn new(document: impl fmt::Display, field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { document: document.to_string(), field: field.into(), problem: problem.into() }
    }
}

/// A policy that passed validation, with paths normalised and addresses parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    /// The document as written (kept for `policy get`, persistence and diffs).
    pub source: Policy,
    pub name: String,
    pub identity: String,
    pub selector: SelectorSpec,
    pub mode: Mode,
    pub log_allowed: bool,
    pub allow_cgroup_moves: bool,
    pub defaults: model::Defaults,
    pub exec: Vec<PathRuleSpec>,
    pub file: Vec<PathRuleSpec>,
    pub network: Vec<NetRuleSpec>,
    pub listen: Vec<ListenRuleSpec>,
    /// `spec.runtimes`, normalised.
    pub runtimes: Vec<String>,
}

/// Most container runtimes one policy names.
pub const MAX_RUNTIMES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRuleSpec {
    pub index: u32,
    /// Normalised absolute path without trailing slash.
    pub path: String,
    /// Directory rule (covers the directory and everything below it).
    pub dir: bool,
    pub read: bool,
    pub write: bool,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRuleSpec {
    pub index: u32,
    /// IPv6 form; IPv4 as IPv4-mapped.
    pub addr: [u8; 16],
    /// Prefix length in bits of `addr` (IPv4 /n becomes 96 + n).
    pub prefix_len: u8,
    /// The CIDR as written, for display.
    pub cidr: String,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: Protocol,
    pub action: Action,
}

/// A `listen` rule with its ports parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenRuleSpec {
    pub index: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: Protocol,
    pub action: Action,
}

/// Parses every YAML document in `text`; `source` names the file in errors.
pub fn parse(source: &str, text: &str) -> Result<Vec<Policy>, PolicyError> {
    if let Some(policies) = yaml::all(text) {
        return Ok(policies);
    }
    // Something does not fit: document by document, to name it.
    let mut policies = Vec::new();
    for (index, document) in yaml::documents(text).iter().enumerate() {
        match document.parse::<Option<Policy>>() {
            Ok(Some(policy)) => policies.push(policy),
            Ok(None) => {} // an empty document, e.g. after a trailing `---`
            Err(e) => {
                return Err(PolicyError::new(document_name(source, document, index), e.field, e.problem));
            }
        }
    }
    Ok(policies)
}

/// `file document N (name)`, with the name when the document has a readable one.
fn document_name(source: &str, document: &yaml::Document, index: usize) -> String {
    let name = document
        .parse::<serde_json::Value>()
        .ok()
        .and_then(|v| v.get("metadata")?.get("name")?.as_str().map(str::to_owned));
    match name {
        Some(name) => format!("{source} document {} ({name})", index + 1),
        None => format!("{source} document {}", index + 1),
    }
}

/// Validates a whole set: each document, then names and identities unique across it.
pub fn validate_set(policies: &[Policy]) -> Result<Vec<Valid>, PolicyError> {
    let valid = validate_set_reusing(policies, |_| None)?;
    Ok(valid.into_iter().map(|v| Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone())).collect())
}

/// [`validate_set`], taking from `known` the validated form of a document it already has
/// (the same document validated before), so a large unchanged policy is not checked again.
pub fn validate_set_reusing(
    policies: &[Policy],
    known: impl Fn(&Policy) -> Option<Arc<Valid>>,
) -> Result<Vec<Arc<Valid>>, PolicyError> {
    let valid = policies
        .iter()
        .map(|policy| known(policy).map_or_else(|| validate(policy).map(Arc::new), Ok))
        .collect::<Result<Vec<_>, _>>()?;
    check_set(&valid)?;
    Ok(valid)
}

/// The checks across a set: its size, and names and identities unique in it.
pub fn check_set(valid: &[Arc<Valid>]) -> Result<(), PolicyError> {
    if valid.len() > MAX_POLICIES {
        return Err(PolicyError::new(
            "policy set",
            "(set)",
            format!("{} policies exceed the limit of {MAX_POLICIES}", valid.len()),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut identities = BTreeMap::new();
    for v in valid {
        if !names.insert(v.name.as_str()) {
            return Err(PolicyError::new(&v.name, "metadata.name", "duplicate policy name in the set"));
        }
        if let Some(other) = identities.insert(v.identity.as_str(), v.name.as_str()) {
            return Err(PolicyError::new(
                &v.name,
                "spec.identity",
                format!("identity {:?} is already governed by policy {other:?}", v.identity),
            ));
        }
    }
    Ok(())
}

pub fn validate(policy: &Policy) -> Result<Valid, PolicyError> {
    let name = policy.metadata.name.clone();
    let doc = format!("policy {name:?}");
    let err = |field: &str, problem: String| PolicyError::new(&doc, field, problem);
    if policy.api_version != API_VERSION {
        return Err(err(
            "apiVersion",
            format!("{:?} is not supported; use {API_VERSION:?}", policy.api_version),
        ));
    }
    if policy.kind != model::KIND {
        return Err(err("kind", format!("{:?} is not supported; use {:?}", policy.kind, model::KIND)));
    }
    check_name(&name).map_err(|p| err("metadata.name", p))?;
    let identity = policy.spec.identity_name(&policy.metadata).to_owned();
    check_actions(&policy.spec).map_err(|(f, p)| err(f, p))?;
    check_name(&identity).map_err(|p| err("spec.identity", p))?;
    let selector = super::selector::selector(&policy.spec.selector).map_err(|(f, p)| err(&f, p))?;

    for (resource, len) in [
        ("exec", policy.spec.exec.len()),
        ("file", policy.spec.file.len()),
        ("network", policy.spec.network.len()),
    ] {
        if len > MAX_RULES_PER_RESOURCE {
            return Err(err(
                &format!("spec.{resource}"),
                format!("{len} rules exceed the limit of {MAX_RULES_PER_RESOURCE}"),
            ));
        }
    }
    let mut exec = Vec::new();
    for (i, rule) in policy.spec.exec.iter().enumerate() {
        let field = format!("spec.exec[{i}]");
        let (path, dir) = path_or_dir(rule.path.as_deref(), rule.dir.as_deref())
            .map_err(|(f, p)| err(&format!("{field}{f}"), p))?;
        exec.push(PathRuleSpec { index: index(i), path, dir, read: true, write: false, action: rule.action });
    }
    let mut file = Vec::new();
    for (i, rule) in policy.spec.file.iter().enumerate() {
        let field = format!("spec.file[{i}]");
        let (path, dir) = path_or_dir(rule.path.as_deref(), rule.dir.as_deref())
            .map_err(|(f, p)| err(&format!("{field}{f}"), p))?;
        let (read, write) = match &rule.access {
            None => (true, true),
            Some(list) if list.is_empty() => {
                return Err(err(
                    &format!("{field}.access"),
                    "is empty; omit it to mean both read and write".into(),
                ));
            }
            Some(list) => (list.contains(&model::Access::Read), list.contains(&model::Access::Write)),
        };
        file.push(PathRuleSpec { index: index(i), path, dir, read, write, action: rule.action });
    }
    let mut network = Vec::new();
    for (i, rule) in policy.spec.network.iter().enumerate() {
        // Named only on error: a set can hold tens of thousands of these rules.
        let field = |part: &str| format!("spec.network[{i}].{part}");
        let (addr, prefix_len) = cidr(&rule.cidr).map_err(|p| err(&field("cidr"), p))?;
        let (port_lo, port_hi) = ports(rule.ports.as_ref()).map_err(|p| err(&field("ports"), p))?;
        network.push(NetRuleSpec {
            index: index(i),
            addr,
            prefix_len,
            cidr: rule.cidr.clone(),
            port_lo,
            port_hi,
            protocol: rule.protocol,
            action: rule.action,
        });
    }
    let listen = listen_rules(&policy.spec.listen).map_err(|(f, p)| err(&f, p))?;
    let runtimes = runtimes(&policy.spec.runtimes).map_err(|(f, p)| err(&f, p))?;
    check_duplicates(&exec, "spec.exec").map_err(|(f, p)| err(&f, p))?;
    check_duplicates(&file, "spec.file").map_err(|(f, p)| err(&f, p))?;
    Ok(Valid {
        source: policy.clone(),
        name,
        identity,
        selector,
        mode: policy.spec.mode,
        log_allowed: policy.spec.log_allowed,
        allow_cgroup_moves: policy.spec.allow_cgroup_moves,
        defaults: policy.spec.defaults,
        exec,
        file,
        network,
        listen,
        runtimes,
    })
}

/// Defaults and quarantine restrictions are allow or deny; approve is for rules.
fn check_actions(spec: &model::Spec) -> Result<(), (&'static str, String)> {
    let d = &spec.defaults;
    for (field, action) in [
        ("spec.defaults.exec", d.exec),
        ("spec.defaults.file", d.file),
        ("spec.defaults.network", d.network),
        ("spec.defaults.listen", d.listen),
    ] {
        if action == Action::Approve {
            return Err((field, "approve is for rules; a default is allow or deny".into()));
        }
    }
    let q = &spec.quarantine;
    if [q.exec, q.file_read, q.file_write, q.network].contains(&Action::Approve) {
        return Err(("spec.quarantine", "a quarantine restriction is allow or deny".into()));
    }
    Ok(())
}

/// `spec.runtimes`: absolute executables, each named once.
fn runtimes(paths: &[String]) -> Result<Vec<String>, (String, String)> {
    if paths.len() > MAX_RUNTIMES {
        return Err((
            "spec.runtimes".into(),
            format!("{} runtimes exceed the limit of {MAX_RUNTIMES}", paths.len()),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let field = format!("spec.runtimes[{i}]");
        let path = normalise(path).map_err(|p| (field.clone(), p))?;
        if path == "/" {
            return Err((field, "\"/\" is not an executable".into()));
        }
        if out.contains(&path) {
            return Err((field, format!("{path:?} is named twice")));
        }
        out.push(path);
    }
    Ok(out)
}

/// `listen` rules: at most as many as the kernel holds per identity; decided at once
/// (no approvals for binding).
fn listen_rules(rules: &[model::ListenRule]) -> Result<Vec<ListenRuleSpec>, (String, String)> {
    let limit = enforcer_common::MAX_NET_RULES_PER_PREFIX;
    if rules.len() > limit {
        return Err(("spec.listen".into(), format!("{} rules exceed the limit of {limit}", rules.len())));
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let field = format!("spec.listen[{i}]");
            if rule.action == Action::Approve {
                return Err((format!("{field}.action"), "approve is not available for listen rules".into()));
            }
            let (port_lo, port_hi) = ports(rule.ports.as_ref()).map_err(|p| (format!("{field}.ports"), p))?;
            Ok(ListenRuleSpec {
                index: index(i),
                port_lo,
                port_hi,
                protocol: rule.protocol,
                action: rule.action,
            })
        })
        .collect()
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("rule count is limited")
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!("{} characters exceed the limit of 253", name.len()));
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')))
    {
        return Err(format!("{name:?} contains {c:?}; use letters, digits and - _ . : /"));
    }
    Ok(())
}

fn path_or_dir(path: Option<&str>, dir: Option<&str>) -> Result<(String, bool), (&'static str, String)> {
    match (path, dir) {
        (Some(p), None) => Ok((normalise(p).map_err(|e| (".path", e))?, false)),
        (None, Some(d)) => {
            let d = normalise(d).map_err(|e| (".dir", e))?;
            if d == "/" {
                return Err((".dir", "\"/\" covers everything; use spec.defaults instead".into()));
            }
            Ok((d, true))
        }
        (None, None) => Err(("", "needs one of path or dir".into())),
        (Some(_), Some(_)) => Err(("", "sets both path and dir; use one".into())),
    }
}

pub use super::net::cidr;

fn ports(ports: Option<&Ports>) -> Result<(u16, u16), String> {
    let parse = |s: &str| s.trim().parse::<u16>().map_err(|_| format!("{s:?} is not a port (0-65535)"));
    let (lo, hi) = match ports {
        None => return Ok((0, u16::MAX)),
        Some(Ports::One(p)) => {
            let p = u16::try_from(*p).map_err(|_| format!("{p} is not a port (0-65535)"))?;
            (p, p)
        }
        Some(Ports::Range(text)) => {
            if let Some((lo, hi)) = text.split_once('-') {
                (parse(lo)?, parse(hi)?)
            } else {
                let p = parse(text)?;
                (p, p)
            }
        }
    };
    if lo > hi {
        return Err(format!("range {lo}-{hi} is empty (start above end)"));
    }
    Ok((lo, hi))
}

/// Two rules for the same path and kind that decide the same access would make the
/// outcome depend on order; reject them.
fn check_duplicates(rules: &[PathRuleSpec], resource: &str) -> Result<(), (String, String)> {
    let mut seen: BTreeMap<(&str, bool, bool), u32> = BTreeMap::new();
    for rule in rules {
        for (wanted, is_write) in [(rule.read, false), (rule.write, true)] {
            if !wanted {
                continue;
            }
            if let Some(first) = seen.insert((rule.path.as_str(), rule.dir, is_write), rule.index) {
                let access = if is_write { "write" } else { "read" };
                let what = if resource == "spec.exec" { String::new() } else { format!(" ({access})") };
                return Err((
                    format!("{resource}[{}]", rule.index),
                    format!("{:?} is already decided{what} by {resource}[{first}]", rule.path),
                ));
            }
        }
    }
    Ok(())
}

impl Valid {
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}
