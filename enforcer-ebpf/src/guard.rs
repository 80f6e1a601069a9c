//! Identity integrity and self-protection: LSM hooks that keep a managed task inside its
//! identity and away from the enforcer's own objects.
//!
//! - `task_alloc`: `clone3(CLONE_INTO_CGROUP)` would start a child in another cgroup.
//! - `file_open` (from `lsm.rs`): writing `cgroup.procs`/`cgroup.threads` moves tasks;
//!   writing the enforcer's protected files changes its state.
//! - removing and renaming entries (the hooks live in `writes.rs`): pins, state, socket
//!   and log; renaming cgroups (path selectors would lose them).
//! - `bpf`: reaching existing BPF objects by id or pin, detaching programs.
//! - `task_kill`/`ptrace_access_check`: signalling the agent; attaching to (or stealing fds
//!   and memory from) a task of another identity or the agent.
//!
//! Struct members are read with `bpf_probe_read_kernel` at offsets the agent takes from
//! the running kernel's BTF. Every refusal is a verdict with reason `identity-escape`,
//! `cross-identity` or `self-protection`, and holds in audit mode too.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_loop, bpf_probe_read_kernel_str_bytes},
    macros::lsm,
    programs::LsmContext,
};
use enforcer_common::{
    MAX_CGROUP_DEPTH,
    maps::{BINDING_SUBTREE, CgroupKey, InodeKey},
    verdict::{IDENTITY_ALLOW_MOVES, RULE_DEFAULT, action, hook, reason, stat},
};

use crate::{
    diag,
    emit::{self, Target},
    maps::{CGROUP_BINDINGS, PROTECTED_INODES, PROTECTED_PIDS, count},
    offsets::{
        OFF_CGROUP_KN, OFF_CSS_SET_DFL_CGRP, OFF_DENTRY_D_INODE, OFF_DENTRY_D_PARENT, OFF_DENTRY_NAME,
        OFF_FILE_DENTRY, OFF_FILE_F_INODE, OFF_INODE_I_INO, OFF_INODE_I_PRIVATE, OFF_INODE_I_SB,
        OFF_KERNFS_ID, OFF_KERNFS_NAME, OFF_KERNFS_PARENT, OFF_SB_S_DEV, OFF_SB_S_MAGIC, OFF_TASK_CGROUPS,
        OFF_TASK_TGID, read,
    },
    policy::{self, Caller, Judgement, Subject},
};

const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const PTRACE_MODE_ATTACH: u32 = 0x02;

/// `bpf()` commands that reach objects the caller did not create, or detach programs.
const BPF_OBJ_GET: u32 = 7;
const BPF_PROG_DETACH: u32 = 9;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_MAP_GET_FD_BY_ID: u32 = 14;
const BPF_BTF_GET_FD_BY_ID: u32 = 19;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_DETACH: u32 = 34;

/// The identity the cgroup of kernfs node `kn` resolves to in `slot` (0 = none): the
/// deepest binding among it and its ancestors, as [`crate::identity::current`] decides
/// for a task in that cgroup. `hook` is named in diagnostics.
#[inline(always)]
fn cgroup_identity(kn: *const u8, slot: u32, hook: u32) -> u32 {
    let mut walk = KernfsWalk { kn, slot, identity: 0, unreadable: 0 };
    // Under `bpf_loop`: unrolled, the walk multiplied the verifier's work by its depth.
    // SAFETY: the callback only touches `walk` and reads kernel memory through helpers.
    let done =
        unsafe { bpf_loop(MAX_CGROUP_DEPTH + 1, kernfs_level as *mut c_void, (&raw mut walk).cast(), 0) };
    // No identity if the loop could not run: callers treat that as another identity
    // (fail-closed).
    if done < 0 {
        diag::error!(
            "hook {}: kernfs ancestor walk failed (bpf_loop {}): counted as another identity",
            hook: u32 = hook,
            done: i64 = done,
        );
        return 0;
    }
    // An unreadable node ends the walk with what was found below it, which callers
    // compare with the caller's identity (a difference is refused).
    if walk.unreadable != 0 {
        diag::error!(
            "hook {}: kernfs node unreadable in the ancestor walk: resolved to identity {}",
            hook: u32 = hook,
            identity: u32 = walk.identity,
        );
    }
    walk.identity
}

/// State of a walk up kernfs parents, shared with the `bpf_loop` callback.
#[repr(C)]
struct KernfsWalk {
    kn: *const u8,
    slot: u32,
    identity: u32,
    /// Set when a node's id or parent could not be read.
    unreadable: u32,
}

