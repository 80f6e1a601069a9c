//! BPF LSM programs: exec (`bprm_check_security`), file opens (`file_open`) and
//! executable file mappings (`mmap_file`, `file_mprotect`).
//!
//! None is sleepable: `bpf_d_path` is open to every program on a hook the kernel lists as
//! sleepable (these three are), whether or not the program sleeps, and a non-sleepable
//! program runs inside RCU, so it reads the caller's cgroup from this CPU's task record or
//! through the task's pointers (`identity::current_rcu`) instead of the helper. An
//! unmanaged caller is allowed on that and its identity line alone, without looking up
//! its task. Each access is judged by
//! the path the kernel shows (`path.rs`) and by the file's identity (`inodes.rs`); where
//! both find a rule the stricter decides.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    EbpfContext, bindings::path as bpf_path, helpers::bpf_probe_read_kernel, macros::lsm,
    programs::LsmContext,
};
use enforcer_common::{
    MAX_PATH,
    maps::{CpuTask, IdentityConfig, cache_kind, grant_kind, hit, path_kind, word},
    verdict::{
        IDENTITY_ALLOW_FILELESS_EXEC, IDENTITY_HAS_RUNTIMES, IDENTITY_LOG_ALLOW, RULE_DEFAULT, access,
        action, hook, reason, restrict, stat,
    },
};

use crate::{
    diag,
    emit::{self, Target, Verdict},
    fast_path, guard, identity, inodes,
    offsets::{
        OFF_BPRM_FILE, OFF_DENTRY_NAME, OFF_FILE_DENTRY, OFF_FILE_F_MODE, OFF_FILE_F_PATH, OFF_VMA_VM_FILE,
        load, offset, read,
    },
    open_cache,
    path::{self, Resolved},
    policy::{self, Caller, Judgement, Seen, Subject},
    readers, restricted, runtime, setup,
};

const PROT_EXEC: u64 = 0x4;

const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
const _: () = assert!(FMODE_READ == access::READ && FMODE_WRITE == access::WRITE);

// `quick` counts a hit at its kind's `_RULE` index plus one where the default decided.
const _: () = assert!(
    hit::EXEC_DEFAULT == hit::EXEC_RULE + 1
        && hit::OPEN_DEFAULT == hit::OPEN_RULE + 1
        && hit::MAPPED == hit::MAPPED_RULE + 1
);

/// Decides whether the current task may execute the binary in `bprm->file`.
/// Unmanaged tasks: allowed from their CPU's record (`fast_path`), else after one lookup.
/// Errors for managed tasks: denied.
#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    // Past the fast path, functions of their own that take the context: the program then
    // keeps only the context across calls. A value kept across a call sits in a register
    // the program saves and restores at every run, the unmanaged caller's included.
    let look = fast_path::look(|| ctx.arg(1));
    if look.unmanaged() {
        return 0;
    }
    // A managed caller's exec of a program run before, called from here: `exec` and its
    // code stay untouched when the cache decides.
    if quick::<{ hook::EXEC }, true>(ctx.as_ptr(), look.record, look.bad, look.low, look.seq) {
        return allow();
    }
    exec(ctx.as_ptr())
}

/// 0, the allow, as the compiler cannot see it: where the program returns it after a
/// call, it is made there, not kept across the call from before it in a register the
/// program then saves and restores at every run.
#[inline(always)]
fn allow() -> i32 {
    let zero: u64;
    // SAFETY: sets one register.
    unsafe { core::arch::asm!("r0 = 0", out("r0") zero, options(nomem, nostack)) };
    #[expect(clippy::cast_possible_truncation, reason = "0")]
    let zero = zero as i32;
    zero
}

/// The program an exec runs (`bprm->file`).
#[inline(always)]
fn exec_file(bprm: *const u8) -> *const u8 {
    // SAFETY: `bprm` is the hook's typed argument and the offset is that of its `file`
    // member, so the verifier treats this load as a (trusted) `struct file *`.
    unsafe { *(bprm.add(offset(&OFF_BPRM_FILE)).cast::<*const u8>()) }
}

