//! Verdict events into the ring buffer.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
    bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_kernel,
};
use enforcer_common::{
    ABI_VERSION, MAX_PATH,
    event::{EVENT_VERDICT, VerdictEvent},
    verdict::stat,
};

use crate::{
    diag,
    maps::{EVENTS, count},
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
    /// Exec or file open: `len` bytes of path in `buf` (may be 0 when unknown).
    Path {
        access: u32,
        buf: *const u8,
        len: u32,
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

/// Sends one verdict. A full ring buffer is counted, never turned into a different verdict.
#[inline(always)]
pub fn verdict(v: &Verdict, target: &Target) {
    let Some(mut entry) = EVENTS.reserve::<VerdictEvent>(0) else {
        count(stat::EVENTS_DROPPED);
        diag::warning!("hook {}: EVENTS full: verdict event dropped (the verdict stands)", hook: u32 = v.hook);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; every field written
    // below is plain data.
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
        match *target {
            Target::Path { access, buf, len } => {
                (*ev).access = access;
                (*ev).proto = 0;
                (*ev).port = 0;
                (*ev).family = 0;
                (*ev).addr = [0; 16];
                (*ev).path_len = len;
                #[expect(clippy::cast_possible_truncation, reason = "MAX_PATH fits in u32")]
                if len == 0
                    || bpf_probe_read_kernel(
                        (&raw mut (*ev).path).cast::<c_void>(),
                        MAX_PATH as u32,
                        buf.cast::<c_void>(),
                    ) != 0
                {
                    (*ev).path_len = 0;
                }
            }
            Target::Object { what, name } => {
                (*ev).access = what;
                (*ev).proto = 0;
                (*ev).port = 0;
                (*ev).family = 0;
                (*ev).addr = [0; 16];
                (*ev).path_len = 0;
                if !name.is_null()
                    && let Ok(bytes) = bpf_probe_read_kernel_str_bytes(name, &mut (*ev).path)
                {
                    #[expect(clippy::cast_possible_truncation, reason = "at most MAX_PATH")]
                    {
                        (*ev).path_len = bytes.len() as u32;
                    }
                }
            }
            Target::Net { family, addr, port, proto } => {
                (*ev).access = 0;
                (*ev).proto = proto;
                (*ev).port = port;
                (*ev).family = family;
                (*ev).addr = addr;
                (*ev).path_len = 0;
            }
        }
    }
    entry.submit(0);
}