/// One level: the binding of this cgroup (at level 0) or a subtree binding of an
/// ancestor decides; otherwise up to the parent. Returns 1 when decided or at the root.
#[inline(never)]
unsafe extern "C" fn kernfs_level(level: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `KernfsWalk` passed to bpf_loop.
    let walk = unsafe { &mut *ctx.cast::<KernfsWalk>() };
    let Some(id) = read::<u64>(walk.kn, &OFF_KERNFS_ID) else {
        walk.unreadable = 1;
        return 1;
    };
    let key = CgroupKey { cgroup_id: id, slot: walk.slot, pad: 0 };
    // SAFETY: plain value read once.
    if let Some(binding) = unsafe { CGROUP_BINDINGS.get(&key) }
        && (level == 0 || binding.flags & BINDING_SUBTREE != 0)
    {
        walk.identity = binding.identity;
        return 1;
    }
    match read::<*const u8>(walk.kn, &OFF_KERNFS_PARENT) {
        Some(parent) if !parent.is_null() => {
            walk.kn = parent;
            0
        }
        Some(_) => 1,
        None => {
            walk.unreadable = 1;
            1
        }
    }
}

/// The identity of `task` (through its cgroup v2 cgroup) in `slot`; `None` if its
/// cgroup cannot be read.
#[inline(always)]
fn task_identity(task: *const u8, slot: u32, hook: u32) -> Option<u32> {
    let kn = read::<*const u8>(task, &OFF_TASK_CGROUPS)
        .and_then(|cset| read::<*const u8>(cset, &OFF_CSS_SET_DFL_CGRP))
        .and_then(|cgrp| read::<*const u8>(cgrp, &OFF_CGROUP_KN))?;
    Some(cgroup_identity(kn, slot, hook))
}

#[inline(always)]
fn magic_of(inode: *const u8) -> Option<u64> {
    read::<*const u8>(inode, &OFF_INODE_I_SB).and_then(|sb| read::<u64>(sb, &OFF_SB_S_MAGIC))
}

/// Whether `inode` is one of the enforcer's protected files or directories; `None` if
/// the inode cannot be read.
#[inline(always)]
fn protected(inode: *const u8) -> Option<bool> {
    let sb = read::<*const u8>(inode, &OFF_INODE_I_SB)?;
    let (dev, ino) = (read::<u32>(sb, &OFF_SB_S_DEV)?, read::<u64>(inode, &OFF_INODE_I_INO)?);
    // SAFETY: plain value read once.
    Some(unsafe { PROTECTED_INODES.get(&InodeKey { ino, dev, pad: 0 }) }.is_some())
}

/// The denial for `why`, counted (`internal-error` where a kernel structure could not be
/// read).
#[inline(always)]
pub fn judgement(why: u32) -> Judgement {
    match why {
        reason::SELF_PROTECTION => count(stat::SELF_PROTECTION),
        reason::IDENTITY_ESCAPE | reason::CROSS_IDENTITY => count(stat::IDENTITY_ESCAPE),
        _ => return Judgement::refuse(why),
    }
    Judgement { action: action::DENY, rule: RULE_DEFAULT, reason: why }
}

/// A refusal for a managed caller: counted, reported, and the errno to return.
#[inline(always)]
fn refuse(hook: u32, subject: &Subject, why: u32, target: &Target) -> i32 {
    policy::lsm_return(emit::conclude(hook, subject, judgement(why), target))
}

/// The managed caller, or the value the hook returns for everyone else.
#[inline(always)]
pub fn managed(hook: u32) -> Result<Subject, i32> {
    match policy::caller(hook) {
        Caller::Unmanaged => Err(0),
        // A container's init process finishing its set-up (mounts, `pivot_root`,
        // sysctls) runs the runtime's code: unmanaged until it executes the entrypoint.
        Caller::Managed(subject) if crate::setup::in_setup(subject.cgroup_id) => Err(0),
        Caller::Managed(subject) => Ok(subject),
        // Fail-closed: the task is managed but its policy cannot be read.
        Caller::Broken { slot, identity, cgroup_id } => {
            let judgement = Judgement::refuse(reason::INTERNAL_ERROR);
            let config = policy::config_or_enforce(slot, identity);
            let (decision, errno) = policy::decide(&config, &judgement);
            emit::verdict(
                &emit::Verdict { hook, slot, identity, cgroup_id, judgement, decision, errno },
                &Target::Object { what: 0, name: core::ptr::null() },
            );
            Err(policy::lsm_return(errno))
        }
    }
}

/// Decides a write open of a file on cgroupfs or of a protected file; `None` if the
/// generic file rules decide. `file` is the hook's `struct file *`.
#[inline(always)]
pub fn write_open(subject: &Subject, file: *const u8) -> Option<u32> {
    // Fail-closed: a write whose file cannot be read might be a membership or protected
    // file, so it is refused as `internal-error`.
    classify_write(subject, file).unwrap_or(Some(reason::INTERNAL_ERROR))
}