/// [`bprm_check_security`] past its fast path and the cache's quick lookups, in a frame
/// of its own: the program's own code is then the fast path alone, its allow a few
/// instructions from its start. An exec's hook runs just after switches of address
/// space, where under emulation each page of code it runs costs a lookup again; with the
/// whole judgement inline, the allow's exit lay two kilobytes in.
#[inline(never)]
fn exec(ctx: *mut c_void) -> i32 {
    // What the kernel's open of the program read was not left for this exec (a context
    // switch came in between, as for about one exec in eight in the bench's loops): the
    // same lookup with the file and the root read now, three helper calls where the full
    // path below makes a dozen. (Where the entry did not hold, this reads the same key
    // again, three helper calls more before the full judgement.) The record is read
    // again: what the program read of it would have been kept across its first lookup.
    let look = fast_path::look(|| LsmContext::new(ctx).arg(1));
    if look.unmanaged() {
        return 0;
    }
    if quick::<{ hook::EXEC }, false>(ctx, look.record, look.bad, look.low, look.seq) {
        return allow();
    }
    let ctx = LsmContext::new(ctx);
    let (bprm, earlier): (*const u8, i32) = (ctx.arg(0), ctx.arg(1));
    // Respect an earlier LSM's denial.
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let file = exec_file(bprm);
    let seen = policy::seen();
    if seen.unmanaged {
        return 0;
    }
    let task = identity::current_task();
    if let Some(subject) = cacheable(&seen, hook::EXEC)
        && cached(file, task, hook::EXEC, subject)
    {
        return 0;
    }
    sent(|staged| judge_exec(file, staged))
}

/// The full judgement of an exec, in a frame of its own (see [`judge_open`]).
#[inline(never)]
fn judge_exec(file: *const u8, staged: &mut u64) -> i32 {
    judge_registered(hook::EXEC, file, 0, staged)
}

/// Decides whether the current task may open a file for the access its mode asks.
///
/// The kernel's own open of a program for `execve` asks to read it (the kernel marks it
/// in `f_flags`, not in `f_mode`) and is judged as a read: running a program lets it read
/// its own code, so a program whose reading is denied cannot be run. Its exec rules are
/// judged by `bprm_check_security` after this.
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // As in `bprm_check_security`: only the context is kept across calls.
    let look = fast_path::look(|| ctx.arg(1));
    if look.unmanaged() {
        return 0;
    }
    if quick::<{ hook::FILE_OPEN }, false>(ctx.as_ptr(), look.record, look.bad, look.low, look.seq) {
        return allow();
    }
    judged_open(ctx.as_ptr())
}

/// The access an open asks for (`access::READ` or `access::WRITE`, or both), from the
/// file's mode; none is judged as a read.
#[inline(always)]
fn wanted(file: *const u8) -> u32 {
    // SAFETY: the hook's typed argument at the BTF offset of `f_mode`: a load of the
    // kernel's own pointer, which does not fault (one that did would read 0: no mode,
    // judged as a read below, as the kernel's opens without one are).
    let mode = unsafe { load::<u32>(file, &OFF_FILE_F_MODE) };
    // The mode's two bits are the accesses wanted. Without a branch (see `fast_path` on
    // why branches are what costs).
    let rw = mode & (FMODE_READ | FMODE_WRITE);
    #[expect(clippy::cast_possible_truncation, reason = "0 or 1")]
    let wanted = rw | fast_path::zero(u64::from(rw)) as u32;
    wanted
}

/// [`file_open`] for a caller neither the fast path nor the cache's quick lookup allowed.
#[inline(never)]
fn judged_open(ctx: *mut c_void) -> i32 {
    let ctx = LsmContext::new(ctx);
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let file: *const u8 = ctx.arg(0);
    let wanted = wanted(file);
    let seen = policy::seen();
    if seen.unmanaged {
        return 0;
    }
    let task = identity::current_task();
    // Opens for writing are judged in full: the guard of the kernel's and the enforcer's
    // own files comes first, and has no room in the cached judgement's stack frame.
    if wanted == access::READ
        && let Some(subject) = cacheable(&seen, hook::FILE_OPEN)
        && cached(file, task, hook::FILE_OPEN, subject)
    {
        return 0;
    }
    sent(|staged| judge_open(file, wanted, staged))
}

/// The full judgement of an open. Not inlined, like [`cached`]: each has its own
/// stack frame below this program's small one, and only one of them runs at a time, so
/// the verifier's 512 bytes hold the larger, not the sum.
#[inline(never)]
fn judge_open(file: *const u8, wanted: u32, staged: &mut u64) -> i32 {
    judge_registered(hook::FILE_OPEN, file, wanted, staged)
}

/// What [`cached`] needs of a caller `seen` managed by its identity line, packed in one
/// word (identity, slot, then the default that judges `hook`): `None` where the full
/// judgement must run for any file. A caller the line does not show as managed is
/// resolved there; an allow the identity asks to see is reported, with its path; and the
/// execs of an identity that names container runtimes mark the runtime's processes
/// (`runtime`).
#[inline(always)]
fn cacheable(seen: &Seen, hook: u32) -> Option<u64> {
    if !seen.managed {
        return None;
    }
    let subject = &seen.subject;
    let flags = subject.config.flags;
    if flags & IDENTITY_LOG_ALLOW != 0 || (hook == hook::EXEC && flags & IDENTITY_HAS_RUNTIMES != 0) {
        return None;
    }
    let default =
        if hook == hook::FILE_OPEN { subject.config.file_default } else { subject.config.exec_default };
    Some(u64::from(subject.identity) | u64::from(subject.slot & 1) << 32 | u64::from(default) << 40)
}

