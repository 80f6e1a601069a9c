//! Live state: facts about identities and credentials that change what is allowed on the
//! very next syscall — quarantined identities and revoked credential files. Kept in the
//! state directory (so it survives restarts) and mirrored into the kernel maps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::validate::{Valid, normalise};
use enforcer_common::path_hash;

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
    pub fn revoked_table(&self) -> BTreeMap<(u64, u32), u32> {
        self.revoked
            .iter()
            .map(|(path, r)| {
                ((path_hash(path.as_bytes()), u32::try_from(path.len()).expect("short path")), r.id)
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
        assert_eq!(live.revoked_table().get(&(path_hash(b"/etc/aws/credentials"), 20)), Some(&1));
        assert!(live.revoke("relative", "x", 0, "t".into()).is_err());
        assert!(live.revoke("/x", "  ", 0, "t".into()).is_err());
    }
}