/// A kernel structure the hook needed could not be read.
struct Unreadable;

/// [`write_open`]; `Err` where a kernel structure cannot be read.
#[inline(always)]
fn classify_write(subject: &Subject, file: *const u8) -> Result<Option<u32>, Unreadable> {
    let inode = read::<*const u8>(file, &OFF_FILE_F_INODE).ok_or(Unreadable)?;
    if magic_of(inode).ok_or(Unreadable)? == CGROUP2_SUPER_MAGIC {
        if subject.config.flags & IDENTITY_ALLOW_MOVES != 0 {
            return Ok(None);
        }
        let kn = read::<*const u8>(inode, &OFF_INODE_I_PRIVATE).ok_or(Unreadable)?;
        if !moves_tasks(kn).ok_or(Unreadable)? {
            return Ok(None);
        }
        // The cgroup whose membership file this is. An unreadable ancestor resolves to
        // no identity, which differs from the writer's: refused (fail-closed).
        let cgroup = read::<*const u8>(kn, &OFF_KERNFS_PARENT).ok_or(Unreadable)?;
        if cgroup_identity(cgroup, subject.slot, hook::FILE_OPEN) == subject.identity {
            return Ok(None);
        }
        return Ok(Some(reason::IDENTITY_ESCAPE));
    }
    // The file itself, or any file of a protected directory (including new ones).
    let dentry = read::<*const u8>(file, &OFF_FILE_DENTRY).ok_or(Unreadable)?;
    let dir = read::<*const u8>(dentry, &OFF_DENTRY_D_PARENT).ok_or(Unreadable)?;
    let dir_inode = read::<*const u8>(dir, &OFF_DENTRY_D_INODE).ok_or(Unreadable)?;
    if protected(inode).ok_or(Unreadable)? || protected(dir_inode).ok_or(Unreadable)? {
        return Ok(Some(reason::SELF_PROTECTION));
    }
    Ok(None)
}

/// Whether kernfs node `kn` is `cgroup.procs` or `cgroup.threads`; `None` if its name
/// cannot be read.
#[inline(always)]
fn moves_tasks(kn: *const u8) -> Option<bool> {
    let name = read::<*const u8>(kn, &OFF_KERNFS_NAME)?;
    let mut buf = [0u8; 16];
    // SAFETY: a checked kernel string read into a zeroed local buffer; a longer name is
    // cut at 15 bytes and then matches neither.
    if unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }.is_err() {
        return None;
    }
    // Compared as two words: the verifier keeps a fixed-size compare cheap.
    let words = (u64::from_ne_bytes(head(&buf, 0)), u64::from_ne_bytes(head(&buf, 8)));
    Some(
        words == (u64::from_ne_bytes(head(PROCS, 0)), u64::from_ne_bytes(head(PROCS, 8)))
            || words == (u64::from_ne_bytes(head(THREADS, 0)), u64::from_ne_bytes(head(THREADS, 8))),
    )
}

const PROCS: &[u8; 16] = b"cgroup.procs\0\0\0\0";
const THREADS: &[u8; 16] = b"cgroup.threads\0\0";

#[inline(always)]
fn head(buf: &[u8; 16], at: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&buf[at..at + 8]);
    out
}

/// `clone3(CLONE_INTO_CGROUP)` starts the child in a cgroup the caller picks.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    // Arguments: (task, clone_flags); the previous LSM's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_INTO_CGROUP == 0 {
        return 0;
    }
    let subject = match managed(hook::CLONE) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    if subject.config.flags & IDENTITY_ALLOW_MOVES != 0 {
        return 0;
    }
    refuse(
        hook::CLONE,
        &subject,
        reason::IDENTITY_ESCAPE,
        &Target::Object { what: 0, name: core::ptr::null() },
    )
}

/// `bpf()`: reaching existing objects by id or pin, and detaching programs.
#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    // Arguments: (cmd, attr, size); the previous LSM's return value follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let cmd: u32 = ctx.arg(0);
    if !matches!(
        cmd,
        BPF_OBJ_GET
            | BPF_PROG_DETACH
            | BPF_PROG_GET_FD_BY_ID
            | BPF_MAP_GET_FD_BY_ID
            | BPF_BTF_GET_FD_BY_ID
            | BPF_LINK_GET_FD_BY_ID
            | BPF_LINK_DETACH
    ) {
        return 0;
    }
    let subject = match managed(hook::BPF) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    refuse(
        hook::BPF,
        &subject,
        reason::SELF_PROTECTION,
        &Target::Object { what: cmd, name: core::ptr::null() },
    )
}