/// Whether the exec, open for reading or executable mapping of a file whose hook's
/// context is `ctx` (`HOOK`: `hook::EXEC`, `hook::FILE_OPEN` or `hook::MMAP_EXEC`) by a
/// caller its CPU's record shows managed is allowed from the cache, decided as
/// [`cached`] decides it but from the record's copy of the caller's line, with every
/// check folded into one word and one branch on it (see `fast_path`). An exec or a
/// mapping first (`RECALL`) looks its entry up with what the kernel's open of its
/// program read of the file and the caller's root (`open_cache::recalled`), which spares
/// it three helper calls and the kernel's structures: it reads the record and the entry,
/// and nothing else; where that reading is not there, it reads them now, as an open
/// does. False where the record cannot be trusted, an earlier LSM refused (the hook's
/// last argument), an open asks to write, the entry does not hold, the allow would be
/// reported, or any live state (quarantine, revoked credential, container set-up)
/// exists: the slower ways decide then, as before.
///
/// `record`, `bad`, `low` and `seq` are what the hook's fast path read of the caller's
/// CPU's record (`fast_path::Look`), passed in the registers of a call's arguments, which
/// the fast path's reading leaves them in: the rest of the line is read from the record
/// in the same window of its `seq`, which is read once more after everything read from
/// the record (`open_cache::opened_now`, `open_cache::recalled`).
///
/// Not inlined, for the stack frame (see [`cached`]): its registers spill, and inline
/// in the program or in `exec` its frame would add to the full judgement's, past the
/// verifier's 512 bytes. Called from the program itself, so an exec the cache decides
/// makes one call and runs no code of `exec`'s (under emulation each call, return and
/// page of code after the exec's switch of address space is a lookup).
#[inline(never)]
fn quick<const HOOK: u32, const RECALL: bool>(
    ctx: *mut c_void,
    record: *mut CpuTask,
    bad: u64,
    low: u64,
    seq: u64,
) -> bool {
    let (exec, open) = (HOOK == hook::EXEC, HOOK == hook::FILE_OPEN);
    let ctx = LsmContext::new(ctx);
    // The hook's file. (The verdict of the LSMs before this one is in `bad`.)
    let file: *const u8 = if exec { exec_file(ctx.arg(0)) } else { ctx.arg(0) };
    // Opens for writing are judged in full: the guard of the kernel's and the enforcer's
    // own files comes first, and has no room in the cached judgement's stack frame.
    if open && wanted(file) != access::READ {
        return false;
    }
    // Before anything else is read: a record that cannot be trusted (or an unmanaged
    // caller here after all) costs nothing more.
    if bad | fast_path::zero(low & u64::from(u32::MAX)) != 0 {
        return false;
    }
    let line = &fast_path::line(record, bad, low, seq);
    // An open reads the file and the caller's root now, and keeps what it read for the
    // exec or mapping that may follow; those take what the open of their file read, or
    // read them now where that is not there.
    let opened = if RECALL {
        open_cache::recalled(line, file)
    } else {
        let opened = open_cache::opened_now(file, identity::current_task(), line, open);
        if open {
            open_cache::remember(line, file, &opened);
        }
        opened
    };
    let kind = if open { cache_kind::OPEN } else { cache_kind::EXEC };
    let (mut bad, hit) = open_cache::quick(&opened, line, kind);
    let found = u64::from(hit.read.0);
    let by_default = fast_path::zero(found ^ u64::from(action::NONE));
    // A mapping no exec rule names is allowed without a verdict, as in the full
    // judgement: shared objects are not programs.
    let default = if exec {
        line.exec_default()
    } else if open {
        line.file_default()
    } else {
        u64::from(action::ALLOW)
    };
    let decided = found ^ ((found ^ default) & by_default.wrapping_neg());
    // Live state only ever refuses, and a refusal is reported: any of it in force sends
    // the call to the judgement that looks it up. So does an exec that may end a
    // container's set-up. A mapping has none (see `live_state`).
    let words = if exec {
        crate::cpu_tasks::word(word::QUARANTINE_ANY) | crate::cpu_tasks::word(word::SETUP_ANY)
    } else if open {
        crate::cpu_tasks::word(word::QUARANTINE_ANY) | crate::cpu_tasks::word(word::REVOKED_ANY)
    } else {
        0
    };
    let unreported = if exec { IDENTITY_LOG_ALLOW | IDENTITY_HAS_RUNTIMES } else { IDENTITY_LOG_ALLOW };
    bad |= (decided ^ u64::from(action::ALLOW)) | words | (line.flags() & u64::from(unreported));
    if bad != 0 {
        return false;
    }
    // Counted in this CPU's record, once, at an index that says by what (see `hit`),
    // without a branch (see `CpuTask::hits`); atomic, as a task that preempted this
    // program on this CPU may be counting too.
    let rule = if exec {
        hit::EXEC_RULE
    } else if open {
        hit::OPEN_RULE
    } else {
        hit::MAPPED_RULE
    };
    #[expect(clippy::cast_possible_truncation, reason = "0 or 1")]
    let by = rule + by_default as usize;
    // SAFETY: a word of this CPU's record in our own global (`by_default` is 0 or 1).
    unsafe {
        let hits = (&raw mut (*line.record).hits).cast::<u64>();
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits.add(by), 1);
    }
    true
}

