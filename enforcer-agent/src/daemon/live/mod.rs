//! Live state: facts about identities and credentials that change what is allowed on the
//! very next syscall — quarantined identities and revoked credential files. Kept in the
//! state directory (so it survives restarts) and mirrored into the kernel maps.

pub mod approvals;
pub mod grants;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use approvals::{APPROVAL_TTL_NS, ApprovalRequest, target_of};
pub use grants::{GrantEntry, GrantTarget, MAX_TTL_SECONDS, check_target, parse_ttl};

use crate::policy::validate::{Valid, normalise};
use enforcer_common::{maps::Revoked, path_hash};

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
        policies: &[impl std::borrow::Borrow<Valid>],
        number: impl Fn(&str) -> Option<u32>,
    ) -> BTreeMap<u32, u32> {
        self.quarantines
            .keys()
            .filter_map(|identity| {
                let policy: &Valid = policies
                    .iter()
                    .map(std::borrow::Borrow::borrow)
                    .find(|p: &&Valid| &p.identity == identity)?;
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
    use crate::policy::{
        model::{Access, Protocol},
        validate::{parse, validate_set},
    };
    use enforcer_common::verdict::{proto, restrict};

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
