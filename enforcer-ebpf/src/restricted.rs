//! Operations a managed task may not do unless its policy allows them, because they
//! change what paths mean or bypass the network rules:
//!
//! - mounts (`mount`, bind mounts, remounts, `move_mount`, `umount`), `pivot_root` and
//!   `chroot`: a denied directory could be shown under another path (`allowMounts`);
//! - raw, packet and ICMP sockets: they reach addresses without the connect and send
//!   hooks (`allowRawSockets`);
//! - executing a file with no path (judged in `lsm.rs`, `allowFilelessExec`).
//!
//! Each refusal is a verdict with reason `restricted`; in audit mode it is reported and
//! allowed like a policy denial.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::verdict::{
    IDENTITY_ALLOW_MOUNTS, IDENTITY_ALLOW_RAW_SOCKETS, IDENTITY_HAS_RUNTIMES, RULE_DEFAULT, action, hook,
    reason, stat,
};

use crate::{
    emit::{self, Target},
    guard::managed,
    maps::count,
    offsets::{OFF_DENTRY_NAME, OFF_PATH_DENTRY, read},
    policy::{Judgement, lsm_return, pass_on},
};

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_DGRAM: i32 = 2;
const SOCK_RAW: i32 = 3;
/// `type` also carries `SOCK_NONBLOCK`/`SOCK_CLOEXEC`; these bits are the socket type.
const SOCK_TYPE_MASK: i32 = 0xf;
const IPPROTO_ICMP: i32 = 1;
const IPPROTO_ICMPV6: i32 = 58;

/// The refusal, counted.
#[inline(always)]
pub fn judgement() -> Judgement {
    count(stat::RESTRICTED);
    Judgement { action: action::DENY, rule: RULE_DEFAULT, reason: reason::RESTRICTED }
}

/// Refuses `hook` to a managed caller whose identity lacks `allowed_by`; `what` and
/// `name` describe the operation in the verdict.
#[inline(always)]
fn restrict(hook: u32, allowed_by: u32, what: u32, name: *const u8) -> i32 {
    let subject = match managed(hook) {
        Ok(subject) => subject,
        Err(ret) => return ret,
    };
    if subject.config.flags & allowed_by != 0 {
        return 0;
    }
    // A named container runtime setting a container up (see `runtime`).
    if allowed_by == IDENTITY_ALLOW_MOUNTS
        && subject.config.flags & IDENTITY_HAS_RUNTIMES != 0
        && crate::runtime::in_runtime()
    {
        return 0;
    }
    lsm_return(emit::conclude(hook, &subject, judgement(), &Target::Object { what, name }))
}

/// The last component of a `struct path`, for the verdict (null if unreadable).
#[inline(always)]
fn path_name(path: *const u8) -> *const u8 {
    read::<*const u8>(path, &OFF_PATH_DENTRY)
        .and_then(|dentry| read::<*const u8>(dentry, &OFF_DENTRY_NAME))
        .unwrap_or(core::ptr::null())
}

#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    // Arguments: (dev_name, path, type, flags, data); the previous program's return value
    // follows them.
    let earlier: i32 = ctx.arg(5);
    if earlier != 0 {
        return pass_on(earlier);
    }
    let flags: u64 = ctx.arg(3);
    // The source (a device, a directory for bind mounts) names the mount in the verdict.
    #[expect(clippy::cast_possible_truncation, reason = "MS_* flags fit in 32 bits")]
    restrict(hook::MOUNT, IDENTITY_ALLOW_MOUNTS, flags as u32, ctx.arg(0))
}

#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    // Arguments: (from_path, to_path); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return pass_on(earlier);
    }
    restrict(hook::MOVE_MOUNT, IDENTITY_ALLOW_MOUNTS, 0, path_name(ctx.arg(1)))
}

#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    // Arguments: (mnt, flags); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return pass_on(earlier);
    }
    let flags: u32 = ctx.arg(1);
    restrict(hook::UMOUNT, IDENTITY_ALLOW_MOUNTS, flags, core::ptr::null())
}

#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    // Arguments: (old_path, new_path); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return pass_on(earlier);
    }
    restrict(hook::PIVOT_ROOT, IDENTITY_ALLOW_MOUNTS, 0, path_name(ctx.arg(1)))
}

#[lsm(hook = "path_chroot")]
pub fn path_chroot(ctx: LsmContext) -> i32 {
    // Arguments: (path); the previous program's return value follows it.
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return pass_on(earlier);
    }
    restrict(hook::CHROOT, IDENTITY_ALLOW_MOUNTS, 0, path_name(ctx.arg(0)))
}

/// Raw (`SOCK_RAW`), packet (`AF_PACKET`) and ICMP datagram sockets. Sockets the kernel
/// creates for itself are never judged.
#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    // Arguments: (family, type, protocol, kern); the previous program's return value
    // follows them.
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return pass_on(earlier);
    }
    let (family, kind, protocol, kern): (i32, i32, i32, i32) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    let kind = kind & SOCK_TYPE_MASK;
    let inet = family == AF_INET || family == AF_INET6;
    let raw = family == AF_PACKET
        || (inet && kind == SOCK_RAW)
        || (kind == SOCK_DGRAM
            && ((family == AF_INET && protocol == IPPROTO_ICMP)
                || (family == AF_INET6 && protocol == IPPROTO_ICMPV6)));
    if kern != 0 || !raw {
        return 0;
    }
    // The verdict's `access` field carries family, type and protocol.
    #[expect(clippy::cast_sign_loss, reason = "small non-negative constants, packed")]
    let what = ((family as u32 & 0xff) << 16) | ((kind as u32 & 0xff) << 8) | (protocol as u32 & 0xff);
    restrict(hook::SOCKET_CREATE, IDENTITY_ALLOW_RAW_SOCKETS, what, core::ptr::null())
}
