//! Container runtimes a policy names (`spec.runtimes`). A runtime started inside a managed
//! identity sets a container up before the container's program runs: `runc` executes a
//! memfd copy of itself, clones its stages, mounts the container's filesystems and calls
//! `pivot_root`. Those steps are allowed to the runtime's processes, from the exec of the
//! named executable (matched by file identity), through every child they fork, until each
//! executes a program from a file, which ends its exemption: the container's entrypoint
//! (or a hook) and everything after it are restricted again. File, exec and network rules
//! judge the runtime's processes throughout.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext};
use enforcer_common::{
    maps::{InodeRuleKey, path_kind},
    verdict::hook,
};

use crate::{
    diag,
    maps::{INODE_RULES, RUNTIME_TASKS},
    offsets::{
        OFF_DENTRY_D_INODE, OFF_FILE_DENTRY, OFF_INODE_I_INO, OFF_INODE_I_SB, OFF_SB_S_DEV, OFF_TASK_TGID,
        read,
    },
};

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Whether the current process is a named runtime's, still setting a container up.
#[inline(always)]
pub fn in_runtime() -> bool {
    // SAFETY: a plain value read from a hash map entry.
    unsafe { RUNTIME_TASKS.get(&current_tgid()) }.is_some()
}

/// After an allowed exec of `file` by a managed process whose identity names runtimes:
/// executing a named runtime marks the process, executing any other file from a
/// filesystem unmarks it; a file with no path (runc's memfd copy of itself, or any
/// other: the kernel cannot tell them apart) keeps its mark.
#[inline(always)]
pub fn exec_allowed(file: *const u8, slot: u32, identity: u32, fileless: bool) {
    if fileless {
        return;
    }
    let tgid = current_tgid();
    if is_runtime(file, slot, identity) {
        // Fail-closed: when the map is full the process stays unmarked and its mounts
        // are refused (and reported).
        if RUNTIME_TASKS.insert(&tgid, &identity, 0).is_err() {
            diag::warning!("hook {}: RUNTIME_TASKS full: runtime process left unmarked", hook: u32 = hook::EXEC);
        }
    } else {
        // Nothing to do when absent: the usual case.
        let _ = RUNTIME_TASKS.remove(&tgid);
    }
}

/// Whether `file` is one of the runtimes the identity's policy names.
#[inline(always)]
fn is_runtime(file: *const u8, slot: u32, identity: u32) -> bool {
    let inode =
        read::<*const u8>(file, &OFF_FILE_DENTRY).and_then(|d| read::<*const u8>(d, &OFF_DENTRY_D_INODE));
    let Some(inode) = inode else {
        // Fail-closed: an executable whose identity cannot be read is no runtime.
        diag::error!("hook {}: executable's inode unreadable: not taken for a runtime", hook: u32 = hook::EXEC);
        return false;
    };
    let (Some(ino), Some(dev)) = (
        read::<u64>(inode, &OFF_INODE_I_INO),
        read::<*const u8>(inode, &OFF_INODE_I_SB).and_then(|sb| read::<u32>(sb, &OFF_SB_S_DEV)),
    ) else {
        // Fail-closed: as above.
        diag::error!("hook {}: executable's device or inode number unreadable: not taken for a runtime", hook: u32 = hook::EXEC);
        return false;
    };
    #[expect(clippy::cast_possible_truncation, reason = "slots are 0 and 1")]
    let key = InodeRuleKey { ino, dev, identity, kind: path_kind::RUNTIME, slot: slot as u8, pad: [0; 6] };
    // SAFETY: presence only.
    unsafe { INODE_RULES.get(&key) }.is_some()
}

/// `sched:sched_process_fork(parent, child)`: a runtime's new process inherits its mark
/// (threads share their process's). Runs before the child does.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let parent = current_tgid();
    // SAFETY: a plain value read from a hash map entry.
    let Some(identity) = (unsafe { RUNTIME_TASKS.get(&parent) }).copied() else { return 0 };
    let child: *const u8 = ctx.arg(1);
    // Fail-closed: a child whose process id cannot be read stays unmarked, so its mounts
    // are refused.
    let Some(tgid) = read::<u32>(child, &OFF_TASK_TGID) else {
        diag::error!("sched_process_fork: a runtime child's process id unreadable: left unmarked");
        return 0;
    };
    // Fail-closed: a full map leaves the child unmarked.
    if tgid != parent && RUNTIME_TASKS.insert(&tgid, &identity, 0).is_err() {
        diag::warning!("sched_process_fork: RUNTIME_TASKS full: runtime child left unmarked");
    }
    0
}

/// `sched:sched_process_exit(task)`: a runtime process that ends leaves no mark for a
/// later process to inherit with its id. Threads other than the leader leave it.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "the low half is the thread id")]
    let (tgid, pid) = ((id >> 32) as u32, id as u32);
    if tgid == pid {
        // Nothing to do when absent: the usual case. The agent prunes what remains.
        let _ = RUNTIME_TASKS.remove(&tgid);
    }
    0
}
