//! Live state: facts about identities and credentials that change what is allowed on the
//! very next syscall — quarantined identities and revoked credential files. Kept in the
//! state directory (so it survives restarts) and mirrored into the kernel maps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{
    model::{Access, Protocol},
    validate::{Valid, cidr, normalise},
};
use enforcer_common::{
    maps::{Grant, GrantKey, NetGrant, NetGrantKey, Revoked, grant_kind},
    path_hash,
    verdict::proto,
};

/// Longest grant accepted.
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// What a grant allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum GrantTarget {
    Exec { path: String },
    File { path: String, access: Vec<Access> },
    Connect { cidr: String, port_lo: u16, port_hi: u16, protocol: Protocol },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantEntry {
    pub id: u32,
    pub identity: String,
    pub target: GrantTarget,
    /// RFC 3339.
    pub expires: String,
    pub expires_unix_ns: i64,
    pub reason: String,
    pub uid: u32,
    pub created: String,
    /// The expiry on the kernel's boot clock, fixed when the grant is made so that a
    /// wall-clock step never moves it; valid for the boot named by `boot_id`.
    #[serde(default)]
    pub expires_boot_ns: u64,
    #[serde(default)]
    pub boot_id: String,
}

/// `90s`, `15m`, `2h`, `1d` → seconds; zero, negative, malformed and over 7 days refused.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("ttl {text:?}: expected a positive number and a unit (s, m, h, d), e.g. 15m"))?;
    let scale = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("ttl {text:?}: unknown unit {other:?}; use s, m, h or d")),
    };
    let seconds = number.saturating_mul(scale);
    if seconds == 0 {
        return Err(format!("ttl {text:?} is zero; a grant must last at least a second"));
    }
    if seconds > MAX_TTL_SECONDS {
        return Err(format!("ttl {text:?} exceeds the limit of 7d; grants are for just-in-time access"));
    }
    Ok(seconds)
}

/// Checks and normalises a grant target.
pub fn check_target(target: GrantTarget) -> Result<GrantTarget, String> {
    Ok(match target {
        GrantTarget::Exec { path } => GrantTarget::Exec { path: normalise(&path)? },
        GrantTarget::File { path, mut access } => {
            if access.is_empty() {
                return Err("a file grant needs access read, write or both".to_owned());
            }
            access.sort();
            access.dedup();
            GrantTarget::File { path: normalise(&path)?, access }
        }
        GrantTarget::Connect { cidr: text, port_lo, port_hi, protocol } => {
            cidr(&text)?;
            if port_lo > port_hi {
                return Err(format!("port range {port_lo}-{port_hi} is empty"));
            }
            GrantTarget::Connect { cidr: text, port_lo, port_hi, protocol }
        }
    })
}

