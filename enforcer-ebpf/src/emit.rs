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
    maps::{EVENT_BUF, EVENTS, REPORT_BUF, count},
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
/// only counted, see `aggregate`): writes it, flat, into this CPU's `REPORT_BUF` for
/// [`enforcer_report`], which builds and sends the event.
#[inline(always)]
pub fn verdict(v: &Verdict, target: &Target) {
    if stage(v, target) {
        enforcer_report(1);
    }
}

/// Writes `v` and `target` into this CPU's `REPORT_BUF`; false if it cannot.
#[inline(always)]
fn stage(v: &Verdict, target: &Target) -> bool {
    // Fail-open for the report only: index 0 of a per-CPU array always exists; without it
    // the verdict cannot be reported, and it stands.
    let Some(r) = REPORT_BUF.get_ptr_mut(0) else {
        dropped(v.hook);
        return false;
    };
    let (kind, access, buf, len, hash) = match *target {
        Target::Path { access, buf, len, hash } => (report_kind::PATH, access, buf as u64, len, hash),
        Target::Object { what, name } => (report_kind::OBJECT, what, name as u64, 0, 0),
        Target::Net { .. } => (report_kind::NET, 0, 0, 0, 0),
    };
    let (family, addr, port, proto) = match *target {
        Target::Net { family, addr, port, proto } => (family, addr, port, proto),
        _ => (0, [0; 16], 0, 0),
    };
    // SAFETY: `r` is this CPU's map value; every field is plain data.
    unsafe {
        r.write(Report {
            owner: bpf_get_current_pid_tgid(),
            hook: v.hook,
            slot: v.slot,
            identity: v.identity,
            rule: v.judgement.rule,
            reason: v.judgement.reason,
            decision: v.decision,
            errno: v.errno,
            access,
            cgroup_id: v.cgroup_id,
            kind,
            len,
            buf,
            hash,
            family,
            port,
            proto,
            pad: [0; 3],
            addr,
            aggregating: core::mem::zeroed(),
        });
    }
    true
}

/// The first half of [`verdict`], for the exec, open and map judgement (`lsm`): stages
/// the verdict and says whether there is a report to send. Their deepest call chain
/// judges, and the report's frame on top of it passed the kernel's 512 bytes for a chain
/// of calls ("combined stack size"); the program sends it with [`send_staged`] once the
/// judgement has returned, from its own small frame.
#[inline(always)]
pub fn stage_verdict(v: &Verdict, target: &Target) -> bool {
    stage(v, target)
}

/// The second half of [`verdict`]: sends what [`stage_verdict`] staged on this CPU if
/// `staged` (its answer) is not 0. The program calls it whatever the answer, which the
/// global function tests: a branch on it here would make the verifier track the answer
/// back through every path of the judgement that gave it. A program that preempted the
/// stager and reported in between is seen by the report's owner check (its verdict is
/// counted as dropped, never sent with another's data).
#[inline(always)]
pub fn send_staged(staged: u64) {
    enforcer_report(staged);
}

/// What a [`Report`]'s target fields hold.
mod report_kind {
    pub const PATH: u32 = 0;
    pub const OBJECT: u32 = 1;
    pub const NET: u32 = 2;
}

/// A verdict and its target as [`enforcer_report`] reads them from `REPORT_BUF`: plain
/// numbers, kernel addresses included (read with helpers only).
#[repr(C)]
pub struct Report {
    /// The reporter's pid/tgid: a program that preempted it on this CPU and reported in
    /// between wrote its own (see [`enforcer_report`]).
    owner: u64,
    hook: u32,
    slot: u32,
    identity: u32,
    rule: u32,
    reason: u32,
    decision: u32,
    errno: i32,
    /// The event's `access` field: a path's access or an object's `what`.
    access: u32,
    cgroup_id: u64,
    /// One of `report_kind`.
    kind: u32,
    /// Bytes of path at `buf` (a path target; an object's `buf` is a kernel string).
    len: u32,
    buf: u64,
    hash: u64,
    family: u16,
    port: u16,
    proto: u8,
    pad: [u8; 3],
    addr: [u8; 16],
    /// Written by [`enforcer_report`] only.
    aggregating: aggregate::Scratch,
}

