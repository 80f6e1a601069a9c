//! The policy set in force for the current task, and how a judgement becomes a verdict.

use enforcer_common::{
    maps::{
        CpuTask, GrantKey, IdentityConfig, IdentityKey, NET_GRANT_FIXED_BITS, NetGrantKey, RevokedKey, word,
    },
    verdict::{IDENTITY_LOG_ALLOW, RULE_DEFAULT, action, decision, mode, proto, reason, stat},
};

use crate::{
    diag, identity,
    lines::{self, Resolved},
    maps::{
        GRANTS, IDENTITIES, NET_GRANTS, QUARANTINE, REVOKED, active_slot, count, slot_generation, word_low,
    },
};
use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, maps::lpm_trie::Key};

pub const EPERM: i32 = 1;

/// Passes on an earlier program's denial; the verifier insists the value be a valid
/// errno. A clamp compiles to compare-and-move on the returned register itself, so the
/// verifier sees its bounds (a range check let LLVM test a copy and return the original).
#[inline(always)]
pub fn pass_on(earlier: i32) -> i32 {
    earlier.clamp(-4095, -EPERM)
}

/// What an LSM program returns for `errno` (0 = allowed): 0 or `-EPERM`.
///
/// The verifier (6.12) must prove the value is in [-4095, 0]. LLVM turns a choice
/// between the two constants into arithmetic (`-(errno & 1)`) whose bounds the verifier
/// loses at the negation; the volatile round-trip hides the value's range from LLVM so
/// the final clamp stays, and the clamp's compares give the verifier its bounds.
#[inline(always)]
pub fn lsm_return(errno: i32) -> i32 {
    let chosen = if errno == 0 { 0 } else { -EPERM };
    // SAFETY: a read of a local.
    let opaque = unsafe { core::ptr::read_volatile(&raw const chosen) };
    opaque.clamp(-4095, 0)
}

/// A managed task: its identity and the policy set that judges it.
pub struct Subject {
    pub slot: u32,
    pub identity: u32,
    pub cgroup_id: u64,
    pub config: IdentityConfig,
}

/// Who is asking, as far as the hook needs to know.
pub enum Caller {
    /// No identity selects the task's cgroup: allowed without further work.
    Unmanaged,
    Managed(Subject),
    /// The task has an identity but its configuration is missing from the set in force.
    Broken {
        slot: u32,
        identity: u32,
        cgroup_id: u64,
    },
}

/// The caller of `hook` (a `verdict::hook` code, named in diagnostics), judged by the set
/// in force. Every program runs inside an RCU read-side section (none is sleepable), so the
/// cgroup id is read through the task's pointers without the helper
/// (`identity::current_rcu`).
#[inline(always)]
pub fn caller(hook: u32) -> Caller {
    // Fail-open: index 0 of an array always exists, so this is unreachable; if it ever
    // were reached there would be no policy set to apply.
    let Some(slot) = active_slot() else {
        diag::error!("hook {}: the active slot unreadable: allowed as unmanaged (fail-open)", hook: u32 = hook);
        return Caller::Unmanaged;
    };
    let (cgroup_id, epoch, record) = identity::current_rcu();
    caller_of(slot, hook, (cgroup_id, epoch), record)
}

/// The caller of `hook` judged by the set in `slot` (a slot the program registered as
/// reading).
///
/// This CPU's identity line answers a cgroup seen before under the same binding epoch;
/// otherwise the identity is resolved and its configuration read, and the line written.
/// The epoch is read first and moves after every slot rewrite and binding change, so a
/// line never outlives what it was read from.
#[inline(always)]
pub fn caller_in(slot: u32, hook: u32) -> Caller {
    caller_of(slot, hook, identity::from_task(), None)
}

/// [`caller_in`] for the cgroup id and binding epoch already read, and with this CPU's
/// task record if the hook read it (see `lines::get`).
#[inline(always)]
fn caller_of(slot: u32, hook: u32, (cgroup_id, epoch): (u64, u64), record: Option<*mut CpuTask>) -> Caller {
    if let Some(line) = lines::get(cgroup_id, slot, epoch, record) {
        return subject(slot, cgroup_id, line);
    }
    // Fail-open (see `identity::resolve`): an unresolvable cgroup is unmanaged, uncached.
    let Some(identity) = identity::resolve(cgroup_id, slot, epoch, hook) else {
        count(stat::UNMANAGED);
        return Caller::Unmanaged;
    };
    let resolved = if identity == 0 {
        // Counted here, where a cgroup is resolved, not at each call its line answers:
        // an unmanaged call costs its line lookup and nothing else.
        count(stat::UNMANAGED);
        Resolved { identity, config: IdentityConfig::default() }
    } else {
        // SAFETY: plain value copied out at once.
        let Some(config) = (unsafe { IDENTITIES.get(&IdentityKey { identity, slot }) }) else {
            diag::error!(
                "hook {}: identity {} has no configuration in slot {}: refused as internal-error",
                hook: u32 = hook,
                identity: u32 = identity,
                slot: u32 = slot,
            );
            return Caller::Broken { slot, identity, cgroup_id };
        };
        Resolved { identity, config: *config }
    };
    lines::put(cgroup_id, slot, epoch, &resolved);
    subject(slot, cgroup_id, resolved)
}

