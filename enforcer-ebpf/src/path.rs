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
    maps::{PathKey, PathRule, Scratch},
    verdict::{action, reason},
};

use crate::{
    maps::{PATH_RULES, SCRATCH},
    proof,
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

    /// True if no other task reused the buffer while this (sleepable) program was
    /// preempted; a reused buffer means the judgement was made on someone else's path.
    pub fn still_ours(&self) -> bool {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.scratch).owner) == self.owner }
    }
}

/// Writes the absolute path of `path` into the scratch buffer.
/// `Err` carries the reason a path cannot be judged.
#[inline(always)]
pub fn resolve(path: *mut bpf_path) -> Result<Resolved, u32> {
    // Fail-closed: without the buffer the path cannot be judged.
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(reason::INTERNAL_ERROR)?;
    let owner = bpf_get_current_pid_tgid();
    // SAFETY: valid map value; `bpf_d_path` writes at most MAX_PATH bytes into `buf`.
    let written = unsafe {
        core::ptr::write_volatile(&raw mut (*scratch).owner, owner);
        #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
        bpf_d_path(path, (*scratch).buf.as_mut_ptr().cast(), MAX_PATH as u32)
    };
    if written == -ENAMETOOLONG {
        return Err(reason::PATH_TOO_LONG);
    }
    // Fail-closed: any other d_path error leaves nothing to judge.
    if written <= 0 {
        return Err(reason::INTERNAL_ERROR);
    }
    #[expect(clippy::cast_sign_loss, clippy::cast_possible_truncation, reason = "checked > 0")]
    let len = (written as usize - 1) & (MAX_PATH - 1);
    Ok(Resolved { scratch, len, owner })
}

/// The most specific rule found for each access: `(action, rule index)`, and the hash of
/// the whole path (for exact-path live state).
#[derive(Clone, Copy)]
pub struct Found {
    pub read: (u8, u32),
    pub write: (u8, u32),
    pub hash: u64,
}

/// What proves the rule found for one access: its keyed check and the length of the
/// path prefix it names.
#[derive(Clone, Copy)]
#[repr(C)]
struct Proof {
    check: u64,
    len: u64,
}

/// State of one scan over a path, shared with the `bpf_loop` callback.
#[repr(C)]
struct Scan {
    buf: *const u8,
    len: u64,
    hash: u64,
    slot: u32,
    identity: u32,
    dir_kind: u8,
    found: Found,
    read_proof: Proof,
    write_proof: Proof,
}

/// Looks up every directory prefix (shortest first, so longer ones override), then the
/// whole path as a directory, then the whole path as an exact rule.
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
    let mut scan = Scan {
        buf: resolved.buf(),
        len: resolved.len as u64,
        hash: FNV_OFFSET,
        slot,
        identity,
        dir_kind,
        found: Found { read: (action::NONE, 0), write: (action::NONE, 0), hash: 0 },
        read_proof: Proof { check: 0, len: 0 },
        write_proof: Proof { check: 0, len: 0 },
    };
    // SAFETY: the callback only touches `scan` and the scratch buffer it points to.
    #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
    let done = unsafe { bpf_loop(MAX_PATH as u32, scan_byte as *mut c_void, (&raw mut scan).cast(), 0) };
    // Fail-closed: a loop that did not run leaves the path unjudged.
    if done < 0 {
        return Err(reason::INTERNAL_ERROR);
    }
    let whole = resolved.len as u64;
    let (as_dir, as_exact) = (
        key(scan.hash, resolved.len, identity, dir_kind, slot),
        key(scan.hash, resolved.len, identity, exact_kind, slot),
    );
    apply(&mut scan, &as_dir, whole);
    apply(&mut scan, &as_exact, whole);
    // The rules found by index must be the ones the path names (fail-closed otherwise).
    for (found, proof) in [(scan.found.read, scan.read_proof), (scan.found.write, scan.write_proof)] {
        #[expect(clippy::cast_possible_truncation, reason = "a prefix length < MAX_PATH")]
        if found.0 != action::NONE && !proof::holds(scan.buf, proof.len as usize, proof.check) {
            return Err(reason::FORGED_PATH);
        }
    }
    let mut found = scan.found;
    found.hash = scan.hash;
    Ok(found)
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
        let key = key(scan.hash, at, scan.identity, scan.dir_kind, scan.slot);
        apply(scan, &key, at as u64);
    }
    scan.hash ^= u64::from(byte);
    scan.hash = scan.hash.wrapping_mul(FNV_PRIME);
    0
}

#[inline(always)]
fn key(hash: u64, len: usize, identity: u32, kind: u8, slot: u32) -> PathKey {
    #[expect(clippy::cast_possible_truncation, reason = "len < MAX_PATH, slot < SLOTS")]
    PathKey { hash, identity, len: len as u16, kind, slot: slot as u8 }
}

#[inline(always)]
fn apply(scan: &mut Scan, key: &PathKey, len: u64) {
    // SAFETY: plain value read once.
    if let Some(rule) = unsafe { PATH_RULES.get(key) } {
        let rule: PathRule = *rule;
        if rule.read_action != action::NONE {
            scan.found.read = (rule.read_action, rule.read_rule);
            scan.read_proof = Proof { check: rule.check, len };
        }
        if rule.write_action != action::NONE {
            scan.found.write = (rule.write_action, rule.write_rule);
            scan.write_proof = Proof { check: rule.check, len };
        }
    }
}
