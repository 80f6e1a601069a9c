//! Keyed proofs of paths: rules, grants and revoked credentials are found by an FNV-1a
//! index of the path, which anyone can forge offline; each carries the SipHash-1-3 of its
//! path under the agent's secret key (`enforcer_common::sip`), checked here on a hit.
//! The key lives in read-only globals of this object, which managed tasks cannot reach
//! (the `bpf` hook refuses them every way to an existing BPF object).

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use enforcer_common::{MAX_PATH, sip::Sip};

#[unsafe(no_mangle)]
static PATH_KEY0: u64 = 0;
#[unsafe(no_mangle)]
static PATH_KEY1: u64 = 0;

/// State of one proof, shared with the `bpf_loop` callback.
#[repr(C)]
struct Proof {
    buf: *const u8,
    words: u64,
    sip: Sip,
}

/// Whether the first `len` bytes of `buf` (the per-CPU path buffer) hash to `check`.
#[inline(always)]
pub fn holds(buf: *const u8, len: usize, check: u64) -> bool {
    // SAFETY: reads of our own globals; volatile so the compiler does not fold the 0s.
    let key = unsafe {
        [core::ptr::read_volatile(&raw const PATH_KEY0), core::ptr::read_volatile(&raw const PATH_KEY1)]
    };
    let mut proof = Proof { buf, words: (len / 8) as u64, sip: Sip::new(key) };
    #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH / 8 fits in u32")]
    // SAFETY: the callback only reads the path buffer through `proof`.
    let done = unsafe { bpf_loop((MAX_PATH / 8) as u32, word as *mut c_void, (&raw mut proof).cast(), 0) };
    // Fail-closed: a proof that could not be computed does not hold.
    if done < 0 {
        return false;
    }
    let rest = len % 8;
    let tail = if rest == 0 {
        0
    } else {
        // SAFETY: an aligned word inside the MAX_PATH-byte buffer (the offset is masked).
        let last = unsafe { *buf.add((len & !7) & (MAX_PATH - 8)).cast::<u64>() };
        last & ((1u64 << (8 * rest)) - 1)
    };
    proof.sip.finish(tail, len) == check
}

/// One full word of the path.
#[inline(never)]
unsafe extern "C" fn word(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Proof` passed to bpf_loop.
    let proof = unsafe { &mut *ctx.cast::<Proof>() };
    if index >= proof.words {
        return 1;
    }
    #[expect(clippy::cast_possible_truncation, reason = "masked below MAX_PATH")]
    let at = ((index * 8) as usize) & (MAX_PATH - 8);
    // SAFETY: an aligned word inside the buffer.
    let m = unsafe { *proof.buf.add(at).cast::<u64>() };
    proof.sip.word(m);
    0
}
