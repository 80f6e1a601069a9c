//! Rules matched by a file's identity: the device and inode of the files and
//! directories a policy names, recorded by the agent when it installs the set.
//!
//! A path can be made to mean something else (a hard link, a bind mount, a `chroot`, a
//! detached mount tree, a renamed parent); the file's identity cannot. The walk goes from
//! the file up its `d_parent` chain inside its filesystem, so it reaches a named
//! directory whatever mount or root the file was reached through.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use enforcer_common::{
    MAX_DIR_DEPTH,
    maps::{InodeRuleKey, PathRule},
    verdict::action,
};

use crate::{
    maps::INODE_RULES,
    offsets::{OFF_DENTRY_D_INODE, OFF_DENTRY_D_PARENT, OFF_INODE_I_INO, OFF_INODE_I_SB, OFF_SB_S_DEV, read},
    path::Found,
};

/// State of one walk, shared with the `bpf_loop` callback.
#[repr(C)]
struct Walk {
    dentry: *const u8,
    slot: u32,
    identity: u32,
    exact_kind: u8,
    dir_kind: u8,
    /// Set when a dentry or inode could not be read.
    unreadable: u8,
    found: Found,
}

/// The deepest rule naming the file (`dentry`) or one of its directories, for each
/// access. `Err` if a kernel structure on the way could not be read.
#[inline(always)]
pub fn lookup(
    dentry: *const u8,
    slot: u32,
    identity: u32,
    exact_kind: u8,
    dir_kind: u8,
) -> Result<Found, ()> {
    let mut walk =
        Walk { dentry, slot, identity, exact_kind, dir_kind, unreadable: 0, found: Found::NOTHING };
    // SAFETY: the callback only touches `walk` and reads kernel memory through helpers.
    let done = unsafe { bpf_loop(MAX_DIR_DEPTH, step as *mut c_void, (&raw mut walk).cast(), 0) };
    if done < 0 || walk.unreadable != 0 {
        return Err(());
    }
    Ok(walk.found)
}

/// One level: the rules naming this dentry's inode, then up to its parent. Returns 1 to
/// stop at the filesystem's root.
#[inline(never)]
unsafe extern "C" fn step(level: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` passed to bpf_loop.
    let walk = unsafe { &mut *ctx.cast::<Walk>() };
    let Some(inode) = read::<*const u8>(walk.dentry, &OFF_DENTRY_D_INODE) else {
        walk.unreadable = 1;
        return 1;
    };
    // A negative dentry (a name about to be created) has no inode: only its directories.
    if !inode.is_null() {
        let Some((dev, ino)) = identity_of(inode) else {
            walk.unreadable = 1;
            return 1;
        };
        if level == 0 {
            let exact = key(ino, dev, walk, walk.exact_kind);
            apply(&mut walk.found, &exact);
        }
        let dir = key(ino, dev, walk, walk.dir_kind);
        apply(&mut walk.found, &dir);
    }
    if walk.found.read.0 != action::NONE && walk.found.write.0 != action::NONE {
        return 1;
    }
    let Some(parent) = read::<*const u8>(walk.dentry, &OFF_DENTRY_D_PARENT) else {
        walk.unreadable = 1;
        return 1;
    };
    if parent.is_null() || parent == walk.dentry {
        return 1;
    }
    walk.dentry = parent;
    0
}

/// (kernel device, inode number) of `inode`.
#[inline(always)]
pub fn identity_of(inode: *const u8) -> Option<(u32, u64)> {
    let sb = read::<*const u8>(inode, &OFF_INODE_I_SB)?;
    Some((read::<u32>(sb, &OFF_SB_S_DEV)?, read::<u64>(inode, &OFF_INODE_I_INO)?))
}

#[inline(always)]
fn key(ino: u64, dev: u32, walk: &Walk, kind: u8) -> InodeRuleKey {
    #[expect(clippy::cast_possible_truncation, reason = "slot < SLOTS")]
    InodeRuleKey { ino, dev, identity: walk.identity, kind, slot: walk.slot as u8, pad: [0; 6] }
}

/// The walk goes from the file upwards, so the first rule found is the most specific:
/// later (shallower) ones never override it.
#[inline(always)]
fn apply(found: &mut Found, key: &InodeRuleKey) {
    // SAFETY: plain value read once.
    if let Some(rule) = unsafe { INODE_RULES.get(key) } {
        let rule: PathRule = *rule;
        if found.read.0 == action::NONE && rule.read_action != action::NONE {
            found.read = (rule.read_action, rule.read_rule);
        }
        if found.write.0 == action::NONE && rule.write_action != action::NONE {
            found.write = (rule.write_action, rule.write_rule);
        }
    }
}

/// The path's findings combined with the identity's: where both name the access, the
/// stricter decides, so an alias can never loosen what the file's own rules say.
#[inline(always)]
pub fn combine(by_path: Found, by_identity: Found) -> Found {
    Found {
        read: action::stricter(by_path.read, by_identity.read),
        write: action::stricter(by_path.write, by_identity.write),
        hash: by_path.hash,
        proof: by_path.proof,
    }
}
