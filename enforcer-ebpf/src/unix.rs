//! Connecting to a Unix socket bound at a path (a container runtime's socket, a
//! database's) is judged as a write to that path by the file rules, by the identity of
//! the socket file (see `writes.rs`). Abstract and unbound sockets have no path and are
//! not judged.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::verdict::{access, hook};

use crate::{
    lsm::pass_on,
    offsets::{OFF_SOCKET_SK, OFF_UNIX_SOCK_DENTRY, read},
    writes::judge,
};

/// The socket file of the Unix socket `sk` (`struct sock *`), if it is bound at a path.
#[inline(always)]
fn socket_file(sk: *const u8) -> Option<*const u8> {
    read::<*const u8>(sk, &OFF_UNIX_SOCK_DENTRY).filter(|dentry| !dentry.is_null())
}

/// Stream and seqpacket `connect`.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    // Arguments: (sock, other, newsk); the previous program's return value follows them.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return pass_on(earlier);
    }
    // Fail-open: a peer whose path cannot be read is treated as unbound (abstract).
    let Some(file) = socket_file(ctx.arg(1)) else { return 0 };
    judge(hook::UNIX_CONNECT, file, access::WRITE)
}

/// Datagram `connect` and every unconnected `sendmsg` to a bound socket.
#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    // Arguments: (sock, other), both `struct socket *`; the previous program's return
    // value follows them.
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return pass_on(earlier);
    }
    // Fail-open as above.
    let Some(file) = read::<*const u8>(ctx.arg(1), &OFF_SOCKET_SK).and_then(socket_file) else { return 0 };
    judge(hook::UNIX_SEND, file, access::WRITE)
}
