//! The API server: accepts connections on the Unix socket, checks the caller's
//! credentials, parses requests and passes them to the agent's main loop as [`Command`]s.
//! Verdict streams are served from a broadcast channel, so a slow or dead client only
//! loses its own records (and is told how many) and never holds up the agent.

use std::{
    convert::Infallible,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot},
};

use super::{
    ApiError, ApplyResult, CheckRequest, ContainerBound, ContainerStart, IdentityInfo, MAX_BODY, PolicyList,
    Status, VerdictFilter,
};
use crate::{
    kubepods::PodsChange,
    kubernetes::{PodRequest, policy_status::Verdict, policy_watch::ClusterPolicy},
    policy::{evaluate::Explanation, model::Policy, validate},
};

/// A request for the agent's main loop, which owns the engine.
pub enum Command {
    Status(oneshot::Sender<Status>),
    ListPolicies(oneshot::Sender<PolicyList>),
    GetPolicy(String, oneshot::Sender<Option<Policy>>),
    Apply {
        docs: Vec<Policy>,
        dry_run: bool,
        uid: u32,
        reply: oneshot::Sender<Result<ApplyResult, String>>,
    },
    Delete {
        name: String,
        dry_run: bool,
        uid: u32,
        reply: oneshot::Sender<Result<ApplyResult, Failure>>,
    },
    Identities(oneshot::Sender<Vec<IdentityInfo>>),
    Check(CheckRequest, oneshot::Sender<Result<Explanation, Failure>>),
    /// Prometheus text for a scrape.
    Metrics(oneshot::Sender<String>),
    /// A change to, or a listing of, live state (quarantines, revoked credentials).
    Live {
        request: LiveRequest,
        uid: u32,
        reply: oneshot::Sender<Result<serde_json::Value, Failure>>,
    },
    /// Kubernetes: the pods of this node changed.
    Pods(PodsChange),
    /// Kubernetes: the cluster's whole set of `Policy` resources, to apply atomically;
    /// answered with each resource's verdict for its status.
    ClusterPolicies {
        resources: Vec<ClusterPolicy>,
        reply: oneshot::Sender<Vec<(String, Verdict)>>,
    },
    /// A container is about to start (OCI hook): bind its cgroup now.
    Container {
        start: ContainerStart,
        reply: oneshot::Sender<Result<ContainerAnswer, Failure>>,
    },
    /// Readiness: attached and, with `--kubernetes`, both watches listed.
    Ready(oneshot::Sender<Result<(), String>>),
}

/// How long a starting container waits for its pod to be read from the API server.
const POD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The main loop's answer for a starting container.
#[derive(Debug)]
pub enum ContainerAnswer {
    Bound(ContainerBound),
    /// The pod is not known yet: ask the API server for it, then ask again.
    UnknownPod,
}

/// Live-state operations.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineBody {
    pub identity: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeBody {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantBody {
    pub identity: String,
    pub target: crate::live::GrantTarget,
    /// `90s`, `15m`, `2h`, `1d` (at most 7 days).
    pub ttl: String,
    pub reason: String,
}

/// Answer to an approval request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// How long the resulting grant lasts (approve only).
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub enum LiveRequest {
    ListApprovals,
    Approve(u32, ApprovalAnswer),
    DenyApproval(u32, ApprovalAnswer),
    Grant(GrantBody),
    RevokeGrant(u32),
    ListGrants,
    Quarantine(QuarantineBody),
    Release(String),
    ListQuarantines,
    Revoke(RevokeBody),
    Unrevoke(String),
    ListRevoked,
}

/// An error with its HTTP status.
pub struct Failure {
    pub status: u16,
    pub message: String,
}

/// One record of the verdict stream, with the fields followers filter on.
#[derive(Debug, Clone)]
pub struct Line {
    pub json: String,
    pub kind: String,
    pub time: String,
    /// `time` as an instant: compared as times, never as strings ("…00Z" sorts after
    /// "…00.1Z" as text).
    pub at: Option<jiff::Timestamp>,
    pub identity: Option<String>,
    pub policy: Option<String>,
    pub decision: Option<String>,
    pub hook: Option<String>,
}

impl VerdictFilter {
    fn matches_line(&self, line: &Line) -> bool {
        self.matches(&line.kind, |field| match field {
            "identity" => line.identity.as_deref(),
            "policy" => line.policy.as_deref(),
            "decision" => line.decision.as_deref(),
            "hook" => line.hook.as_deref(),
            _ => None,
        })
    }
}

impl Line {
    pub fn from_json(json: String) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(&json).ok()?;
        let field = |name: &str| v[name].as_str().map(str::to_owned);
        Some(Self {
            kind: field("type").unwrap_or_default(),
            time: field("time").unwrap_or_default(),
            at: field("time").and_then(|t| t.parse().ok()),
            identity: field("identity"),
            policy: field("policy"),
            decision: field("decision"),
            hook: field("hook"),
            json,
        })
    }
}

