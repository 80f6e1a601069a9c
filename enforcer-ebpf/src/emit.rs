//! Verdict events into the ring buffer.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_loop,
    bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_kernel,
};
use enforcer_common::{
    ABI_VERSION, MAX_PATH,
    event::{EVENT_VERDICT, VERDICT_HEADER, VerdictEvent},
    sip::Sip,
    verdict::{decision, stat},
};

use crate::{
    aggregate, diag,
    maps::{EVENT_BUF, EVENTS, count},
    policy::{self, Judgement, Subject, generation},
};

/// The parts of a verdict every hook knows.
pub struct Verdict {
    pub hook: u32,
    pub slot: u32,
    pub identity: u32,
    pub cgroup_id: u64,
    pub judgement: Judgement,
    pub decision: u32,
    pub errno: i32,
}

/// What the verdict was about.
pub enum Target {
    /// Exec or file open: `len` bytes of path in `buf` (may be 0 when unknown), whose
    /// keyed hash (the path scan's proof) is `hash` (0: not computed; then the verdict is
    /// not aggregated). Keyed, so that no path can be made to fold into another's record.
    Path {
        access: u32,
        buf: *const u8,
        len: u32,
        hash: u64,
    },
    Net {
        family: u16,
        addr: [u8; 16],
        port: u16,
        proto: u8,
    },
    /// A process, a `bpf()` command or a directory entry: `what` goes to the event's
    /// `access` field, `name` (a kernel string, may be null) to its path.
    Object {
        what: u32,
        name: *const u8,
    },
}

/// Decides a judged access for `subject`, reports it if its policy asks, and returns the
/// errno the caller gets (0 = allowed).
#[inline(always)]
pub fn conclude(hook: u32, subject: &Subject, judgement: Judgement, target: &Target) -> i32 {
    let (decision, errno) = policy::decide(&subject.config, &judgement);
    if policy::reported(&subject.config, decision, judgement.reason) {
        verdict(
            &Verdict {
                hook,
                slot: subject.slot,
                identity: subject.identity,
                cgroup_id: subject.cgroup_id,
                judgement,
                decision,
                errno,
            },
            target,
        );
    }
    errno
}

/// Sends one verdict, unless it repeats one reported less than a window ago (then it is
/// only counted, see `aggregate`). The event is built in the per-CPU `EVENT_BUF` and only
/// its header and the path bytes in use are copied into the ring buffer. A full ring
/// buffer (or a missing or reused build buffer) is counted as a dropped event, never
/// turned into a different verdict.
#[inline(always)]
pub fn verdict(v: &Verdict, target: &Target) {
    // Fail-open for the report only: index 0 of a per-CPU array always exists; without it
    // no event can be built, and the verdict stands.
    let Some(buf) = EVENT_BUF.get_ptr_mut(0) else {
        dropped(v.hook);
        return;
    };
    // SAFETY: `buf` is this CPU's map value, large enough for every field written below;
    // every field is plain data.
    unsafe {
        let owner = bpf_get_current_pid_tgid();
        core::ptr::write_volatile(&raw mut (*buf).owner, owner);
        let ev = &raw mut (*buf).event;
        fill(ev, v, target);
        // Approval requests are never folded into others: each one opens its own request.
        // Nor is a verdict whose target has bytes but no hash (see `fill`).
        let unkeyed = (*ev).path_len != 0 && (*ev).target_hash == 0;
        if v.decision != decision::PENDING && !unkeyed && aggregate::repeat(ev) {
            return;
        }
        // A program that preempted this one on this CPU built its own event here: ours is
        // lost (counted), the verdict stands. A repeat counted above is still reported by
        // the agent's next read of its entry.
        if core::ptr::read_volatile(&raw const (*buf).owner) != owner {
            dropped(v.hook);
            return;
        }
        // Masked so the verifier sees the length within the buffer (it is < MAX_PATH).
        let size = VERDICT_HEADER + ((*ev).path_len as usize & (MAX_PATH - 1));
        let bytes = &*core::ptr::slice_from_raw_parts(ev.cast::<u8>(), size);
        if EVENTS.output(bytes, 0).is_err() {
            dropped(v.hook);
        }
    }
}

/// Counts an event that could not be delivered.
#[inline(always)]
fn dropped(hook: u32) {
    count(stat::EVENTS_DROPPED);
    diag::warning!("hook {}: verdict event not delivered (EVENTS full or buffer reused): the verdict stands", hook: u32 = hook);
}

