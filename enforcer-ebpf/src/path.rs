//! Path resolution and matching for exec and file rules.
//!
//! The kernel writes the absolute path with `bpf_d_path`; one pass over its bytes hashes
//! every directory prefix and looks each up, so a rule costs a hash lookup and no string
//! is built or compared in the program.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::path as bpf_path,
    helpers::{bpf_d_path, bpf_get_current_pid_tgid, bpf_loop},
};
use enforcer_common::{
    FNV_OFFSET, FNV_PRIME, MAX_PATH,
    maps::{OpenStaged, PathKey, PathRule, Scratch},
    rule_filter::{RuleFilter, which},
    sip::Sip,
    verdict::{action, reason},
};

use crate::{
    diag,
    maps::{PATH_RULES, SCRATCH},
    rule_filters,
};

const ENAMETOOLONG: i64 = 36;

/// A resolved path in the per-CPU scratch buffer.
pub struct Resolved {
    pub scratch: *mut Scratch,
    /// Length without the terminating NUL.
    pub len: usize,
    owner: u64,
}

impl Resolved {
    pub fn buf(&self) -> *const u8 {
        // SAFETY: `scratch` is a valid map value pointer for the program's lifetime.
        unsafe { (*self.scratch).buf.as_ptr() }
    }

    /// The open cache's key and stamp staged before the path was written.
    pub fn staged(&self) -> *mut OpenStaged {
        // SAFETY: as above.
        unsafe { &raw mut (*self.scratch).staged }
    }

    /// True if no other task reused the buffer while this program was preempted (an RCU
    /// read-side section is preemptible on preemptible kernels); a reused buffer means the judgement was made on someone else's path.
    pub fn still_ours(&self) -> bool {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.scratch).owner) == self.owner }
    }
}

/// The per-CPU scratch buffer, claimed by the current task: what is staged in it before
/// the path is written (`staged`) is then seen as reused along with the path.
pub struct Claimed {
    scratch: *mut Scratch,
    owner: u64,
}

impl Claimed {
    /// Where the open cache's key and stamp are staged before the path is written.
    pub fn staged(&self) -> *mut OpenStaged {
        // SAFETY: `scratch` is a valid map value pointer for the program's lifetime.
        unsafe { &raw mut (*self.scratch).staged }
    }

    /// Writes the absolute path of `path` into the buffer.
    /// `Err` carries the reason a path cannot be judged; `hook` is named in diagnostics.
    #[inline(always)]
    pub fn resolve(self, path: *mut bpf_path, hook: u32) -> Result<Resolved, u32> {
        let Self { scratch, owner } = self;
        // SAFETY: valid map value; `bpf_d_path` writes at most MAX_PATH bytes into `buf`.
        #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
        let written = unsafe { bpf_d_path(path, (*scratch).buf.as_mut_ptr().cast(), MAX_PATH as u32) };
        if written == -ENAMETOOLONG {
            diag::warning!(
                "hook {}: path over {} bytes (bpf_d_path ENAMETOOLONG): refused as path-too-long",
                hook: u32 = hook,
                max: usize = MAX_PATH,
            );
            return Err(reason::PATH_TOO_LONG);
        }
        // Fail-closed: any other d_path error leaves nothing to judge.
        if written <= 0 {
            diag::error!(
                "hook {}: bpf_d_path failed ({}): refused as internal-error",
                hook: u32 = hook,
                written: i64 = written,
            );
            return Err(reason::INTERNAL_ERROR);
        }
        #[expect(clippy::cast_sign_loss, clippy::cast_possible_truncation, reason = "checked > 0")]
        let len = (written as usize - 1) & (MAX_PATH - 1);
        Ok(Resolved { scratch, len, owner })
    }
}

/// Claims the scratch buffer for the current task. `Err` carries the reason a path cannot
/// be judged; `hook` is named in diagnostics.
#[inline(always)]
pub fn claim(hook: u32) -> Result<Claimed, u32> {
    // Fail-closed: without the buffer the path cannot be judged.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        diag::error!("hook {}: SCRATCH unavailable: refused as internal-error", hook: u32 = hook);
        return Err(reason::INTERNAL_ERROR);
    };
    let owner = bpf_get_current_pid_tgid();
    // SAFETY: valid map value.
    unsafe { core::ptr::write_volatile(&raw mut (*scratch).owner, owner) };
    Ok(Claimed { scratch, owner })
}