/// Whether an open for reading (`hook::FILE_OPEN`), an exec (`hook::EXEC`) or an
/// executable mapping (`hook::MMAP_EXEC`) of `file` by `task`, the current task, is
/// allowed from the cache of rule findings (`open_cache`); `subject` is the caller as
/// [`cacheable`] packs it. False where the full judgement must run: no valid entry, or a
/// verdict to report, whose record shows the path only the full judgement resolves. Only
/// allows that are not reported are decided here.
///
/// It reads no map the agent rewrites with a slot, only the slot's generation, which an
/// entry must match: it needs no reader registration. Not inlined: its stack frame is its
/// own, and with the full judgement's it must fit the verifier's 512 bytes.
#[inline(never)]
fn cached(file: *const u8, task: *const u8, hook: u32, subject: u64) -> bool {
    let exec = hook == hook::EXEC;
    let mapping = hook == hook::MMAP_EXEC;
    #[expect(clippy::cast_possible_truncation, reason = "unpacking what `cacheable` packed")]
    let (identity, slot, default) = (subject as u32, (subject >> 32) as u32 & 1, (subject >> 40) as u8);
    let kind = if exec || mapping { cache_kind::EXEC } else { cache_kind::OPEN };
    let Some(hit) = open_cache::get(file, task, identity, kind, slot) else { return false };
    // A mapping no exec rule names is allowed without a verdict, as in the full judgement.
    if mapping && hit.read.0 == action::NONE {
        crate::maps::count(stat::EXEC_CACHE_HITS);
        return true;
    }
    // Live state only ever refuses, and a refusal is reported.
    let path = (hit.hash, hit.len, hit.proof);
    if live_state(hook, identity, path, access::READ).is_some() {
        return false;
    }
    // Anything but an allow is reported (a denial, an audit, a pending approval) or may
    // be granted, which is reported too. An allow by the default or a rule is not.
    let by_default = hit.read.0 == action::NONE;
    let allowed = if by_default { default } else { hit.read.0 };
    if allowed != action::ALLOW {
        return false;
    }
    // As in the full judgement: a container's init process executing its entrypoint
    // ends its set-up.
    if exec {
        setup::end_setup();
    }
    if by_default {
        crate::maps::count(stat::DEFAULT_FALLBACK);
    }
    crate::maps::count(if exec || mapping { stat::EXEC_CACHE_HITS } else { stat::OPEN_CACHE_HITS });
    crate::maps::count(stat::ALLOW);
    true
}

/// Mapping a file executable is running its code: judged by the exec rules that name the
/// file or its directories. Where no rule does, allowed without a verdict: shared objects
/// are not programs, and the exec default applies to `execve` only.
#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    // Arguments: (file, reqprot, prot, flags); the previous program's return value follows.
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let prot: u64 = ctx.arg(2);
    let file: *const u8 = ctx.arg(0);
    if prot & PROT_EXEC == 0 || file.is_null() {
        return 0;
    }
    let look = fast_path::look(|| 0);
    if look.unmanaged() {
        return 0;
    }
    // As an exec: what the open of the file read, where it was the last one on this CPU
    // (a loader opens a library, then maps it), else the file and root read now (the
    // record read again, as in `exec`).
    if quick::<{ hook::MMAP_EXEC }, true>(ctx.as_ptr(), look.record, look.bad, look.low, look.seq) {
        return 0;
    }
    let look = fast_path::look(|| 0);
    if quick::<{ hook::MMAP_EXEC }, false>(ctx.as_ptr(), look.record, look.bad, look.low, look.seq) {
        return 0;
    }
    let seen = policy::seen();
    if seen.unmanaged {
        return 0;
    }
    let task = identity::current_task();
    if let Some(subject) = cacheable(&seen, hook::MMAP_EXEC)
        && cached(file, task, hook::MMAP_EXEC, subject)
    {
        return 0;
    }
    sent(|staged| judge_mmap(file, staged))
}

