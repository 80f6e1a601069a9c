//! Connecting to a Unix socket bound at a path (a container runtime's socket, a
//! database's) is judged as a write to that path by the file rules, by the identity of
//! the socket file (see `writes.rs`). The socket's path lies past the `struct sock` the
//! hooks are given, so it is read with a helper and walked with helper reads
//! (`writes::judge_probed`). Abstract and unbound sockets have no path and are
//! not judged.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::verdict::{access, hook};

use crate::{
    diag,
    offsets::{OFF_SOCKET_SK, OFF_UNIX_SOCK_DENTRY, read},
    policy,
    writes::judge_probed,
};

/// The socket file of the Unix socket `sk` (`struct sock *`), if it is bound at a path
/// (`Ok(None)`: abstract or unbound); `Err` if it cannot be read.
#[inline(always)]
fn socket_file(sk: *const u8) -> Result<Option<*const u8>, ()> {
    if sk.is_null() {
        return Ok(None);
    }
    let dentry = read::<*const u8>(sk, &OFF_UNIX_SOCK_DENTRY).ok_or(())?;
    Ok(Some(dentry).filter(|dentry| !dentry.is_null()))
}

/// Stream and seqpacket `connect`.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    // Arguments: (sock, other, newsk); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    match socket_file(ctx.arg(1)) {
        Ok(Some(file)) => judge_probed(hook::UNIX_CONNECT, file, access::WRITE),
        Ok(None) => 0,
        // Fail-open: a peer whose path cannot be read is treated as unbound (abstract).
        Err(()) => {
            diag::error!(
                "hook {}: peer socket path unreadable: allowed as unbound (fail-open)",
                hook: u32 = hook::UNIX_CONNECT,
            );
            0
        }
    }
}

/// Datagram `connect` and every unconnected `sendmsg` to a bound socket.
#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    // Arguments: (sock, other), both `struct socket *`; the previous program's return
    // value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return policy::pass_on(earlier);
    }
    match read::<*const u8>(ctx.arg(1), &OFF_SOCKET_SK).ok_or(()).and_then(socket_file) {
        Ok(Some(file)) => judge_probed(hook::UNIX_SEND, file, access::WRITE),
        Ok(None) => 0,
        // Fail-open as above.
        Err(()) => {
            diag::error!(
                "hook {}: peer socket path unreadable: allowed as unbound (fail-open)",
                hook: u32 = hook::UNIX_SEND,
            );
            0
        }
    }
}