/// The most specific rule found for each access: `(action, rule index)`, the hash of the
/// whole path (the index of exact-path live state) and its keyed proof.
#[derive(Clone, Copy)]
pub struct Found {
    pub read: (u8, u32),
    pub write: (u8, u32),
    pub hash: u64,
    pub proof: u64,
}

impl Found {
    pub const NOTHING: Self = Self { read: (action::NONE, 0), write: (action::NONE, 0), hash: 0, proof: 0 };
}

/// The agent's secret key of path proofs (`enforcer_common::sip`), set at load. Managed
/// tasks cannot read it: the `bpf` hook refuses them every way to an existing object.
#[unsafe(no_mangle)]
static PATH_KEY0: u64 = 0;
#[unsafe(no_mangle)]
static PATH_KEY1: u64 = 0;

/// The secret key of path proofs.
#[inline(always)]
pub fn secret() -> [u64; 2] {
    // SAFETY: reads of our own globals; volatile so the compiler does not fold the 0s.
    unsafe {
        [core::ptr::read_volatile(&raw const PATH_KEY0), core::ptr::read_volatile(&raw const PATH_KEY1)]
    }
}

/// State of one scan over a path, shared with the `bpf_loop` callback.
#[repr(C)]
struct Scan {
    buf: *const u8,
    len: u64,
    hash: u64,
    /// Keyed hash of the bytes before the current 8-byte word, and that word so far.
    sip: Sip,
    tail: u64,
    /// The slot's path rule filter (`rule_filters`).
    filter: *const RuleFilter,
    slot: u32,
    identity: u32,
    dir_kind: u8,
    /// Set when an entry was found by index whose proof is not this path's.
    forged: u8,
    found: Found,
}

/// Looks up every directory prefix (shortest first, so longer ones override), then the
/// whole path as a directory, then the whole path as an exact rule.
///
/// The FNV-1a index can be forged offline; every entry found by it also carries the
/// keyed hash (SipHash-1-3) of its path, computed here in the same pass (one 8-byte word at a time,
/// finished only where an entry is found), so a colliding path is refused as
/// `forged-path` instead of being judged by the entry it collides with.
///
/// The byte loop runs under `bpf_loop`: as a plain bounded loop the verifier walked every
/// iteration and gave up ("BPF program is too large. Processed 1000001 insn").
#[inline(always)]
pub fn lookup(
    resolved: &Resolved,
    slot: u32,
    identity: u32,
    exact_kind: u8,
    dir_kind: u8,
) -> Result<Found, u32> {
    let key = secret();
    // Fail-closed: the filter's index always exists, so this is unreachable; without it
    // the rules could not be consulted.
    let Some(filter) = rule_filters::of(slot, which::PATH) else {
        diag::error!("path rule filter of slot {} unreadable: refused as internal-error", slot: u32 = slot);
        return Err(reason::INTERNAL_ERROR);
    };
    // The loop state starts from values the verifier cannot know, equal at run time to
    // the plain ones: from known constants, 6.12 verifies the callback again for each
    // mix of constant and found values (file_open: 545k instructions; 88k this way).
    let zero = unknown_zero(resolved.owner);
    #[expect(clippy::cast_possible_truncation, reason = "zero, whatever its width")]
    let (zero8, zero32) = (zero as u8, zero as u32);
    let mut scan = Scan {
        buf: resolved.buf(),
        len: resolved.len as u64,
        hash: FNV_OFFSET ^ zero,
        sip: Sip::new(key),
        tail: zero,
        filter,
        slot,
        identity,
        dir_kind,
        forged: zero8,
        found: Found {
            read: (action::NONE ^ zero8, zero32),
            write: (action::NONE ^ zero8, zero32),
            ..Found::NOTHING
        },
    };
    // SAFETY: the callback only touches `scan` and the scratch buffer it points to.
    #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
    let done = unsafe { bpf_loop(MAX_PATH as u32, scan_byte as *mut c_void, (&raw mut scan).cast(), 0) };
    // Fail-closed: a loop that did not run leaves the path unjudged.
    if done < 0 {
        return Err(reason::INTERNAL_ERROR);
    }
    let proof = scan.sip.finish(scan.tail, resolved.len);
    let (as_dir, as_exact) = (
        key_of(scan.hash, resolved.len, identity, dir_kind, slot),
        key_of(scan.hash, resolved.len, identity, exact_kind, slot),
    );
    apply(&mut scan, &as_dir, proof);
    apply(&mut scan, &as_exact, proof);
    // Fail-closed: an entry matched the index but not the path.
    if scan.forged != 0 {
        return Err(reason::FORGED_PATH);
    }
    let mut found = scan.found;
    found.hash = scan.hash;
    found.proof = proof;
    Ok(found)
}