/// Builds the event of this CPU's `REPORT_BUF` in its `EVENT_BUF` and copies only its
/// header and the path bytes in use into the ring buffer, if `staged` is not 0 (see
/// [`send_staged`]). A full ring buffer (or a missing or reused build buffer) is counted
/// as a dropped event, never turned into a different verdict.
///
/// A global function (exported, not inlined, one scalar argument: its frame is all it
/// adds to the stack), so the kernel verifies it once per program from an unknown state,
/// instead of once more for every state in which a program's paths reach a report.
/// Always returns 0 (a global function returns a number).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn enforcer_report(staged: u64) -> i32 {
    if staged != 0 {
        send();
    }
    0
}

/// Builds and sends the event of this CPU's `REPORT_BUF` (see [`enforcer_report`]).
#[inline(always)]
fn send() {
    // Fail-open for the report only: index 0 of a per-CPU array always exists; without
    // them no event can be built, and the verdict stands.
    let (Some(r), Some(buf)) = (REPORT_BUF.get_ptr_mut(0), EVENT_BUF.get_ptr_mut(0)) else {
        dropped(0);
        return;
    };
    // SAFETY: `r` and `buf` are this CPU's map values, `buf` large enough for every field
    // written below; every field is plain data.
    unsafe {
        let owner = bpf_get_current_pid_tgid();
        core::ptr::write_volatile(&raw mut (*buf).owner, owner);
        // A program that preempted the reporter on this CPU before this call reported in
        // between: ours is lost (counted), the verdict stands.
        if core::ptr::read_volatile(&raw const (*r).owner) != owner {
            dropped((*r).hook);
            return;
        }
        let ev = &raw mut (*buf).event;
        fill(ev, &*r);
        // Approval requests are never folded into others: each one opens its own request.
        // Nor is a verdict whose target has bytes but no hash (see `fill`).
        let unkeyed = (*ev).path_len != 0 && (*ev).target_hash == 0;
        if (*r).decision != decision::PENDING && !unkeyed && aggregate::repeat(ev, &raw mut (*r).aggregating)
        {
            return;
        }
        // A program that preempted this one on this CPU built its own event here: ours is
        // lost (counted), the verdict stands. A repeat counted above is still reported by
        // the agent's next read of its entry.
        if core::ptr::read_volatile(&raw const (*buf).owner) != owner {
            dropped((*r).hook);
            return;
        }
        // Masked so the verifier sees the length within the buffer (it is < MAX_PATH).
        let size = VERDICT_HEADER + ((*ev).path_len as usize & (MAX_PATH - 1));
        let bytes = &*core::ptr::slice_from_raw_parts(ev.cast::<u8>(), size);
        if EVENTS.output(bytes, 0).is_err() {
            dropped((*r).hook);
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
unsafe fn fill(ev: *mut VerdictEvent, v: &Report) {
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
        (*ev).rule = v.rule;
        (*ev).decision = v.decision;
        (*ev).reason = v.reason;
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
        (*ev).access = v.access;
        match v.kind {
            report_kind::PATH => {
                // Masked for the verifier; the path is shorter than MAX_PATH.
                #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
                let len = v.len & (MAX_PATH as u32 - 1);
                if len != 0
                    && v.buf != 0
                    && bpf_probe_read_kernel(
                        (&raw mut (*ev).path).cast::<c_void>(),
                        len,
                        v.buf as *const c_void,
                    ) == 0
                {
                    (*ev).path_len = len;
                    // No hash of its own here: a second `bpf_loop` on the exec and open
                    // paths more than doubled their verification on 6.12. A path the scan
                    // did not hash (refused before it) keeps 0 and is not aggregated.
                    (*ev).target_hash = v.hash;
                }
            }
            report_kind::OBJECT => {
                if v.buf != 0
                    && let Ok(bytes) = bpf_probe_read_kernel_str_bytes(v.buf as *const u8, &mut (*ev).path)
                {
                    #[expect(clippy::cast_possible_truncation, reason = "at most MAX_PATH")]
                    {
                        (*ev).path_len = bytes.len() as u32;
                    }
                    (*ev).target_hash = name_hash(ev);
                }
            }
            _ => {
                (*ev).proto = v.proto;
                (*ev).port = v.port;
                (*ev).family = v.family;
                (*ev).addr = v.addr;
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
