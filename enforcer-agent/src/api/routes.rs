//! The API's routes: each decodes its request, sends the daemon a [`Command`] and answers
//! with the reply as JSON. Every error, the router's own included, answers
//! `{"error": "..."}`.

use std::{collections::HashMap, time::Duration};

use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{Method, StatusCode, Uri, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;

use super::{MAX_BODY, error, stream};
use crate::{
    daemon::{
        command::{
            ApprovalAnswer, Command, ContainerAnswer, Failure, GrantBody, Handles, LiveRequest,
            QuarantineBody, RevokeBody,
        },
        identity::kubepods::PodsChange,
        reports::{CheckRequest, ContainerStart},
    },
    policy::{model::Policy, validate},
};

/// How long a starting container waits for its pod to be read from the API server.
const POD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The caller of a connection, as its credentials were checked when it connected.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
}

/// An error answer: its status and message.
pub struct Reject(StatusCode, String);

impl Reject {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

impl From<Failure> for Reject {
    fn from(f: Failure) -> Self {
        Self(StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), f.message)
    }
}

type Answer<T> = Result<Json<T>, Reject>;

pub fn router(handles: Handles) -> Router {
    Router::new()
        .route("/v1/status", get(|h: State<Handles>| ask(h, Command::Status)))
        .route("/v1/policies", get(|h: State<Handles>| ask(h, Command::ListPolicies)).post(apply))
        .route("/v1/policies/{name}", get(get_policy).delete(delete_policy))
        .route("/v1/identities", get(|h: State<Handles>| ask(h, Command::Identities)))
        .route("/v1/containers", post(container))
        .route("/v1/check", post(check))
        .route("/v1/verdicts", get(stream::verdicts))
        .route(
            "/v1/approvals",
            get(|h: State<Handles>, c: Extension<Caller>| live(h, c, LiveRequest::ListApprovals)),
        )
        .route("/v1/approvals/{id}/{verb}", post(answer_approval))
        .route(
            "/v1/grants",
            get(|h: State<Handles>, c: Extension<Caller>| live(h, c, LiveRequest::ListGrants)).post(grant),
        )
        .route("/v1/grants/{id}", delete(revoke_grant))
        .route(
            "/v1/quarantine",
            get(|h: State<Handles>, c: Extension<Caller>| live(h, c, LiveRequest::ListQuarantines))
                .post(quarantine),
        )
        .route("/v1/quarantine/{identity}", delete(release))
        .route(
            "/v1/credentials/revoked",
            get(|h: State<Handles>, c: Extension<Caller>| live(h, c, LiveRequest::ListRevoked))
                .post(revoke)
                .delete(unrevoke),
        )
        .fallback(|uri: Uri| async move {
            error(StatusCode::NOT_FOUND, format!("no such API path {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not supported on {}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(errors_as_json))
        .with_state(handles)
}

/// Answers the router's and extractors' own plain-text errors (bad query, body too large,
/// bad path parameter) in the API's JSON shape.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/json");
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return error(status, format!("the body exceeds {MAX_BODY} bytes"));
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    error(status, String::from_utf8_lossy(&text).trim())
}

/// Sends a command to the main loop and waits for its reply.
async fn call<T>(h: &Handles, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Reject> {
    let (reply, answer) = oneshot::channel();
    if h.commands.send(make(reply)).await.is_err() {
        return Err(Reject::new(StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down"));
    }
    answer.await.map_err(|_| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "the agent dropped the request"))
}

async fn ask<T: Serialize>(State(h): State<Handles>, make: fn(oneshot::Sender<T>) -> Command) -> Answer<T> {
    call(&h, make).await.map(Json)
}

/// A JSON request body. The CLI sends every body as YAML-or-JSON text, so the content
/// type is not checked.
fn parse_json<T: DeserializeOwned>(body: &str) -> Result<T, Reject> {
    serde_json::from_str(body).map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

/// `?name` or `?name=true|1`.
fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

async fn get_policy(State(h): State<Handles>, Path(name): Path<String>) -> Result<Response, Reject> {
    match call(&h, |reply| Command::GetPolicy(name.clone(), reply)).await? {
        Some(policy) => Ok(Json(policy).into_response()),
        None => Err(Reject::new(StatusCode::NOT_FOUND, format!("no policy named {name:?}"))),
    }
}

async fn apply(
    State(h): State<Handles>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Answer<super::ApplyResult> {
    // The CLI, having parsed the files itself, sends the documents as JSON (a list of
    // policies), which reads many times faster than YAML; anything else is YAML.
    let json = headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "application/json");
    let docs = if json {
        policies_from_json(&body).map_err(|message| Reject::new(StatusCode::BAD_REQUEST, message))?
    } else {
        validate::parse("request body", &body)
            .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, e.to_string()))?
    };
    if docs.is_empty() {
        return Err(Reject::new(StatusCode::BAD_REQUEST, "the body holds no policy"));
    }
    let (dry_run, diff, uid) = (flag(&query, "dryRun"), flag(&query, "diff"), caller.uid);
    let result = call(&h, |reply| Command::Apply { docs, dry_run, diff, uid, reply }).await?;
    result.map(Json).map_err(|message| Reject::new(StatusCode::BAD_REQUEST, message))
}

/// A JSON list of policies. Read without tracking where the reader is (a third of the
/// time for 10,000 rules); a body that fails is read again with it, to name the field.
fn policies_from_json(body: &str) -> Result<Vec<Policy>, String> {
    serde_json::from_str(body).map_err(|first| {
        let de = &mut serde_json::Deserializer::from_str(body);
        match serde_path_to_error::deserialize::<_, Vec<Policy>>(de) {
            Err(e) => format!("request body: {}: {}", e.path(), e.inner()),
            Ok(_) => format!("request body: {first}"),
        }
    })
}

async fn delete_policy(
    State(h): State<Handles>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<super::ApplyResult> {
    let (dry_run, uid) = (flag(&query, "dryRun"), caller.uid);
    Ok(Json(call(&h, |reply| Command::Delete { name, dry_run, uid, reply }).await??))
}

async fn check(State(h): State<Handles>, body: String) -> Result<Response, Reject> {
    let check: CheckRequest = serde_json::from_str(&body)
        .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("check request: {e}")))?;
    Ok(Json(call(&h, |reply| Command::Check(check, reply)).await??).into_response())
}

async fn live(
    State(h): State<Handles>,
    Extension(caller): Extension<Caller>,
    request: LiveRequest,
) -> Answer<serde_json::Value> {
    let uid = caller.uid;
    Ok(Json(call(&h, |reply| Command::Live { request, uid, reply }).await??))
}

async fn answer_approval(
    h: State<Handles>,
    caller: Extension<Caller>,
    Path((id, verb)): Path<(String, String)>,
    body: String,
) -> Answer<serde_json::Value> {
    let Ok(id) = id.parse() else {
        return Err(Reject::new(StatusCode::BAD_REQUEST, format!("request id {id:?} is not a number")));
    };
    let answer: ApprovalAnswer = parse_json(&body)?;
    let request = match verb.as_str() {
        "approve" => LiveRequest::Approve(id, answer),
        "deny" => LiveRequest::DenyApproval(id, answer),
        _ => {
            return Err(Reject::new(
                StatusCode::NOT_FOUND,
                format!("no such API path /v1/approvals/{id}/{verb}"),
            ));
        }
    };
    live(h, caller, request).await
}

async fn grant(h: State<Handles>, caller: Extension<Caller>, body: String) -> Answer<serde_json::Value> {
    let body: GrantBody = parse_json(&body)?;
    live(h, caller, LiveRequest::Grant(body)).await
}

async fn revoke_grant(
    h: State<Handles>,
    caller: Extension<Caller>,
    Path(id): Path<String>,
) -> Answer<serde_json::Value> {
    let Ok(id) = id.parse() else {
        return Err(Reject::new(StatusCode::BAD_REQUEST, format!("grant id {id:?} is not a number")));
    };
    live(h, caller, LiveRequest::RevokeGrant(id)).await
}

async fn quarantine(h: State<Handles>, caller: Extension<Caller>, body: String) -> Answer<serde_json::Value> {
    let body: QuarantineBody = parse_json(&body)?;
    live(h, caller, LiveRequest::Quarantine(body)).await
}

async fn release(
    h: State<Handles>,
    caller: Extension<Caller>,
    Path(identity): Path<String>,
) -> Answer<serde_json::Value> {
    live(h, caller, LiveRequest::Release(identity)).await
}

async fn revoke(h: State<Handles>, caller: Extension<Caller>, body: String) -> Answer<serde_json::Value> {
    let body: RevokeBody = parse_json(&body)?;
    live(h, caller, LiveRequest::Revoke(body)).await
}

async fn unrevoke(
    h: State<Handles>,
    caller: Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<serde_json::Value> {
    let Some(path) = query.get("path") else {
        return Err(Reject::new(StatusCode::BAD_REQUEST, "name the credential with ?path="));
    };
    live(h, caller, LiveRequest::Unrevoke(path.clone())).await
}

/// Binds a starting container's cgroup (only root: the answer exempts a process from the
/// mount restrictions until its entrypoint runs). A pod the watch has not delivered yet
/// is read from the API server first, so its labels are known before the container runs.
async fn container(
    State(h): State<Handles>,
    Extension(caller): Extension<Caller>,
    body: String,
) -> Answer<super::ContainerBound> {
    if caller.uid != 0 {
        return Err(Reject::new(
            StatusCode::FORBIDDEN,
            "only root (the container runtime's hook) may announce containers",
        ));
    }
    let start: ContainerStart = parse_json(&body)?;
    let unavailable = |message: String| Reject::new(StatusCode::SERVICE_UNAVAILABLE, message);
    for attempt in 0..2 {
        let request = start.clone();
        match call(&h, |reply| Command::Container { start: request, reply }).await?? {
            ContainerAnswer::Bound(bound) => return Ok(Json(bound)),
            ContainerAnswer::UnknownPod if attempt == 0 => {}
            ContainerAnswer::UnknownPod => break,
        }
        let Some(pods) = &h.pods else { break };
        let (reply, answer) = oneshot::channel();
        let _ = pods.send((start.namespace.clone(), start.pod.clone(), reply)).await;
        let pod = match tokio::time::timeout(POD_READ_TIMEOUT, answer).await {
            Ok(Ok(Ok(pod))) => pod,
            Ok(Ok(Err(message))) => return Err(unavailable(message)),
            Ok(Err(_)) => return Err(unavailable("the Kubernetes client is gone".into())),
            Err(_) => {
                return Err(unavailable(format!(
                    "the API server did not answer for pod {}/{} within {} s",
                    start.namespace,
                    start.pod,
                    POD_READ_TIMEOUT.as_secs()
                )));
            }
        };
        if pod.uid != start.pod_uid {
            return Err(Reject::new(
                StatusCode::CONFLICT,
                format!(
                    "pod {}/{} has uid {}, the container's annotations say {}",
                    start.namespace, start.pod, pod.uid, start.pod_uid
                ),
            ));
        }
        if h.commands.send(Command::Pods(PodsChange::Upsert(pod))).await.is_err() {
            return Err(unavailable("the agent is stopping".into()));
        }
    }
    Err(unavailable(format!("pod {}/{} is not known to the agent", start.namespace, start.pod)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_body_that_fails_names_the_field() {
        let body = r#"[{"apiVersion":"enforcer.dev/v1","kind":"Policy","metadata":{"name":"a"},
            "spec":{"selector":{"cgroupPath":"/a"},"network":[{"cidr":"10.0.0.0/8","action":"sideways"}]}}]"#;
        let message = policies_from_json(body).unwrap_err();
        assert!(
            message.starts_with("request body: [0].spec.network[0].action: unknown variant"),
            "{message}"
        );
        let good = body.replace("sideways", "deny");
        assert_eq!(policies_from_json(&good).expect("a valid body")[0].spec.network.len(), 1);
    }
}