/// The full judgement of an executable mapping, in a frame of its own (see [`judge_open`]).
#[inline(never)]
fn judge_mmap(file: *const u8, staged: &mut u64) -> i32 {
    judge_registered(hook::MMAP_EXEC, file, 0, staged)
}

/// `mprotect` adding `PROT_EXEC` to a file mapping: the same judgement as `mmap_file`,
/// by the file's identity only (the hook cannot sleep, so `bpf_d_path` is unavailable).
#[lsm(hook = "file_mprotect")]
pub fn file_mprotect(ctx: LsmContext) -> i32 {
    // Arguments: (vma, reqprot, prot); the previous program's return value follows.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let vma: *const u8 = ctx.arg(0);
    // SAFETY: typed hook argument plus the BTF offset of `vm_file`. A load that faulted
    // reads null: the mapping is then taken as anonymous memory, which no file rule names
    // (fail-open; `vma` is the kernel's own argument, so this does not happen).
    let file = unsafe { load::<*const u8>(vma, &OFF_VMA_VM_FILE) };
    if file.is_null() {
        return 0;
    }
    let subject = match policy::caller(hook::MPROTECT_EXEC) {
        Caller::Unmanaged => return 0,
        // A container's init process finishing its set-up runs the runtime's code.
        Caller::Managed(subject) if setup::in_setup(subject.cgroup_id) => return 0,
        Caller::Managed(subject) => subject,
        Caller::Broken { slot, identity, cgroup_id } => {
            let judgement = Judgement::refuse(reason::INTERNAL_ERROR);
            return refuse_unjudged(hook::MPROTECT_EXEC, slot, identity, cgroup_id, judgement, 0);
        }
    };
    let dentry = dentry_of(file);
    let found = dentry.ok_or(()).and_then(|dentry| {
        inodes::lookup(dentry, subject.slot, subject.identity, path_kind::EXEC_EXACT, path_kind::EXEC_DIR)
    });
    let judgement = match found {
        Ok(found) if found.read.0 == action::NONE => return 0,
        Ok(found) => Judgement::from_rule(found.read, subject.config.exec_default),
        // Fail-closed: the file's identity could not be read for a managed caller.
        Err(()) => {
            diag::error!(
                "hook {}: file identity unreadable (dentry walk): refused as internal-error",
                hook: u32 = hook::MPROTECT_EXEC,
            );
            Judgement::refuse(reason::INTERNAL_ERROR)
        }
    };
    // The file's name (its last component) identifies the mapping in the verdict.
    let name = dentry.and_then(|d| read::<*const u8>(d, &OFF_DENTRY_NAME)).unwrap_or(core::ptr::null());
    let target = Target::Object { what: 0, name };
    policy::lsm_return(emit::conclude(hook::MPROTECT_EXEC, &subject, judgement, &target))
}

/// A dentry is being given an inode: cached open findings for dentries with a name in its
/// bucket are stale from now on (`open_cache`). A void hook: it never refuses anything.
#[lsm(hook = "d_instantiate")]
pub fn d_instantiate(ctx: LsmContext) -> i32 {
    // The kernel's own argument: its loads do not fault (one that did would read 0 and
    // move the wrong bucket).
    open_cache::dentry_moved(ctx.arg(0));
    0
}

/// [`judge_path`] as a registered reader of the slot it judges with, so the agent never
/// rewrites that slot under it.
#[inline(always)]
fn judge_registered(hook: u32, file: *const u8, wanted: u32, staged: &mut u64) -> i32 {
    let (slot, registered) = if let Some(slot) = readers::enter() {
        (slot, true)
    } else {
        // Only if the active slot flipped three times within a few instructions (or is unreadable):
        // judged with the slot in force now, without the reader registration.
        // Fail-open as in `policy::caller`: index 0 of an array always exists; without it
        // there would be no policy set to apply.
        let Some(slot) = crate::maps::active_slot() else {
            diag::error!("hook {}: the active slot unreadable: allowed (fail-open)", hook: u32 = hook);
            return 0;
        };
        diag::warning!(
            "hook {}: reader registration failed (the active slot moving or READERS missing): judged by slot {}",
            hook: u32 = hook,
            slot: u32 = slot,
        );
        (slot, false)
    };
    // One call site: the whole judgement is verified once, not once per way in.
    let ret = judge_path(hook, file, wanted, slot, staged);
    if registered {
        readers::leave(slot);
    }
    ret
}