/// The kernel entries a grant occupies: one per (path, access kind), or one per CIDR.
/// Two grants of one identity on the same entry cannot both live in the kernel.
fn kernel_slots(target: &GrantTarget) -> Vec<(String, u8)> {
    match target {
        GrantTarget::Exec { path } => vec![(path.clone(), grant_kind::EXEC)],
        GrantTarget::File { path, access } => access
            .iter()
            .map(|a| {
                (
                    path.clone(),
                    if *a == Access::Read { grant_kind::FILE_READ } else { grant_kind::FILE_WRITE },
                )
            })
            .collect(),
        GrantTarget::Connect { cidr: text, .. } => {
            // Compared in canonical form, so `10.0.0.1` and `10.0.0.1/32` are one entry.
            let canonical =
                cidr(text).map_or_else(|_| text.clone(), |(addr, bits)| format!("{addr:?}/{bits}"));
            vec![(canonical, 0)]
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub reason: String,
    /// Uid of the caller who quarantined the identity.
    pub uid: u32,
    /// RFC 3339.
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub id: u32,
    pub reason: String,
    pub uid: u32,
    pub since: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveState {
    /// identity → quarantine.
    pub quarantines: BTreeMap<String, QuarantineEntry>,
    /// normalised path → revocation.
    pub revoked: BTreeMap<String, Revocation>,
    pub next_revocation: u32,
    /// id → grant.
    #[serde(default)]
    pub grants: BTreeMap<u32, GrantEntry>,
    #[serde(default)]
    pub next_grant: u32,
    /// id → step-up request waiting for an operator.
    #[serde(default)]
    pub approvals: BTreeMap<u32, ApprovalRequest>,
    #[serde(default)]
    pub next_approval: u32,
}

/// How long an approval request waits for an answer.
pub const APPROVAL_TTL_NS: i64 = 3600 * 1_000_000_000;

/// An attempt a rule with `action: approve` held back, waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub id: u32,
    pub identity: String,
    pub policy: String,
    pub rule: String,
    pub target: GrantTarget,
    pub pid: u32,
    pub comm: String,
    pub executable: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// Attempts seen (repeats update this request instead of adding new ones).
    pub attempts: u64,
    pub expires: String,
    pub expires_unix_ns: i64,
}

/// The exact target of a verdict record, as a grant would name it.
pub fn target_of(record: &crate::daemon::record::VerdictRecord) -> Option<GrantTarget> {
    use crate::daemon::record::Target;
    match (&record.target, record.hook) {
        (Target::Path { path, .. }, "exec" | "mmap_exec") => Some(GrantTarget::Exec { path: path.clone() }),
        (Target::Path { path, access }, _) => {
            let access = access
                .iter()
                .filter_map(|a| match *a {
                    "read" => Some(Access::Read),
                    "write" => Some(Access::Write),
                    _ => None,
                })
                .collect();
            Some(GrantTarget::File { path: path.clone(), access })
        }
        (
            Target::Process { .. }
            | Target::Bpf { .. }
            | Target::Entry { .. }
            | Target::Change { .. }
            | Target::Mount { .. }
            | Target::Socket { .. },
            _,
        ) => None,
        (Target::Net { address, port, protocol }, _) => {
            let bits = if address.contains(':') { 128 } else { 32 };
            let protocol = match protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => Protocol::Any,
            };
            Some(GrantTarget::Connect {
                cidr: format!("{address}/{bits}"),
                port_lo: *port,
                port_hi: *port,
                protocol,
            })
        }
    }
}

/// A path grant as the kernel holds it.
pub type PathGrant = (GrantKey, Grant);
/// A network grant as the kernel holds it: prefix bits after the identity, key, value.
pub type NetGrantEntry = (u32, NetGrantKey, NetGrant);

fn path_key(path: &str, identity: u32, kind: u8) -> GrantKey {
    GrantKey {
        hash: path_hash(path.as_bytes()),
        identity,
        len: u16::try_from(path.len()).expect("short path"),
        kind,
        pad: 0,
    }
}

/// Longest reason accepted.
pub const MAX_REASON: usize = 1024;

/// A reason must say something and not be a novel.
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("a reason is required".to_owned());
    }
    if reason.len() > MAX_REASON {
        return Err(format!("the reason is {} bytes; the limit is {MAX_REASON}", reason.len()));
    }
    Ok(())
}

impl LiveState {
    /// Identity number → restrict bits, for quarantined identities that a policy in force
    /// governs (a quarantine of an identity without a policy waits for one).
    pub fn quarantine_table(
        &self,
        policies: &[Valid],
        number: impl Fn(&str) -> Option<u32>,
    ) -> BTreeMap<u32, u32> {
        self.quarantines
            .keys()
            .filter_map(|identity| {
                let policy = policies.iter().find(|p| &p.identity == identity)?;
                Some((number(identity)?, policy.source.spec.quarantine.restricts()))
            })
            .collect()
    }

    /// (path hash, length) → revocation id.
    pub fn revoked_table(&self) -> BTreeMap<(u64, u32), Revoked> {
        self.revoked
            .iter()
            .map(|(path, r)| {
                (
                    (path_hash(path.as_bytes()), u32::try_from(path.len()).expect("short path")),
                    Revoked { id: r.id, pad: 0, check: crate::kernel::path_key::check(path) },
                )
            })
            .collect()
    }

