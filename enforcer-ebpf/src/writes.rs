//! Write-class operations other than opens, judged like a write open by the file rules
//! that name the file (or a directory above it) by identity: removing, renaming, linking,
//! creating, truncating, changing mode, owner or extended attributes.
//!
//! These hooks cannot sleep or hand no `struct path` to `bpf_d_path`, so the judgement
//! is by identity only (`inodes.rs`): the files and directories the rules named when the
//! set was installed. Where no rule names the file or a directory above it, the operation
//! is left to the open that reads or writes its contents; the resource default is not
//! applied here. A quarantine that restricts writes refuses them all.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_loop, macros::lsm, programs::LsmContext};
use enforcer_common::{
    maps::path_kind,
    verdict::{access, action, hook, reason, restrict},
};

use crate::{
    diag,
    emit::{self, Target},
    guard::{entry_change, managed},
    inodes,
    offsets::{OFF_DENTRY_NAME, OFF_PATH_DENTRY, load, read},
    policy::{self, EPERM, Judgement, Subject},
};

/// Judges `wanted` access (read and/or write) to the file of `dentry` (BTF-typed, see
/// `inodes::lookup`) for a managed caller; 0 or `-EPERM`.
#[inline(always)]
pub fn judge(hook: u32, dentry: *const u8, wanted: u32) -> i32 {
    judge_by::<true>(hook, dentry, wanted)
}

/// [`judge`] for a dentry read with a helper (see `inodes::lookup_probed`).
#[inline(always)]
pub fn judge_probed(hook: u32, dentry: *const u8, wanted: u32) -> i32 {
    judge_by::<false>(hook, dentry, wanted)
}

#[inline(always)]
fn judge_by<const TYPED: bool>(hook: u32, dentry: *const u8, wanted: u32) -> i32 {
    match managed(hook) {
        Ok(subject) => judge_for::<TYPED>(hook, &subject, dentry, wanted),
        Err(ret) => ret,
    }
}

/// [`judge`] for `subject`, the managed caller ([`managed`]): hooks that judge more than
/// once (an entry's removal, both names of a link or a rename) find their caller once.
#[inline(always)]
fn judge_for<const TYPED: bool>(hook: u32, subject: &Subject, dentry: *const u8, wanted: u32) -> i32 {
    let name = read::<*const u8>(dentry, &OFF_DENTRY_NAME).unwrap_or(core::ptr::null());
    let target = Target::Object { what: wanted, name };
    let mut bits = 0;
    if wanted & access::READ != 0 {
        bits |= restrict::FILE_READ;
    }
    if wanted & access::WRITE != 0 {
        bits |= restrict::FILE_WRITE;
    }
    let judgement = if let Some(quarantined) = policy::quarantined(subject.identity, bits) {
        quarantined
    } else if let Ok(found) = if TYPED {
        inodes::lookup(dentry, subject.slot, subject.identity, path_kind::FILE_EXACT, path_kind::FILE_DIR)
    } else {
        inodes::lookup_probed(
            dentry,
            subject.slot,
            subject.identity,
            path_kind::FILE_EXACT,
            path_kind::FILE_DIR,
        )
    } {
        let default = subject.config.file_default;
        let read = if wanted & access::READ != 0 && found.read.0 != action::NONE {
            Some(Judgement::from_rule(found.read, default))
        } else {
            None
        };
        let write = if wanted & access::WRITE != 0 && found.write.0 != action::NONE {
            Some(Judgement::from_rule(found.write, default))
        } else {
            None
        };
        // The first access a rule does not allow decides; no rule: not judged here.
        match (read, write) {
            (Some(read), _) if read.action != action::ALLOW => read,
            (_, Some(write)) => write,
            (Some(read), None) => read,
            (None, None) => return 0,
        }
    } else {
        // Fail-closed: the file's identity could not be read for a managed caller.
        diag::error!(
            "hook {}: file identity unreadable (dentry walk): refused as internal-error",
            hook: u32 = hook,
        );
        Judgement::refuse(reason::INTERNAL_ERROR)
    };
    policy::lsm_return(emit::conclude(hook, subject, judgement, &target))
}