/// A judged access, before it is reported: who, what the rules say, and the path shown
/// in the verdict (null when it could not be judged).
struct Assessed {
    slot: u32,
    identity: u32,
    cgroup_id: u64,
    config: IdentityConfig,
    judgement: Judgement,
    buf: *const u8,
    len: usize,
    /// Keyed hash of the path when the scan computed it (0: not computed).
    hash: u64,
    /// An exec of a file with no path on a filesystem.
    fileless: bool,
}

/// Runs a full judgement (`judge`, given where to note whether it staged a verdict) and
/// sends the verdict it staged, if any: from the program's own frame, a few bytes deep.
/// With the judgement's frame below it, the report's (a global function, verified once
/// per program) would pass the kernel's 512 bytes for a chain of calls. The note comes
/// back beside the hook's value, not in it: the verifier tracks the value the program
/// returns back through every path that computed it, and a note carried in it would be
/// tracked with it, splitting the judgement's paths it could otherwise treat as one.
#[inline(always)]
fn sent(judge: impl FnOnce(&mut u64) -> i32) -> i32 {
    let mut staged = 0;
    let ret = judge(&mut staged);
    emit::send_staged(staged);
    ret
}

/// Shared body: identity, path, rules, then one verdict, staged for the program to send.
#[inline(always)]
fn judge_path(hook: u32, file: *const u8, wanted: u32, slot: u32, staged: &mut u64) -> i32 {
    let Some(a) = assess(hook, file, wanted, slot) else { return 0 };
    let (decision, errno) = policy::decide(&a.config, &a.judgement);
    let reported = policy::reported(&a.config, decision, a.judgement.reason) && {
        #[expect(clippy::cast_possible_truncation, reason = "len < MAX_PATH")]
        emit::stage_verdict(
            &Verdict {
                hook,
                slot: a.slot,
                identity: a.identity,
                cgroup_id: a.cgroup_id,
                judgement: a.judgement,
                decision,
                errno,
            },
            &Target::Path { access: wanted, buf: a.buf, len: a.len as u32, hash: a.hash },
        )
    };
    // A named container runtime's processes are marked from its exec until they execute
    // another program (see `runtime`); only identities that name runtimes pay for this.
    if hook == hook::EXEC && errno == 0 && a.config.flags & IDENTITY_HAS_RUNTIMES != 0 {
        runtime::exec_allowed(file, a.slot, a.identity, a.fileless);
    }
    *staged = u64::from(reported);
    policy::lsm_return(errno)
}

/// The judgement of an access, or `None` if the caller is unmanaged (or a mapping no
/// rule names): nothing to report.
#[inline(always)]
fn assess(hook: u32, file: *const u8, wanted: u32, slot: u32) -> Option<Assessed> {
    let subject = match policy::caller_in(slot, hook) {
        Caller::Unmanaged => return None,
        // A container's init process executing its entrypoint: its set-up ends here, and
        // this exec is judged like any other (only managed execs pay for the delete).
        Caller::Managed(subject) if hook == hook::EXEC => {
            setup::end_setup();
            subject
        }
        // A container's init process finishing its set-up runs the runtime's code.
        Caller::Managed(subject) if setup::in_setup(subject.cgroup_id) => return None,
        Caller::Managed(subject) => subject,
        // Fail-closed: the task is managed but its policy cannot be read.
        Caller::Broken { slot, identity, cgroup_id } => {
            let config = policy::config_or_enforce(slot, identity);
            let judgement = Judgement::refuse(reason::INTERNAL_ERROR);
            return Some(Assessed {
                slot,
                identity,
                cgroup_id,
                config,
                judgement,
                buf: core::ptr::null(),
                len: 0,
                hash: 0,
                fileless: false,
            });
        }
    };
    let unjudged = |judgement| Assessed {
        slot: subject.slot,
        identity: subject.identity,
        cgroup_id: subject.cgroup_id,
        config: subject.config,
        judgement,
        buf: core::ptr::null(),
        len: 0,
        hash: 0,
        fileless: false,
    };
    // SAFETY: `file` is a typed `struct file *` and the offset that of its `f_path`.
    let f_path = unsafe { file.add(offset(&OFF_FILE_F_PATH)) }.cast::<bpf_path>().cast_mut();
    let claimed = match path::claim(hook) {
        Ok(claimed) => claimed,
        // Fail-closed: without the buffer the path cannot be judged.
        Err(why) => return Some(unjudged(Judgement::refuse(why))),
    };
    // Read before the path: a change from here on leaves the entry made stale.
    if let Some(kind) = cache_kind_of(hook) {
        open_cache::stage(claimed.staged(), file, subject.identity, kind, subject.slot);
    }
    let resolved = match claimed.resolve(f_path, hook) {
        Ok(resolved) => resolved,
        // Fail-closed: a path we cannot read (or too long to judge) is denied and reported.
        Err(why) => return Some(unjudged(Judgement::refuse(why))),
    };
    let (judgement, hash) = judge_resolved(hook, file, wanted, &subject, &resolved)?;
    if !resolved.still_ours() {
        // Fail-closed: another task overwrote the path buffer while this one was
        // preempted, so the judgement may be about another path. Denied and reported as
        // `busy`, without the (foreign) path.
        diag::warning!("hook {}: path buffer reused while preempted: refused as busy", hook: u32 = hook);
        return Some(unjudged(Judgement::refuse(reason::BUSY)));
    }
    // Judged on this task's own path: a reuse from here on can only garble the path the
    // record shows, never the decision.
    let fileless = hook == hook::EXEC && fileless(&resolved);
    Some(Assessed { buf: resolved.buf(), len: resolved.len, hash, fileless, ..unjudged(judgement) })
}

