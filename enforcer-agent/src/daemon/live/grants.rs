//! Grants: time-limited exceptions for one identity (exec or file paths, or a CIDR and
//! ports), and the kernel entries they become.

use serde::{Deserialize, Serialize};

use super::{LiveState, check_reason};
use crate::{
    daemon::record::clock::{Clock, boot_id, rfc3339},
    kernel::maps::{NetGrantEntry, PathGrant},
    policy::{
        model::{Access, Protocol},
        validate::{cidr, normalise},
    },
};
use enforcer_common::{
    maps::{Grant, GrantKey, NetGrant, NetGrantKey, grant_kind},
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

fn path_key(path: &str, identity: u32, kind: u8) -> GrantKey {
    GrantKey {
        hash: path_hash(path.as_bytes()),
        identity,
        len: u16::try_from(path.len()).expect("short path"),
        kind,
        pad: 0,
    }
}

impl LiveState {
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
        let expires_boot_ns = Clock::now().boot_ns_at(expires_unix_ns);
        self.next_grant += 1;
        let entry = GrantEntry {
            id: self.next_grant,
            identity: identity.to_owned(),
            target,
            expires: rfc3339(i128::from(expires_unix_ns)),
            expires_unix_ns,
            reason: reason.to_owned(),
            uid,
            created: now,
            expires_boot_ns,
            boot_id: boot_id(),
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
}