/// Where the server finds the past verdicts for `since`/`last` queries.
pub type History = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

pub struct Server {
    pub socket: PathBuf,
    /// Group whose members may use the API besides root.
    pub group: Option<u32>,
    pub commands: mpsc::Sender<Command>,
    pub verdicts: broadcast::Sender<Arc<Line>>,
    pub history: History,
    /// Whether a process (by pid) belongs to a managed identity: such callers may not use
    /// the API, or a workload could lift its own quarantine.
    pub managed: Arc<dyn Fn(i32) -> bool + Send + Sync>,
    /// Kubernetes: where to read a pod the watch has not delivered yet.
    pub pods: Option<mpsc::Sender<PodRequest>>,
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("responses serialise");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &ApiError { error: message.into() })
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

impl Server {
    /// Serves until the listener fails. Each connection runs in its own task with a
    /// header timeout, so a client that sends nothing cannot hold resources for long.
    pub async fn run(self: Arc<Self>, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let server = Arc::clone(&self);
            tokio::spawn(async move { server.connection(stream).await });
        }
    }

    async fn connection(self: Arc<Self>, stream: UnixStream) {
        // The credentials are those of the process that connected, checked once per
        // connection and attached to every request on it.
        let cred = stream.peer_cred().ok();
        let (uid, gid, pid) = cred.map_or((u32::MAX, u32::MAX, None), |c| (c.uid(), c.gid(), c.pid()));
        let groups = if self.group.is_some() { peer_groups(&stream) } else { Vec::new() };
        let allowed = cred.is_some() && authorized(uid, gid, &groups, self.group);
        if !allowed {
            tracing::warn!(uid, pid = ?pid, "refused an API connection from a caller that is not allowed");
        }
        // Fail-closed: a caller whose process cannot be placed counts as managed.
        let managed = allowed && pid.is_none_or(|pid| (self.managed)(pid));
        if managed {
            tracing::warn!(uid, pid = ?pid, "refused an API connection from a managed workload");
        }
        let service = service_fn(move |request| {
            let server = Arc::clone(&self);
            async move {
                if managed {
                    return Ok::<_, Infallible>(error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "process {} runs inside a managed identity; the enforcer API serves operators and automation outside managed workloads",
                            pid.unwrap_or_default()
                        ),
                    ));
                }
                if !allowed {
                    return Ok::<_, Infallible>(error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "uid {uid} may not use the enforcer API (root only, or the configured group)"
                        ),
                    ));
                }
                Ok(server.route(request, uid).await)
            }
        });
        let _ = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    #[expect(clippy::too_many_lines, reason = "one flat routing table reads best")]
    async fn route(&self, request: Request<Incoming>, uid: u32) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let query = Query::parse(request.uri().query().unwrap_or_default());
        let method = request.method().clone();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["v1", "status"]) => self.ask(Command::Status).await,
            (&Method::GET, ["v1", "policies"]) => self.ask(Command::ListPolicies).await,
            (&Method::GET, ["v1", "policies", name]) => {
                let name = (*name).to_owned();
                match self.call(|reply| Command::GetPolicy(name.clone(), reply)).await {
                    Ok(Some(policy)) => json_response(StatusCode::OK, &policy),
                    Ok(None) => error(StatusCode::NOT_FOUND, format!("no policy named {name:?}")),
                    Err(response) => response,
                }
            }
            (&Method::POST, ["v1", "policies"]) => {
                let body = match read_body(request).await {
                    Ok(body) => body,
                    Err(response) => return response,
                };
                let docs = match validate::parse("request body", &body) {
                    Ok(docs) if docs.is_empty() => {
                        return error(StatusCode::BAD_REQUEST, "the body holds no policy");
                    }
                    Ok(docs) => docs,
                    Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
                };
                let dry_run = query.flag("dryRun");
                match self.call(|reply| Command::Apply { docs, dry_run, uid, reply }).await {
                    Ok(Ok(result)) => json_response(StatusCode::OK, &result),
                    Ok(Err(message)) => error(StatusCode::BAD_REQUEST, message),
                    Err(response) => response,
                }
            }
            (&Method::DELETE, ["v1", "policies", name]) => {
                let name = (*name).to_owned();
                let dry_run = query.flag("dryRun");
                match self.call(|reply| Command::Delete { name, dry_run, uid, reply }).await {
                    Ok(Ok(result)) => json_response(StatusCode::OK, &result),
                    Ok(Err(f)) => failure(&f),
                    Err(response) => response,
                }
            }
            (&Method::GET, ["v1", "identities"]) => self.ask(Command::Identities).await,
            // Only root: the answer can exempt a process from the mount restrictions.
            (&Method::POST, ["v1", "containers"]) if uid != 0 => error(
                StatusCode::FORBIDDEN,
                "only root (the container runtime's hook) may announce containers",
            ),
            (&Method::POST, ["v1", "containers"]) => match read_json::<ContainerStart>(request).await {
                Ok(start) => self.container(start).await,
                Err(response) => response,
            },
            (&Method::POST, ["v1", "check"]) => {
                let body = match read_body(request).await {
                    Ok(body) => body,
                    Err(response) => return response,
                };
                let check: CheckRequest = match serde_json::from_str(&body) {
                    Ok(c) => c,
                    Err(e) => return error(StatusCode::BAD_REQUEST, format!("check request: {e}")),
                };
                match self.call(|reply| Command::Check(check, reply)).await {
                    Ok(Ok(explanation)) => json_response(StatusCode::OK, &explanation),
                    Ok(Err(f)) => failure(&f),
                    Err(response) => response,
                }
            }
            (&Method::GET, ["v1", "verdicts"]) => self.verdicts(&query),
            (&Method::GET, ["v1", "approvals"]) => self.live(LiveRequest::ListApprovals, uid).await,
            (&Method::POST, ["v1", "approvals", id, verb @ ("approve" | "deny")]) => {
                let Ok(id) = id.parse() else {
                    return error(StatusCode::BAD_REQUEST, format!("request id {id:?} is not a number"));
                };
                let answer = match read_json::<ApprovalAnswer>(request).await {
                    Ok(answer) => answer,
                    Err(response) => return response,
                };
                let request = if *verb == "approve" {
                    LiveRequest::Approve(id, answer)
                } else {
                    LiveRequest::DenyApproval(id, answer)
                };
                self.live(request, uid).await
            }
            (&Method::GET, ["v1", "grants"]) => self.live(LiveRequest::ListGrants, uid).await,
            (&Method::POST, ["v1", "grants"]) => match read_json::<GrantBody>(request).await {
                Ok(body) => self.live(LiveRequest::Grant(body), uid).await,
                Err(response) => response,
            },
            (&Method::DELETE, ["v1", "grants", id]) => match id.parse() {
                Ok(id) => self.live(LiveRequest::RevokeGrant(id), uid).await,
                Err(_) => error(StatusCode::BAD_REQUEST, format!("grant id {id:?} is not a number")),
            },
            (&Method::GET, ["v1", "quarantine"]) => self.live(LiveRequest::ListQuarantines, uid).await,
            (&Method::DELETE, ["v1", "quarantine", identity]) => {
                self.live(LiveRequest::Release((*identity).to_owned()), uid).await
            }
            (&Method::POST, ["v1", "quarantine"]) => match read_json::<QuarantineBody>(request).await {
                Ok(body) => self.live(LiveRequest::Quarantine(body), uid).await,
                Err(response) => response,
            },
            (&Method::GET, ["v1", "credentials", "revoked"]) => {
                self.live(LiveRequest::ListRevoked, uid).await
            }
            (&Method::DELETE, ["v1", "credentials", "revoked"]) => match query.get("path") {
                Some(path) => self.live(LiveRequest::Unrevoke(path), uid).await,
                None => error(StatusCode::BAD_REQUEST, "name the credential with ?path="),
            },
            (&Method::POST, ["v1", "credentials", "revoked"]) => match read_json::<RevokeBody>(request).await
            {
                Ok(body) => self.live(LiveRequest::Revoke(body), uid).await,
                Err(response) => response,
            },
            (
                _,
                [
                    "v1",
                    "status" | "policies" | "identities" | "check" | "verdicts" | "quarantine"
                    | "credentials" | "containers",
                    ..,
                ],
            ) => error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not supported on {path}")),
            _ => error(StatusCode::NOT_FOUND, format!("no such API path {path}")),
        }
    }

    #[expect(clippy::result_large_err, reason = "the error is the response itself, built once per request")]
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Response<Body>> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(make(reply)).await.is_err() {
            return Err(error(StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down"));
        }
        answer.await.map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "the agent dropped the request"))
    }

    async fn ask<T: Serialize>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Response<Body> {
        match self.call(make).await {
            Ok(value) => json_response(StatusCode::OK, &value),
            Err(response) => response,
        }
    }

    /// Binds a starting container's cgroup. A pod the watch has not delivered yet is read
    /// from the API server first, so its labels are known before the container runs.
    async fn container(&self, start: ContainerStart) -> Response<Body> {
        for attempt in 0..2 {
            let request = start.clone();
            match self.call(|reply| Command::Container { start: request, reply }).await {
                Ok(Ok(ContainerAnswer::Bound(bound))) => return json_response(StatusCode::OK, &bound),
                Ok(Ok(ContainerAnswer::UnknownPod)) if attempt == 0 => {}
                Ok(Ok(ContainerAnswer::UnknownPod)) => break,
                Ok(Err(f)) => return failure(&f),
                Err(response) => return response,
            }
            let Some(pods) = &self.pods else { break };
            let (reply, answer) = oneshot::channel();
            let _ = pods.send((start.namespace.clone(), start.pod.clone(), reply)).await;
            match tokio::time::timeout(POD_READ_TIMEOUT, answer).await.unwrap_or(Ok(Err(format!(
                "the API server did not answer for pod {}/{} within {} s",
                start.namespace,
                start.pod,
                POD_READ_TIMEOUT.as_secs()
            )))) {
                Ok(Ok(pod)) if pod.uid == start.pod_uid => {
                    if self.commands.send(Command::Pods(PodsChange::Upsert(pod))).await.is_err() {
                        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
                    }
                }
                Ok(Ok(pod)) => {
                    return error(
                        StatusCode::CONFLICT,
                        format!(
                            "pod {}/{} has uid {}, the container's annotations say {}",
                            start.namespace, start.pod, pod.uid, start.pod_uid
                        ),
                    );
                }
                Ok(Err(message)) => return error(StatusCode::SERVICE_UNAVAILABLE, message),
                Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the Kubernetes client is gone"),
            }
        }
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("pod {}/{} is not known to the agent", start.namespace, start.pod),
        )
    }

    async fn live(&self, request: LiveRequest, uid: u32) -> Response<Body> {
        match self.call(|reply| Command::Live { request, uid, reply }).await {
            Ok(Ok(value)) => json_response(StatusCode::OK, &value),
            Ok(Err(f)) => failure(&f),
            Err(response) => response,
        }
    }

    /// The verdict stream: past records (`since`, `last`), then live ones (`follow`).
    fn verdicts(&self, query: &Query) -> Response<Body> {
        let filter = VerdictFilter {
            identity: query.get("identity"),
            policy: query.get("policy"),
            decision: query.get("decision"),
            hook: query.get("hook"),
        };
        let since: Option<jiff::Timestamp> = match query.get("since").map(|s| s.parse::<jiff::Timestamp>()) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                return error(StatusCode::BAD_REQUEST, format!("since must be an RFC 3339 time: {e}"));
            }
        };
        let last: Option<usize> = match query.get("last").map(|l| l.parse()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "last must be a whole number"),
        };
        let follow = query.flag("follow");
        // Subscribe before reading the history so nothing falls between the two.
        let mut live = self.verdicts.subscribe();
        let history = Arc::clone(&self.history);
        let (tx, rx) = mpsc::channel::<Bytes>(1024);
        tokio::spawn(async move {
            // Reading rotated logs is file I/O: kept off the thread that drains the ring.
            let Ok(lines) = tokio::task::spawn_blocking(move || history()).await else { return };
            let mut past: Vec<Line> = lines
                .into_iter()
                .filter_map(Line::from_json)
                .filter(|l| filter.matches_line(l) && since.is_none_or(|s| l.at.is_some_and(|at| at >= s)))
                .collect();
            if since.is_none() {
                let keep = last.unwrap_or(0);
                past.drain(..past.len().saturating_sub(keep));
            }
            let newest = past.last().and_then(|l| l.at);
            for line in past {
                if tx.send(Bytes::from(line.json + "\n")).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                let text = match live.recv().await {
                    Ok(record) if record.at > newest && filter.matches_line(&record) => {
                        record.json.clone() + "\n"
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => format!(
                        "{{\"type\":\"dropped\",\"count\":{missed},\"reason\":\"this follower fell behind\"}}\n"
                    ),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Bytes::from(text)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/x-ndjson")
            .body(Stream { rx }.boxed())
            .expect("valid response")
    }
}

fn failure(f: &Failure) -> Response<Body> {
    error(StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), f.message.clone())
}

/// The request body as text, refusing bodies over [`MAX_BODY`].
#[expect(clippy::result_large_err, reason = "the error is the response itself, built once per request")]
async fn read_body(request: Request<Incoming>) -> Result<String, Response<Body>> {
    let collected = Limited::new(request.into_body(), MAX_BODY).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body exceeds {MAX_BODY} bytes"))
        } else {
            error(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
        }
    })?;
    String::from_utf8(collected.to_bytes().to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8"))
}

/// A JSON request body of type `T`.
#[expect(clippy::result_large_err, reason = "the error is the response itself, built once per request")]
async fn read_json<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> Result<T, Response<Body>> {
    let body = read_body(request).await?;
    serde_json::from_str(&body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

/// `a=b&c` query strings (values are percent-decoded).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.is_empty() || v == "true" || v == "1")
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response body fed by a channel.
struct Stream {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_flags_read() {
        let q = Query::parse("since=2026-11-22T02%3A00%3A00Z&follow&dryRun=false&identity=a+b");
        assert_eq!(q.get("since").as_deref(), Some("2026-11-22T02:00:00Z"));
        assert!(q.flag("follow"));
        assert!(!q.flag("dryRun"));
        assert_eq!(q.get("identity").as_deref(), Some("a b"));
    }

    #[test]
    fn only_root_or_the_group_is_allowed() {
        assert!(authorized(0, 0, &[], None));
        assert!(!authorized(1000, 1000, &[], None));
        assert!(authorized(1000, 50, &[], Some(50)));
        assert!(!authorized(1000, 1000, &[], Some(50)));
        assert!(authorized(1000, 1000, &[4, 50], Some(50)), "a supplementary group counts");
        assert!(!authorized(1000, 1000, &[4, 51], Some(50)));
    }

    #[test]
    fn filters_keep_dropped_notices() {
        let line = |json: &str| Line::from_json(json.to_owned()).unwrap();
        let f = VerdictFilter {
            identity: Some("a".into()),
            policy: None,
            decision: Some("deny".into()),
            hook: None,
        };
        assert!(f.matches_line(&line(r#"{"type":"verdict","identity":"a","decision":"deny"}"#)));
        assert!(!f.matches_line(&line(r#"{"type":"verdict","identity":"b","decision":"deny"}"#)));
        assert!(!f.matches_line(&line(r#"{"type":"policy"}"#)));
        assert!(f.matches_line(&line(r#"{"type":"dropped","count":3}"#)));
    }

    #[test]
    fn record_times_compare_as_instants() {
        let at = |t: &str| Line::from_json(format!("{{\"type\":\"verdict\",\"time\":\"{t}\"}}")).unwrap().at;
        let whole = at("2026-11-22T10:00:00Z");
        let later = at("2026-11-22T10:00:00.1Z");
        assert!(whole.is_some() && later > whole, "as text, the later record would sort first");
        assert!(at("2026-11-22T11:00:00+02:00") < whole, "offsets are honoured");
    }
}