/// What the rules and live state say about the resolved path (`None`: a mapping no rule
/// names, not judged), and the path's keyed hash (the scan's proof) when the scan ran (0
/// otherwise). What the rules found for an open is cached for the next open of the file.
#[inline(always)]
fn judge_resolved(
    hook: u32,
    file: *const u8,
    wanted: u32,
    subject: &Subject,
    resolved: &Resolved,
) -> Option<(Judgement, u64)> {
    // Moving tasks between cgroups and writing the enforcer's own files are judged before
    // any rule: no policy can allow them.
    if hook == hook::FILE_OPEN
        && wanted & access::WRITE != 0
        && let Some(why) = guard::write_open(subject, file)
    {
        if why == reason::INTERNAL_ERROR {
            diag::error!(
                "hook {}: file, inode or kernfs node unreadable on a write open: refused as internal-error",
                hook: u32 = hook,
            );
        }
        return Some((guard::judgement(why), 0));
    }
    // A file with no path on a filesystem (memfd, deleted, O_TMPFILE): the kernel shows
    // its path with this suffix.
    if hook == hook::EXEC && subject.config.flags & IDENTITY_ALLOW_FILELESS_EXEC == 0 && fileless(resolved) {
        // A named runtime executing a memfd copy of itself while it sets a container up.
        if subject.config.flags & IDENTITY_HAS_RUNTIMES != 0 && runtime::in_runtime() {
            let runtime = Judgement { action: action::ALLOW, rule: RULE_DEFAULT, reason: reason::RUNTIME };
            return Some((runtime, 0));
        }
        return Some((restricted::judgement(), 0));
    }
    let (exact_kind, dir_kind) = if hook == hook::FILE_OPEN {
        (path_kind::FILE_EXACT, path_kind::FILE_DIR)
    } else {
        (path_kind::EXEC_EXACT, path_kind::EXEC_DIR)
    };
    let by_path = path::lookup(resolved, subject.slot, subject.identity, exact_kind, dir_kind);
    let by_identity = dentry_of(file)
        .ok_or(())
        .and_then(|dentry| inodes::lookup(dentry, subject.slot, subject.identity, exact_kind, dir_kind));
    let found = match (by_path, by_identity) {
        (Ok(by_path), Ok(by_identity)) => inodes::combine(by_path, by_identity),
        // Fail-closed: the rules could not be consulted.
        (Err(why), _) => {
            if why == reason::FORGED_PATH {
                diag::warning!(
                    "hook {}: path hits a rule's index without its keyed proof: refused as forged-path",
                    hook: u32 = hook,
                );
            } else {
                diag::error!("hook {}: path scan could not run: refused as internal-error", hook: u32 = hook);
            }
            return Some((Judgement::refuse(why), 0));
        }
        // Fail-closed: the file's identity could not be read, so an alias could not be seen.
        (_, Err(())) => {
            diag::error!(
                "hook {}: file identity unreadable (dentry walk): refused as internal-error",
                hook: u32 = hook,
            );
            return Some((Judgement::refuse(reason::INTERNAL_ERROR), 0));
        }
    };
    // Only findings made from this task's own path: another task may have reused the
    // buffer while this one was preempted (refused as `busy` below).
    if let Some(kind) = cache_kind_of(hook)
        && resolved.still_ours()
    {
        open_cache::put(resolved.staged(), file, subject, kind, &found, resolved.len);
    }
    // Mappings are judged only where a rule names the file.
    if hook == hook::MMAP_EXEC && found.read.0 == action::NONE {
        return None;
    }
    let path = (found.hash, resolved.len, found.proof);
    let judgement = match live_judgement(hook, subject.identity, path, wanted) {
        Some(live) => live,
        None if hook == hook::FILE_OPEN => file_judgement(subject, found, wanted, path),
        None => policy::granted_path(
            Judgement::from_rule(found.read, subject.config.exec_default),
            subject.identity,
            path,
            grant_kind::EXEC,
        ),
    };
    Some((judgement, found.proof))
}