/// Signals to the agent (signal 0, a liveness probe, stays allowed).
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    // Arguments: (p, info, sig, cred); the previous LSM's return value follows them.
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let sig: i32 = ctx.arg(2);
    if sig == 0 {
        return 0;
    }
    let target: *const u8 = ctx.arg(0);
    let Some(tgid) = read::<u32>(target, &OFF_TASK_TGID) else {
        // Fail-closed for managed callers: the target might be the agent.
        return match managed(hook::TASK_KILL) {
            Ok(subject) => {
                diag::error!(
                    "hook {}: target task unreadable: refused as internal-error",
                    hook: u32 = hook::TASK_KILL,
                );
                refuse(
                    hook::TASK_KILL,
                    &subject,
                    reason::INTERNAL_ERROR,
                    &Target::Object { what: 0, name: core::ptr::null() },
                )
            }
            Err(ret) => ret,
        };
    };
    // SAFETY: plain value read once.
    if unsafe { PROTECTED_PIDS.get(&tgid) }.is_none() {
        return 0;
    }
    let subject = match managed(hook::TASK_KILL) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    refuse(
        hook::TASK_KILL,
        &subject,
        reason::SELF_PROTECTION,
        &Target::Object { what: tgid, name: core::ptr::null() },
    )
}

/// Attaching to another task (ptrace, `pidfd_getfd`, `process_vm_writev`,
/// `/proc/PID/mem`) acts as that task: allowed only within the caller's own identity.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    // Arguments: (child, mode); the previous LSM's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let mode: u32 = ctx.arg(1);
    if mode & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    let subject = match managed(hook::PTRACE) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let child: *const u8 = ctx.arg(0);
    let tgid = read::<u32>(child, &OFF_TASK_TGID).unwrap_or(0);
    let target = Target::Object { what: tgid, name: core::ptr::null() };
    // SAFETY: plain value read once.
    if unsafe { PROTECTED_PIDS.get(&tgid) }.is_some() {
        return refuse(hook::PTRACE, &subject, reason::SELF_PROTECTION, &target);
    }
    // Fail-closed: a target whose identity cannot be read counts as another identity.
    let identity = task_identity(child, subject.slot, hook::PTRACE).unwrap_or_else(|| {
        diag::error!(
            "hook {}: target task's cgroup unreadable: counted as another identity",
            hook: u32 = hook::PTRACE,
        );
        0
    });
    if identity != subject.identity {
        return refuse(hook::PTRACE, &subject, reason::CROSS_IDENTITY, &target);
    }
    0
}

/// Removing or renaming an entry of `dir`: pins (bpffs), protected files and
/// directories, and renames of cgroups.
/// For `subject`, the managed caller ([`managed`]).
#[inline(always)]
pub fn entry_change(hook: u32, subject: &Subject, dir: *const u8, dentry: *const u8) -> i32 {
    let why = match entry_reason(hook, dir, dentry) {
        Ok(Some(why)) => why,
        Ok(None) => return 0,
        // Fail-closed for managed callers: the entry might be a pin or a protected file.
        Err(Unreadable) => reason::INTERNAL_ERROR,
    };
    if why == reason::INTERNAL_ERROR {
        diag::error!("hook {}: directory or entry unreadable: refused as internal-error", hook: u32 = hook);
    }
    if why == reason::IDENTITY_ESCAPE && subject.config.flags & IDENTITY_ALLOW_MOVES != 0 {
        return 0;
    }
    let name = read::<*const u8>(dentry, &OFF_DENTRY_NAME).unwrap_or(core::ptr::null());
    refuse(hook, subject, why, &Target::Object { what: 0, name })
}

/// Why a change of `dir`'s entry `dentry` is refused (`Ok(None)`: it is not).
#[inline(always)]
fn entry_reason(hook: u32, dir: *const u8, dentry: *const u8) -> Result<Option<u32>, Unreadable> {
    let magic = magic_of(dir).ok_or(Unreadable)?;
    // Null for a negative dentry (a rename's target that does not exist yet).
    let victim = read::<*const u8>(dentry, &OFF_DENTRY_D_INODE).ok_or(Unreadable)?;
    if magic == BPF_FS_MAGIC
        || protected(dir).ok_or(Unreadable)?
        || (!victim.is_null() && protected(victim).ok_or(Unreadable)?)
    {
        return Ok(Some(reason::SELF_PROTECTION));
    }
    if magic == CGROUP2_SUPER_MAGIC && hook == hook::INODE_RENAME {
        return Ok(Some(reason::IDENTITY_ESCAPE));
    }
    Ok(None)
}