/// The dentry of a `struct path` (a hook argument), BTF-typed as `inodes::lookup` needs
/// it; a load that faulted reads null, whose walk `judge` refuses as unreadable.
#[inline(always)]
fn dentry_of(path: *const u8) -> *const u8 {
    // SAFETY: `path` is the hook's typed argument and the offset that of `path.dentry`.
    unsafe { load::<*const u8>(path, &OFF_PATH_DENTRY) }
}

#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    // Arguments: (dir, dentry); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let subject = match managed(hook::INODE_UNLINK) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let ret = entry_change(hook::INODE_UNLINK, &subject, ctx.arg(0), ctx.arg(1));
    if ret != 0 {
        return ret;
    }
    judge_for::<true>(hook::INODE_UNLINK, &subject, ctx.arg(1), access::WRITE)
}

#[lsm(hook = "inode_rmdir")]
pub fn inode_rmdir(ctx: LsmContext) -> i32 {
    // Arguments: (dir, dentry); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let subject = match managed(hook::INODE_RMDIR) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let ret = entry_change(hook::INODE_RMDIR, &subject, ctx.arg(0), ctx.arg(1));
    if ret != 0 {
        return ret;
    }
    judge_for::<true>(hook::INODE_RMDIR, &subject, ctx.arg(1), access::WRITE)
}

/// Both ends: the source is removed from its place, the target (new or replaced) is
/// written.
#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    // Arguments: (old_dir, old_dentry, new_dir, new_dentry); the previous program's
    // return value follows them.
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let subject = match managed(hook::INODE_RENAME) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    judge_ends(Ends { subject, dirs: [ctx.arg(0), ctx.arg(2)], dentries: [ctx.arg(1), ctx.arg(3)] })
}

/// A hard link gives the file another name: refused unless the caller may both read and
/// write the source, and write the new name.
#[lsm(hook = "inode_link")]
pub fn inode_link(ctx: LsmContext) -> i32 {
    // Arguments: (old_dentry, dir, new_dentry); the previous program's return value
    // follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    let subject = match managed(hook::INODE_LINK) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    let ret = judge_for::<true>(hook::INODE_LINK, &subject, ctx.arg(0), access::READ | access::WRITE);
    if ret != 0 {
        return ret;
    }
    judge_for::<true>(hook::INODE_LINK, &subject, ctx.arg(2), access::WRITE)
}

/// The two ends of a rename, for [`judge_end`].
#[repr(C)]
struct Ends {
    /// The managed caller.
    subject: Subject,
    /// The directories whose entries change.
    dirs: [*const u8; 2],
    /// The entries, BTF-typed as `judge` needs them.
    dentries: [*const u8; 2],
}

/// Iterations of [`judge_end`]'s loop: one per end, then one that only stops it.
const END_STEPS: u32 = 3;

/// Judges both ends of a rename, the first refusal deciding; one end per `bpf_loop`
/// iteration, so the kernel verifies one end's judgement from one state (inline, every
/// way out of the first end's judgement went on into the second's: `inode_rename` was the
/// slowest program to load, 106,000 instructions verified on 6.1 and 154,000 on 6.12;
/// 34,000 on 6.12 so). `inode_link` keeps its two judgements inline: there the loop
/// verified more on 6.12 (53,000 against 44,000).
///
/// The callback writes nothing back: a refusal stops the loop early, so the count of
/// iterations run says how it ended. 6.12's verifier walks a callback until the state it
/// starts from repeats; a result written into that state made it walk the judgement again
/// for every value the result could take.
#[inline(always)]
fn judge_ends(mut ends: Ends) -> i32 {
    // SAFETY: the callback only reads `ends`.
    let done = unsafe { bpf_loop(END_STEPS, judge_end as *mut c_void, (&raw mut ends).cast(), 0) };
    match done {
        // Both ends allowed: the last iteration ran.
        3 => 0,
        // An end was refused; its judgement counted and reported it.
        1 | 2 => policy::lsm_return(EPERM),
        // Fail-closed for managed callers: the loop did not run (it cannot fail with these
        // arguments, so this is a kernel that refuses it).
        _ => unjudged(hook::INODE_RENAME, &ends.subject),
    }
}