    /// Adds a grant of `ttl_seconds` from `now_unix_ns`.
    #[expect(clippy::too_many_arguments, reason = "each is one fact of the grant")]
    pub fn add_grant(
        &mut self,
        identity: &str,
        target: GrantTarget,
        ttl_seconds: u64,
        reason: &str,
        uid: u32,
        now_unix_ns: i64,
        now: String,
    ) -> Result<GrantEntry, String> {
        check_reason(reason)?;
        let target = check_target(target)?;
        if self.grants.len() >= enforcer_common::capacity::GRANTS as usize {
            return Err(format!("{} grants is the limit", enforcer_common::capacity::GRANTS));
        }
        // The kernel holds one grant per identity and entry: a second one would silently
        // replace the first there while both were listed here.
        let wanted = kernel_slots(&target);
        if let Some(existing) = self.grants.values().find(|g| {
            g.identity == identity && kernel_slots(&g.target).iter().any(|slot| wanted.contains(slot))
        }) {
            return Err(format!(
                "identity {identity:?} already has grant {} on this target ({}), until {}; revoke it first (enforcer revoke-grant {}) and grant the combined access or ports",
                existing.id,
                serde_json::to_string(&existing.target).unwrap_or_default(),
                existing.expires,
                existing.id
            ));
        }
        let expires_unix_ns =
            now_unix_ns + i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2) * 1_000_000_000;
        // The same instant on the boot clock, converted once with both clocks read together,
        // so the kernel's expiry is exactly the one reported.
        let expires_boot_ns = crate::daemon::record::clock::Clock::now().boot_ns_at(expires_unix_ns);
        self.next_grant += 1;
        let entry = GrantEntry {
            id: self.next_grant,
            identity: identity.to_owned(),
            target,
            expires: crate::daemon::record::clock::rfc3339(i128::from(expires_unix_ns)),
            expires_unix_ns,
            reason: reason.to_owned(),
            uid,
            created: now,
            expires_boot_ns,
            boot_id: crate::daemon::record::clock::boot_id(),
        };
        self.grants.insert(entry.id, entry.clone());
        Ok(entry)
    }

    /// Removes and returns the grants expired at `now_unix_ns`.
    pub fn expire(&mut self, now_unix_ns: i64) -> Vec<GrantEntry> {
        let expired: Vec<u32> =
            self.grants.values().filter(|g| g.expires_unix_ns <= now_unix_ns).map(|g| g.id).collect();
        expired.iter().filter_map(|id| self.grants.remove(id)).collect()
    }

    /// Kernel entries of the grants: path grants and network grants (prefix bits after the
    /// identity, key, value). A grant made during boot `boot_id` keeps the boot-clock
    /// expiry fixed when it was made; one from an earlier boot is converted from its Unix
    /// time with `boot_ns`.
    pub fn grant_tables(
        &self,
        number: impl Fn(&str) -> Option<u32>,
        boot_id: &str,
        boot_ns: impl Fn(i64) -> u64,
    ) -> (Vec<PathGrant>, Vec<NetGrantEntry>) {
        let (mut paths, mut nets) = (Vec::new(), Vec::new());
        for g in self.grants.values() {
            let Some(identity) = number(&g.identity) else { continue };
            let expires_ns = if !g.boot_id.is_empty() && g.boot_id == boot_id && g.expires_boot_ns != 0 {
                g.expires_boot_ns
            } else {
                boot_ns(g.expires_unix_ns)
            };
            let grant = |path: &str| Grant {
                expires_ns,
                id: g.id,
                pad: 0,
                check: crate::kernel::path_key::check(path),
            };
            match &g.target {
                GrantTarget::Exec { path } => {
                    paths.push((path_key(path, identity, grant_kind::EXEC), grant(path)));
                }
                GrantTarget::File { path, access } => {
                    for a in access {
                        let kind =
                            if *a == Access::Read { grant_kind::FILE_READ } else { grant_kind::FILE_WRITE };
                        paths.push((path_key(path, identity, kind), grant(path)));
                    }
                }
                GrantTarget::Connect { cidr: text, port_lo, port_hi, protocol } => {
                    let Ok((addr, bits)) = cidr(text) else { continue };
                    let proto = match protocol {
                        Protocol::Any => proto::ANY,
                        Protocol::Tcp => proto::TCP,
                        Protocol::Udp => proto::UDP,
                    };
                    let value = NetGrant {
                        expires_ns,
                        id: g.id,
                        port_lo: *port_lo,
                        port_hi: *port_hi,
                        proto,
                        pad: [0; 7],
                    };
                    nets.push((u32::from(bits), NetGrantKey { identity, addr }, value));
                }
            }
        }
        (paths, nets)
    }

    /// Opens a request for a `pending` verdict, or counts a repeat of an open one.
    /// Returns the request and whether it is new.
    pub fn note_pending(
        &mut self,
        record: &crate::daemon::record::VerdictRecord,
        now_unix_ns: i64,
        now: &str,
    ) -> Option<(ApprovalRequest, bool)> {
        let target = target_of(record)?;
        let identity = record.identity.clone()?;
        if let Some(open) = self.approvals.values_mut().find(|a| a.identity == identity && a.target == target)
        {
            open.attempts += 1;
            now.clone_into(&mut open.last_seen);
            return Some((open.clone(), false));
        }
        if self.approvals.len() >= enforcer_common::capacity::GRANTS as usize {
            return None;
        }
        self.next_approval += 1;
        let expires_unix_ns = now_unix_ns + APPROVAL_TTL_NS;
        let request = ApprovalRequest {
            id: self.next_approval,
            identity,
            policy: record.policy.clone().unwrap_or_default(),
            rule: record.rule.clone(),
            target,
            pid: record.pid,
            comm: record.comm.clone(),
            executable: record.executable.clone(),
            first_seen: now.to_owned(),
            last_seen: now.to_owned(),
            attempts: 1,
            expires: crate::daemon::record::clock::rfc3339(i128::from(expires_unix_ns)),
            expires_unix_ns,
        };
        self.approvals.insert(request.id, request.clone());
        Some((request, true))
    }

    /// Removes and returns the requests nobody answered in time.
    pub fn expire_approvals(&mut self, now_unix_ns: i64) -> Vec<ApprovalRequest> {
        let expired: Vec<u32> =
            self.approvals.values().filter(|a| a.expires_unix_ns <= now_unix_ns).map(|a| a.id).collect();
        expired.iter().filter_map(|id| self.approvals.remove(id)).collect()
    }

    /// Records a revocation (or updates its reason); returns the normalised path and id.
    pub fn revoke(
        &mut self,
        path: &str,
        reason: &str,
        uid: u32,
        now: String,
    ) -> Result<(String, u32), String> {
        let path = normalise(path)?;
        if path == "/" {
            return Err("\"/\" is not a credential file".to_owned());
        }
        check_reason(reason)?;
        if let Some(existing) = self.revoked.get_mut(&path) {
            reason.clone_into(&mut existing.reason);
            return Ok((path, existing.id));
        }
        if self.revoked.len() >= enforcer_common::capacity::REVOKED as usize {
            return Err(format!("{} revoked credentials is the limit", enforcer_common::capacity::REVOKED));
        }
        self.next_revocation += 1;
        let id = self.next_revocation;
        self.revoked.insert(path.clone(), Revocation { id, reason: reason.to_owned(), uid, since: now });
        Ok((path, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::{parse, validate_set};
    use enforcer_common::verdict::restrict;

    #[test]
    fn tables_follow_policies_and_paths() {
        let yaml = "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata: {name: a}\nspec:\n  selector: {cgroupPath: /a}\n  quarantine: {fileRead: deny}\n---\napiVersion: enforcer.dev/v1\nkind: Policy\nmetadata: {name: b}\nspec:\n  selector: {cgroupPath: /b}\n";
        let policies = validate_set(&parse("t", yaml).unwrap()).unwrap();
        let mut live = LiveState::default();
        for identity in ["a", "b", "gone"] {
            live.quarantines.insert(
                identity.to_owned(),
                QuarantineEntry { reason: "r".into(), uid: 0, since: "t".into() },
            );
        }
        let table = live.quarantine_table(&policies, |name| match name {
            "a" => Some(1),
            "b" => Some(2),
            _ => None,
        });
        assert_eq!(
            table.get(&1),
            Some(&(restrict::EXEC | restrict::FILE_READ | restrict::FILE_WRITE | restrict::NETWORK))
        );
        assert_eq!(table.get(&2), Some(&(restrict::EXEC | restrict::FILE_WRITE | restrict::NETWORK)));
        assert_eq!(table.len(), 2, "an identity without a policy is not in the kernel table");

        let (path, id) = live.revoke("//etc/aws//credentials", "leaked", 0, "t".into()).unwrap();
        assert_eq!((path.as_str(), id), ("/etc/aws/credentials", 1));
        assert_eq!(live.revoke("/etc/aws/credentials", "still leaked", 0, "t".into()).unwrap().1, 1);
        let entry = live.revoked_table()[&(path_hash(b"/etc/aws/credentials"), 20)];
        assert_eq!((entry.id, entry.check), (1, crate::kernel::path_key::check("/etc/aws/credentials")));
        assert!(live.revoke("relative", "x", 0, "t".into()).is_err());
        assert!(live.revoke("/x", "  ", 0, "t".into()).is_err());
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("2h"), Ok(7200));
        assert_eq!(parse_ttl("7d"), Ok(MAX_TTL_SECONDS));
        for bad in ["0s", "-5m", "8d", "99999999999999999999d", "5y", "m", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_become_kernel_entries_and_expire() {
        let mut live = LiveState::default();
        let file = GrantTarget::File { path: "/etc//x".into(), access: vec![Access::Write, Access::Read] };
        let g = live.add_grant("a", file, 60, "ticket 7", 0, 1_000_000_000, "t".into()).unwrap();
        assert_eq!(
            g.target,
            GrantTarget::File { path: "/etc/x".into(), access: vec![Access::Read, Access::Write] }
        );
        let net = GrantTarget::Connect {
            cidr: "10.0.0.0/8".into(),
            port_lo: 443,
            port_hi: 443,
            protocol: Protocol::Tcp,
        };
        live.add_grant("a", net, 120, "ticket 8", 0, 1_000_000_000, "t".into()).unwrap();
        let (paths, nets) =
            live.grant_tables(|_| Some(3), "another boot", |unix| u64::try_from(unix).unwrap() / 2);
        assert_eq!(paths.len(), 2);
        assert!(paths.iter().all(|(k, v)| k.identity == 3 && v.expires_ns == 61_000_000_000 / 2));
        assert_eq!(nets.len(), 1);
        assert_eq!(nets[0].0, 96 + 8);
        assert_eq!(nets[0].2.proto, proto::TCP);
        assert!(
            live.add_grant("a", GrantTarget::Exec { path: "rel".into() }, 60, "x", 0, 0, "t".into()).is_err()
        );
        let bad_cidr = GrantTarget::Connect {
            cidr: "10.0.0.1/8".into(),
            port_lo: 1,
            port_hi: 1,
            protocol: Protocol::Any,
        };
        assert!(live.add_grant("a", bad_cidr, 60, "x", 0, 0, "t".into()).is_err());
        // In the boot it was made in, the expiry fixed then is used, whatever the clocks say.
        let mut now = LiveState::default();
        let unix = crate::daemon::record::clock::Clock::unix_now_ns();
        let made = now
            .add_grant("a", GrantTarget::Exec { path: "/x".into() }, 60, "r", 0, unix, "t".into())
            .unwrap();
        assert!(made.expires_boot_ns > 0);
        let boot = crate::daemon::record::clock::boot_id();
        let (paths, _) = now.grant_tables(|_| Some(3), &boot, |_| 7);
        assert_eq!(paths[0].1.expires_ns, made.expires_boot_ns);
        let (paths, _) = now.grant_tables(|_| Some(3), "another boot", |_| 7);
        assert_eq!(paths[0].1.expires_ns, 7, "after a reboot it is converted again");
        let expired = live.expire(61_000_000_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(live.grants.len(), 1);
    }

    #[test]
    fn a_second_grant_on_the_same_kernel_entry_is_refused() {
        let mut live = LiveState::default();
        let connect = |cidr: &str, port| GrantTarget::Connect {
            cidr: cidr.into(),
            port_lo: port,
            port_hi: port,
            protocol: Protocol::Tcp,
        };
        live.add_grant("a", connect("10.0.0.0/8", 443), 60, "x", 0, 0, "t".into()).unwrap();
        let e = live.add_grant("a", connect("10.0.0.0/8", 80), 60, "x", 0, 0, "t".into()).unwrap_err();
        assert!(e.contains("already has grant 1"), "{e}");
        // Other CIDRs, other identities and other accesses are separate entries.
        live.add_grant("a", connect("10.1.0.0/16", 80), 60, "x", 0, 0, "t".into()).unwrap();
        live.add_grant("b", connect("10.0.0.0/8", 80), 60, "x", 0, 0, "t".into()).unwrap();
        let read = GrantTarget::File { path: "/x".into(), access: vec![Access::Read] };
        let both = GrantTarget::File { path: "/x".into(), access: vec![Access::Read, Access::Write] };
        let write = GrantTarget::File { path: "/x".into(), access: vec![Access::Write] };
        live.add_grant("a", read, 60, "x", 0, 0, "t".into()).unwrap();
        assert!(live.add_grant("a", both, 60, "x", 0, 0, "t".into()).is_err());
        live.add_grant("a", write, 60, "x", 0, 0, "t".into()).unwrap();
        // The same host written two ways is one entry.
        live.add_grant("a", connect("192.0.2.1", 22), 60, "x", 0, 0, "t".into()).unwrap();
        assert!(live.add_grant("a", connect("192.0.2.1/32", 23), 60, "x", 0, 0, "t".into()).is_err());
    }
}
