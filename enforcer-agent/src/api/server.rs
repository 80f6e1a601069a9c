//! The API server: accepts connections on the Unix socket and checks each caller's
//! credentials once per connection (`SO_PEERCRED`, `SO_PEERGROUPS`) before any request on
//! it reaches the routes.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;

use axum::{Extension, Router};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::{UnixListener, UnixStream};

use super::{
    error,
    routes::{self, Caller},
};
use crate::daemon::{agent::StartApi, command::Handles};

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    /// Group whose members may use the API besides root.
    pub group: Option<u32>,
    pub handles: Handles,
}

/// Creates the socket (removing a stale one), restricted to root or root and `group`.
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is served by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    }
    Ok(listener)
}

/// Whether a peer may use the API: root, or a member of the configured group (primary or
/// supplementary, as the kernel recorded them when the peer connected).
fn authorized(uid: u32, gid: u32, groups: &[u32], group: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(group) = group else { return false };
    gid == group || groups.contains(&group)
}

/// The peer's supplementary groups from `SO_PEERGROUPS` (Linux ≥ 4.13): taken at connect
/// time by the kernel, not read later from /proc where the pid may have been reused.
/// Neither tokio nor nix exposes this option, hence the direct call.
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd as _;
    let mut groups = vec![0u32; 256];
    let mut len = libc::socklen_t::try_from(groups.len() * size_of::<u32>()).unwrap_or(0);
    // SAFETY: a buffer of `len` bytes for the kernel to fill; the descriptor is ours.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / size_of::<u32>());
    groups
}

/// The daemon's hook for bringing the API up: binds the socket and spawns the server.
pub fn start(socket: PathBuf, group: Option<u32>) -> StartApi {
    Box::new(move |handles| {
        let listener =
            bind(&socket, group).with_context(|| format!("creating the API socket {}", socket.display()))?;
        tokio::spawn(Server { group, handles }.run(listener));
        Ok(())
    })
}

impl Server {
    /// Serves until the listener fails. Each connection runs in its own task with a
    /// header timeout, so a client that sends nothing cannot hold resources for long.
    pub async fn run(self, listener: UnixListener) {
        let router = routes::router(self.handles.clone());
        let server = Arc::new(self);
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (server, router) = (Arc::clone(&server), router.clone());
            tokio::spawn(async move { server.connection(stream, router).await });
        }
    }

    async fn connection(self: Arc<Self>, stream: UnixStream, router: Router) {
        // The credentials are those of the process that connected, checked once per
        // connection and attached to every request on it.
        let cred = stream.peer_cred().ok();
        let (uid, gid, pid) = cred.map_or((u32::MAX, u32::MAX, None), |c| (c.uid(), c.gid(), c.pid()));
        let groups = if self.group.is_some() { peer_groups(&stream) } else { Vec::new() };
        let io = TokioIo::new(stream);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
        let refusal = if cred.is_none() || !authorized(uid, gid, &groups, self.group) {
            tracing::warn!(uid, pid = ?pid, "refused an API connection from a caller that is not allowed");
            Some(format!("uid {uid} may not use the enforcer API (root only, or the configured group)"))
        // Fail-closed: a caller whose process cannot be placed counts as managed.
        } else if pid.is_none_or(|pid| (self.handles.managed)(pid)) {
            tracing::warn!(uid, pid = ?pid, "refused an API connection from a managed workload");
            Some(format!(
                "process {} runs inside a managed identity; the enforcer API serves operators and automation outside managed workloads",
                pid.unwrap_or_default()
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            let service = service_fn(move |_| {
                let message = message.clone();
                async move { Ok::<_, std::convert::Infallible>(error(hyper::StatusCode::FORBIDDEN, message)) }
            });
            let _ = http.serve_connection(io, service).await;
            return;
        }
        let service = router.layer(Extension(Caller { uid })).into_service::<hyper::body::Incoming>();
        let _ = http.serve_connection(io, TowerToHyperService::new(service)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_or_the_group_is_allowed() {
        assert!(authorized(0, 0, &[], None));
        assert!(!authorized(1000, 1000, &[], None));
        assert!(authorized(1000, 50, &[], Some(50)));
        assert!(!authorized(1000, 1000, &[], Some(50)));
        assert!(authorized(1000, 1000, &[4, 50], Some(50)), "a supplementary group counts");
        assert!(!authorized(1000, 1000, &[4, 51], Some(50)));
    }
}