#[inline(always)]
fn subject(slot: u32, cgroup_id: u64, resolved: Resolved) -> Caller {
    if resolved.identity == 0 {
        return Caller::Unmanaged;
    }
    Caller::Managed(Subject { slot, identity: resolved.identity, cgroup_id, config: resolved.config })
}

/// What this CPU's identity line says of the current task under the set in force, read
/// once by an LSM hook before anything else. Every field is set on every path: the
/// verifier follows each path on its own, and a field left unset on one (as an enum's
/// payload is) reads as uninitialised there.
pub struct Seen {
    /// The line shows the task unmanaged: allowed without registering as a slot reader.
    pub unmanaged: bool,
    /// The line shows the task managed by `subject.identity` (not 0): its open and exec
    /// findings may be cached. Neither flag: no line for the task (or one from an older
    /// epoch), which the full judgement resolves.
    pub managed: bool,
    pub subject: Subject,
}

/// What this CPU's identity line says of the current task. A line is trusted only under
/// the epoch it was written in, which moves before every flip, so the answer is the set
/// in force at the moment of these reads. The caller's cgroup comes from this CPU's task
/// record where it provably is the caller's (no function call), else from the task.
#[inline(always)]
pub fn seen() -> Seen {
    let mut seen = Seen {
        unmanaged: false,
        managed: false,
        subject: Subject { slot: 0, identity: 0, cgroup_id: 0, config: IdentityConfig::default() },
    };
    // Neither open nor closed: the full judgement that follows decides (see `caller`).
    let Some(slot) = active_slot() else {
        return seen;
    };
    let (cgroup_id, epoch, record) = identity::current_rcu();
    if let Some(line) = lines::get(cgroup_id, slot, epoch, record) {
        seen.unmanaged = line.identity == 0;
        seen.managed = line.identity != 0;
        seen.subject = Subject { slot, identity: line.identity, cgroup_id, config: line.config };
    }
    seen
}

/// Generation of the policy set in `slot` (0 if unknown; only used for reporting).
#[inline(always)]
pub fn generation(slot: u32) -> u64 {
    slot_generation(slot).unwrap_or(0)
}

/// What the rules (or the default) say about one access.
#[derive(Clone, Copy)]
pub struct Judgement {
    pub action: u8,
    pub rule: u32,
    pub reason: u32,
}

impl Judgement {
    #[inline(always)]
    pub fn from_rule(found: (u8, u32), default: u8) -> Self {
        if found.0 == action::NONE {
            count(stat::DEFAULT_FALLBACK);
            Self { action: default, rule: RULE_DEFAULT, reason: reason::DEFAULT }
        } else {
            Self { action: found.0, rule: found.1, reason: reason::RULE }
        }
    }

    /// A denial without judging (path too long, internal error).
    #[inline(always)]
    pub fn refuse(why: u32) -> Self {
        count(if why == reason::PATH_TOO_LONG { stat::PATH_TOO_LONG } else { stat::INTERNAL_ERROR });
        Self { action: action::DENY, rule: RULE_DEFAULT, reason: why }
    }
}

/// A denial if the identity is quarantined and its quarantine restricts any of `bits`.
#[inline(always)]
pub fn quarantined(identity: u32, bits: u32) -> Option<Judgement> {
    // No quarantine anywhere (the flag is raised before an entry is added): no lookup.
    // An unreadable flag is taken as raised (fail-closed: the lookup is made).
    if word_low(word::QUARANTINE_ANY) == Some(0) {
        return None;
    }
    // SAFETY: plain value read once.
    let quarantine = unsafe { QUARANTINE.get(&identity) }?;
    if quarantine.restricts & bits == 0 {
        return None;
    }
    count(stat::QUARANTINED);
    Some(Judgement { action: action::DENY, rule: RULE_DEFAULT, reason: reason::QUARANTINED })
}