/// Writes every field of the event at `ev`, the target's bytes and their hash.
///
/// # Safety
/// `ev` points at a writable `VerdictEvent`.
#[inline(always)]
unsafe fn fill(ev: *mut VerdictEvent, v: &Verdict, target: &Target) {
    // SAFETY: as the caller promises.
    unsafe {
        let pid_tgid = bpf_get_current_pid_tgid();
        let uid_gid = bpf_get_current_uid_gid();
        (*ev).abi = ABI_VERSION;
        (*ev).kind = EVENT_VERDICT;
        (*ev).hook = v.hook;
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).generation = generation(v.slot);
        (*ev).cgroup_id = v.cgroup_id;
        (*ev).identity = v.identity;
        (*ev).rule = v.judgement.rule;
        (*ev).decision = v.decision;
        (*ev).reason = v.judgement.reason;
        (*ev).errno = v.errno;
        #[expect(clippy::cast_possible_truncation, reason = "upper/lower halves")]
        {
            (*ev).pid = (pid_tgid >> 32) as u32;
            (*ev).tid = pid_tgid as u32;
            (*ev).uid = uid_gid as u32;
            (*ev).gid = (uid_gid >> 32) as u32;
        }
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*ev).pad0 = 0;
        (*ev).pad1 = 0;
        (*ev).pad2 = 0;
        (*ev).sequence = 0;
        (*ev).epoch = 0;
        (*ev).repeat_first_ns = 0;
        (*ev).repeat_last_ns = 0;
        (*ev).target_hash = 0;
        (*ev).path_len = 0;
        (*ev).proto = 0;
        (*ev).port = 0;
        (*ev).family = 0;
        (*ev).addr = [0; 16];
        match *target {
            Target::Path { access, buf, len, hash } => {
                (*ev).access = access;
                // Masked for the verifier; the path is shorter than MAX_PATH.
                #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
                let len = len & (MAX_PATH as u32 - 1);
                if len != 0
                    && !buf.is_null()
                    && bpf_probe_read_kernel(
                        (&raw mut (*ev).path).cast::<c_void>(),
                        len,
                        buf.cast::<c_void>(),
                    ) == 0
                {
                    (*ev).path_len = len;
                    // No hash of its own here: a second `bpf_loop` on the exec and open
                    // paths more than doubled their verification on 6.12. A path the scan
                    // did not hash (refused before it) keeps 0 and is not aggregated.
                    (*ev).target_hash = hash;
                }
            }
            Target::Object { what, name } => {
                (*ev).access = what;
                if !name.is_null()
                    && let Ok(bytes) = bpf_probe_read_kernel_str_bytes(name, &mut (*ev).path)
                {
                    #[expect(clippy::cast_possible_truncation, reason = "at most MAX_PATH")]
                    {
                        (*ev).path_len = bytes.len() as u32;
                    }
                    (*ev).target_hash = name_hash(ev);
                }
            }
            Target::Net { family, addr, port, proto } => {
                (*ev).access = 0;
                (*ev).proto = proto;
                (*ev).port = port;
                (*ev).family = family;
                (*ev).addr = addr;
            }
        }
    }
}

/// State of [`hash_byte`]'s loop.
#[repr(C)]
struct Hashing {
    buf: *const u8,
    len: u64,
    sip: Sip,
    tail: u64,
}

/// Keyed hash (SipHash-1-3 with the path proofs' secret key) of the event's `path_len`
/// path bytes, under `bpf_loop` so the verifier walks one iteration: the name is chosen by
/// the caller, and an unkeyed hash would let one name be crafted to fold into another's
/// record. A loop that cannot run leaves the hash of nothing: the verdict is still
/// reported, only keyed more coarsely.
///
/// # Safety
/// `ev` points at a filled `VerdictEvent`.
#[inline(always)]
unsafe fn name_hash(ev: *const VerdictEvent) -> u64 {
    // SAFETY: as the caller promises.
    let mut state = unsafe {
        Hashing {
            buf: (&raw const (*ev).path).cast(),
            len: u64::from((*ev).path_len),
            sip: Sip::new(crate::path::secret()),
            tail: 0,
        }
    };
    // SAFETY: the callback reads only `state` and the event's path buffer.
    #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
    unsafe {
        bpf_loop(MAX_PATH as u32, hash_byte as *mut c_void, (&raw mut state).cast(), 0)
    };
    #[expect(clippy::cast_possible_truncation, reason = "below MAX_PATH")]
    state.sip.finish(state.tail, state.len as usize)
}

#[inline(never)]
unsafe extern "C" fn hash_byte(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Hashing` passed to bpf_loop.
    let state = unsafe { &mut *ctx.cast::<Hashing>() };
    if index >= state.len {
        return 1;
    }
    #[expect(clippy::cast_possible_truncation, reason = "masked below MAX_PATH")]
    let at = (index as usize) & (MAX_PATH - 1);
    // SAFETY: `buf` is the event's MAX_PATH-byte path; `at` is masked into it.
    let byte = unsafe { *state.buf.add(at) };
    state.tail |= u64::from(byte) << (8 * (index & 7));
    if index & 7 == 7 {
        state.sip.word(state.tail);
        state.tail = 0;
    }
    0
}