/// 0 at run time, an unknown scalar to the verifier: the top bit of a task's
/// `tgid << 32 | pid` (`pid_tgid`), which is 0 (a tgid is below `PID_MAX_LIMIT`, 2^22),
/// spread over all 64 bits. A loop's state starts from it where the verifier would
/// otherwise walk the loop's step once for each constant it could start from.
#[inline(always)]
pub fn unknown_zero(pid_tgid: u64) -> u64 {
    (pid_tgid >> 63).wrapping_neg()
}

/// One byte of the scan: at each `/` after the first, looks up the directory so far.
/// Returns 1 to stop at the end of the path.
#[inline(never)]
unsafe extern "C" fn scan_byte(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` passed to bpf_loop.
    let scan = unsafe { &mut *ctx.cast::<Scan>() };
    if index >= scan.len {
        return 1;
    }
    #[expect(clippy::cast_possible_truncation, reason = "masked below MAX_PATH")]
    let at = (index as usize) & (MAX_PATH - 1);
    // SAFETY: `buf` is the scratch buffer of MAX_PATH bytes; `at` is masked into it.
    let byte = unsafe { *scan.buf.add(at) };
    if byte == b'/' && at > 0 {
        let key = key_of(scan.hash, at, scan.identity, scan.dir_kind, scan.slot);
        if let Some(rule) = rule_at(scan.filter, &key) {
            // The proof of the prefix is finished only here, where an entry was found.
            let proof = scan.sip.finish(scan.tail, at);
            apply_rule(scan, &rule, proof);
        }
    }
    scan.hash ^= u64::from(byte);
    scan.hash = scan.hash.wrapping_mul(FNV_PRIME);
    scan.tail |= u64::from(byte) << (8 * (index & 7));
    if index & 7 == 7 {
        scan.sip.word(scan.tail);
        scan.tail = 0;
    }
    0
}

#[inline(always)]
fn key_of(hash: u64, len: usize, identity: u32, kind: u8, slot: u32) -> PathKey {
    #[expect(clippy::cast_possible_truncation, reason = "len < MAX_PATH, slot < SLOTS")]
    PathKey { hash, identity, len: len as u16, kind, slot: slot as u8 }
}

#[inline(always)]
fn apply(scan: &mut Scan, key: &PathKey, proof: u64) {
    if let Some(rule) = rule_at(scan.filter, key) {
        apply_rule(scan, &rule, proof);
    }
}

/// The rule at `key`, looked up only where the slot's `filter` may hold the key.
#[inline(always)]
fn rule_at(filter: *const RuleFilter, key: &PathKey) -> Option<PathRule> {
    if !rule_filters::may_hold_path(filter, key.hash, key.len, key.identity, key.kind) {
        return None;
    }
    // SAFETY: plain value read once.
    unsafe { PATH_RULES.get(key) }.copied()
}

/// Takes `rule` (found at a prefix whose keyed hash is `proof`) as the most specific so
/// far, unless its proof differs.
#[inline(always)]
fn apply_rule(scan: &mut Scan, rule: &PathRule, proof: u64) {
    if rule.check != proof {
        scan.forged = 1;
        return;
    }
    if rule.read_action != action::NONE {
        scan.found.read = (rule.read_action, rule.read_rule);
    }
    if rule.write_action != action::NONE {
        scan.found.write = (rule.write_action, rule.write_rule);
    }
}