/// Which findings of `hook` are cached (`open_cache`): an open's file rules, or the
/// exec rules an exec and an executable mapping look up alike.
#[inline(always)]
fn cache_kind_of(hook: u32) -> Option<u32> {
    match hook {
        hook::FILE_OPEN => Some(cache_kind::OPEN),
        hook::EXEC | hook::MMAP_EXEC => Some(cache_kind::EXEC),
        _ => None,
    }
}

/// The dentry of `file` (BTF-typed, so `inodes::lookup` can walk it); `None` if the load
/// faulted (a file always has one).
#[inline(always)]
fn dentry_of(file: *const u8) -> Option<*const u8> {
    // SAFETY: `file` is BTF-typed (a hook argument or loaded from one) and the offset that
    // of `f_path.dentry`.
    let dentry = unsafe { load::<*const u8>(file, &OFF_FILE_DENTRY) };
    (!dentry.is_null()).then_some(dentry)
}

/// Whether the resolved path ends with ` (deleted)`, as the kernel shows files that have
/// no name on a filesystem.
#[inline(always)]
fn fileless(resolved: &Resolved) -> bool {
    const SUFFIX: &[u8; 10] = b" (deleted)";
    if resolved.len < SUFFIX.len() {
        return false;
    }
    let at = (resolved.len - SUFFIX.len()) & (MAX_PATH - 1);
    // SAFETY: a checked read inside (or just past) the per-CPU buffer; a failed read is
    // no suffix.
    let tail = unsafe { bpf_probe_read_kernel(resolved.buf().add(at).cast::<[u8; 10]>()) };
    tail.is_ok_and(|tail| tail == *SUFFIX)
}

/// Live state comes before the policy: a revoked credential, then a quarantine.
#[inline(always)]
fn live_judgement(hook: u32, identity: u32, path: (u64, usize, u64), wanted: u32) -> Option<Judgement> {
    let live = live_state(hook, identity, path, wanted);
    if let Some(live) = live
        && live.reason == reason::FORGED_PATH
    {
        diag::warning!(
            "hook {}: revoked credential's index hit without its keyed proof: refused as forged-path",
            hook: u32 = hook,
        );
    }
    live
}

/// [`live_judgement`] without its diagnostic, for the cached judgement (whose stack frame
/// has no room for the logging call; a refusal is judged again in full, and logged).
#[inline(always)]
fn live_state(hook: u32, identity: u32, path: (u64, usize, u64), wanted: u32) -> Option<Judgement> {
    match hook {
        hook::EXEC => return policy::quarantined(identity, restrict::EXEC),
        hook::MMAP_EXEC => return None,
        _ => {}
    }
    if let Some(revoked) = policy::revoked(path.0, path.1, path.2) {
        return Some(revoked);
    }
    let mut bits = 0;
    if wanted & access::READ != 0 {
        bits |= restrict::FILE_READ;
    }
    if wanted & access::WRITE != 0 {
        bits |= restrict::FILE_WRITE;
    }
    policy::quarantined(identity, bits)
}

/// Read and write are judged separately (each may be granted); an open that asks for
/// both needs both.
#[inline(always)]
fn file_judgement(subject: &Subject, found: path::Found, wanted: u32, path: (u64, usize, u64)) -> Judgement {
    let default = subject.config.file_default;
    let id = subject.identity;
    let read =
        policy::granted_path(Judgement::from_rule(found.read, default), id, path, grant_kind::FILE_READ);
    if wanted & access::WRITE == 0 {
        return read;
    }
    let write =
        policy::granted_path(Judgement::from_rule(found.write, default), id, path, grant_kind::FILE_WRITE);
    // The first access that is not allowed decides; otherwise the write judgement.
    if wanted & access::READ == 0 || read.action == enforcer_common::verdict::action::ALLOW {
        return write;
    }
    read
}

/// Denies (or audits) an access that could not be judged, and reports it without a path.
#[inline(always)]
fn refuse_unjudged(
    hook: u32,
    slot: u32,
    identity: u32,
    cgroup_id: u64,
    judgement: Judgement,
    wanted: u32,
) -> i32 {
    let config = policy::config_or_enforce(slot, identity);
    let (decision, errno) = policy::decide(&config, &judgement);
    emit::verdict(
        &Verdict { hook, slot, identity, cgroup_id, judgement, decision, errno },
        &Target::Path { access: wanted, buf: core::ptr::null::<c_void>().cast(), len: 0, hash: 0 },
    );
    policy::lsm_return(errno)
}