/// One end of [`judge_ends`] (`index` 0 or 1): stops the loop at a refusal (a judgement
/// that returned -EPERM has counted and reported it), and at `index` 2.
#[inline(never)]
unsafe extern "C" fn judge_end(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Ends` passed to bpf_loop.
    let ends = unsafe { &*ctx.cast::<Ends>() };
    // Each field read at a constant offset: the verifier keeps a pointer's type only so.
    let (dir, dentry) = match index {
        0 => (ends.dirs[0], ends.dentries[0]),
        1 => (ends.dirs[1], ends.dentries[1]),
        _ => return 1,
    };
    i64::from(
        entry_change(hook::INODE_RENAME, &ends.subject, dir, dentry) != 0
            || judge_for::<true>(hook::INODE_RENAME, &ends.subject, dentry, access::WRITE) != 0,
    )
}

/// Refuses a managed caller whose operation could not be judged, as `internal-error`.
/// A function of its own: inline, its frame would sit under [`judge_end`]'s and the
/// report's, past the kernel's 512 bytes for a chain of calls.
#[inline(never)]
fn unjudged(hook: u32, subject: &Subject) -> i32 {
    diag::error!("hook {}: ends not judged (bpf_loop): refused as internal-error", hook: u32 = hook);
    let target = Target::Object { what: access::WRITE, name: core::ptr::null() };
    policy::lsm_return(emit::conclude(hook, subject, Judgement::refuse(reason::INTERNAL_ERROR), &target))
}

#[lsm(hook = "inode_create")]
pub fn inode_create(ctx: LsmContext) -> i32 {
    // Arguments: (dir, dentry, mode); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::INODE_CREATE, ctx.arg(1), access::WRITE)
}

#[lsm(hook = "inode_mkdir")]
pub fn inode_mkdir(ctx: LsmContext) -> i32 {
    // Arguments: (dir, dentry, mode); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::INODE_MKDIR, ctx.arg(1), access::WRITE)
}

#[lsm(hook = "inode_mknod")]
pub fn inode_mknod(ctx: LsmContext) -> i32 {
    // Arguments: (dir, dentry, mode, dev); the previous program's return value follows.
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::INODE_MKNOD, ctx.arg(1), access::WRITE)
}

#[lsm(hook = "inode_symlink")]
pub fn inode_symlink(ctx: LsmContext) -> i32 {
    // Arguments: (dir, dentry, old_name); the previous program's return value follows.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::INODE_SYMLINK, ctx.arg(1), access::WRITE)
}

#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    // Arguments: (path); the previous program's return value follows it.
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::PATH_TRUNCATE, dentry_of(ctx.arg(0)), access::WRITE)
}

#[lsm(hook = "path_chmod")]
pub fn path_chmod(ctx: LsmContext) -> i32 {
    // Arguments: (path, mode); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::PATH_CHMOD, dentry_of(ctx.arg(0)), access::WRITE)
}

#[lsm(hook = "path_chown")]
pub fn path_chown(ctx: LsmContext) -> i32 {
    // Arguments: (path, uid, gid); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::PATH_CHOWN, dentry_of(ctx.arg(0)), access::WRITE)
}

#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    // Arguments: (idmap, dentry, name, value, size, flags); the previous program's return
    // value follows them.
    let earlier: i32 = ctx.arg(6);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::INODE_SETXATTR, ctx.arg(1), access::WRITE)
}

#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    // Arguments: (idmap, dentry, name); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    judge(hook::INODE_REMOVEXATTR, ctx.arg(1), access::WRITE)
}