/// A denial if the file at this path (full-path hash, length and keyed proof) is a
/// revoked credential. An entry whose proof differs is still a denial (`forged-path`): a
/// path made to collide with a revoked one gains nothing.
#[inline(always)]
pub fn revoked(hash: u64, len: usize, proof: u64) -> Option<Judgement> {
    // No revoked credential anywhere (the flag is raised before an entry is added): no
    // lookup. An unreadable flag is taken as raised (fail-closed: the lookup is made).
    if word_low(word::REVOKED_ANY) == Some(0) {
        return None;
    }
    #[expect(clippy::cast_possible_truncation, reason = "len < MAX_PATH")]
    let key = RevokedKey { hash, len: len as u32, pad: 0 };
    // SAFETY: plain value read once.
    let entry = unsafe { REVOKED.get(&key) }?;
    let id = entry.id;
    if entry.check != proof {
        return Some(Judgement::refuse(reason::FORGED_PATH));
    }
    count(stat::CREDENTIAL_REVOKED);
    Some(Judgement { action: action::DENY, rule: id, reason: reason::CREDENTIAL_REVOKED })
}

/// If `judgement` denies and an unexpired grant for this exact path and access exists,
/// the grant's allow instead. `path` is (index hash, length, keyed proof); a grant whose
/// proof differs is ignored (the path only collides with the granted one).
#[inline(always)]
pub fn granted_path(judgement: Judgement, identity: u32, path: (u64, usize, u64), kind: u8) -> Judgement {
    if judgement.action == action::ALLOW || reason::is_live(judgement.reason) {
        return judgement;
    }
    let (hash, len, proof) = path;
    #[expect(clippy::cast_possible_truncation, reason = "len < MAX_PATH")]
    let key = GrantKey { hash, identity, len: len as u16, kind, pad: 0 };
    // SAFETY: plain value read once.
    match unsafe { GRANTS.get(&key) } {
        Some(grant) if grant.check == proof => unexpired(judgement, grant.expires_ns, grant.id),
        _ => judgement,
    }
}

/// If `judgement` denies and an unexpired grant covers this destination, its allow.
#[inline(always)]
pub fn granted_net(
    judgement: Judgement,
    identity: u32,
    addr: [u8; 16],
    port: u16,
    protocol: u8,
) -> Judgement {
    if judgement.action == action::ALLOW || reason::is_live(judgement.reason) {
        return judgement;
    }
    let key = Key::new(NET_GRANT_FIXED_BITS + 128, NetGrantKey { identity, addr });
    let Some(grant) = NET_GRANTS.get(&key) else {
        return judgement;
    };
    if (grant.proto != proto::ANY && grant.proto != protocol) || port < grant.port_lo || port > grant.port_hi
    {
        return judgement;
    }
    unexpired(judgement, grant.expires_ns, grant.id)
}

#[inline(always)]
fn unexpired(judgement: Judgement, expires_ns: u64, id: u32) -> Judgement {
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_boot_ns() } >= expires_ns {
        return judgement;
    }
    count(stat::GRANTED);
    Judgement { action: action::ALLOW, rule: id, reason: reason::GRANT }
}

/// The decision and the errno the caller gets. Audit mode turns a policy deny into
/// `audit`; live-state denials (quarantine, revoked credential) hold in either mode.
#[inline(always)]
pub fn decide(config: &IdentityConfig, judgement: &Judgement) -> (u32, i32) {
    let (verdict, errno) = decision_of(config, judgement);
    count(match verdict {
        decision::ALLOW => stat::ALLOW,
        decision::AUDIT => stat::AUDIT,
        _ => stat::DENY,
    });
    (verdict, errno)
}

/// [`decide`] without counting the decision.
#[inline(always)]
pub fn decision_of(config: &IdentityConfig, judgement: &Judgement) -> (u32, i32) {
    if judgement.action == action::ALLOW {
        (decision::ALLOW, 0)
    } else if config.mode == mode::AUDIT && !reason::is_live(judgement.reason) {
        (decision::AUDIT, 0)
    } else if judgement.action == action::APPROVE {
        (decision::PENDING, EPERM)
    } else {
        (decision::DENY, EPERM)
    }
}

/// Deny and audit verdicts are always reported, and so are allows that a grant made;
/// other allows only when the policy asks.
#[inline(always)]
pub fn reported(config: &IdentityConfig, verdict: u32, why: u32) -> bool {
    verdict != decision::ALLOW || why == reason::GRANT || config.flags & IDENTITY_LOG_ALLOW != 0
}

/// The identity's configuration, or an enforcing one when it cannot be read, so that
/// refusals of managed tasks are never softened by a missing entry.
#[inline(always)]
pub fn config_or_enforce(slot: u32, identity: u32) -> IdentityConfig {
    // SAFETY: plain value copied out at once.
    match unsafe { IDENTITIES.get(&IdentityKey { identity, slot }) } {
        Some(config) => *config,
        None => IdentityConfig {
            mode: mode::ENFORCE,
            exec_default: action::DENY,
            file_default: action::DENY,
            net_default: action::DENY,
            listen_default: action::DENY,
            pad: [0; 3],
            flags: 0,
        },
    }
}
