//! The HTTP side: accepting connections, routing requests to the verbs, and writing
//! JSON responses.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::discovery;
use crate::list;
use crate::meta;
use crate::patch::PatchKind;
use crate::query::Query;
use crate::resource::Target;
use crate::rules::{Part, Write, Writer};
use crate::shared::{Shared, lock};
use crate::status::ApiError;
use crate::store::Key;
use crate::watch;

type ResponseBody = BoxBody<Bytes, Infallible>;

/// Serves connections until `shutdown` fires (or its sender is dropped).
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, mut shutdown: oneshot::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => return,
        };
        // A failed accept (e.g. the client reset first) concerns that client only.
        let Ok((stream, _)) = accepted else { continue };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            // A connection closed mid-request ends only that connection.
            let _closed = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<ResponseBody> {
    let line = format!(
        "{} {}",
        request.method(),
        request.uri().path_and_query().map_or_else(|| request.uri().path(), |pq| pq.as_str())
    );
    lock(&shared.requests).push(line);
    match respond(shared, request).await {
        Ok(response) => response,
        Err(error) => json_response(error.code, &error.to_status()),
    }
}

async fn respond(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query());
    let method = request.method().clone();
    if method == Method::GET
        && let Some(document) = discovery::document(shared.registry.all(), &path)
    {
        return Ok(json_response(200, &document));
    }
    let target = shared.registry.route(&path).ok_or_else(ApiError::path_not_found)?;
    let resource = shared.registry.get(target.resource);
    if target.status && !resource.status_subresource {
        return Err(ApiError::path_not_found());
    }
    let content_type =
        request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();

    match (method, &target.name) {
        (Method::GET, _) if query.flag("watch") => {
            let body = watch::start(
                shared,
                target.resource,
                target.namespace.as_deref(),
                target.name.as_deref(),
                &query,
            )?;
            let mut response = Response::new(BodyExt::boxed(body));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        (Method::GET, None) => {
            let store = lock(&shared.store);
            let list = list::list(&store, target.resource, resource, target.namespace.as_deref(), &query)?;
            Ok(json_response(200, &list))
        }
        (Method::GET, Some(name)) => {
            let store = lock(&shared.store);
            let object =
                store.get(&key(&target, name)).ok_or_else(|| ApiError::not_found(&resource.plural, name))?;
            Ok(json_response(200, object))
        }
        (Method::POST, None) if !target.status => {
            if resource.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let object = parse_json(&body)?;
            let mut store = lock(&shared.store);
            let created =
                writer(shared, &mut store, &target, &query).create(target.namespace.as_deref(), object)?;
            Ok(json_response(201, &created))
        }
        (Method::PUT, Some(name)) => {
            let object = parse_json(&body)?;
            let mut store = lock(&shared.store);
            let updated = writer(shared, &mut store, &target, &query).update(
                &key(&target, name),
                object,
                part(&target),
            )?;
            Ok(json_response(200, &updated))
        }
        (Method::PATCH, Some(name)) => patch(shared, &target, name, &query, &content_type, &body),
        (Method::DELETE, Some(name)) => {
            let options = if body.is_empty() { Value::Null } else { parse_json(&body)? };
            let dry_run =
                options.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All"));
            let key = key(&target, name);
            let mut store = lock(&shared.store);
            let mut write = writer(shared, &mut store, &target, &query);
            write.dry_run |= dry_run;
            let object = write.delete(&key, options.get("preconditions"))?;
            // 202 while finalizers hold the object back, 200 once it is gone.
            let code = if store.get(&key).is_some() && !dry_run { 202 } else { 200 };
            Ok(json_response(code, &object))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn patch(
    shared: &Arc<Shared>,
    target: &Target,
    name: &str,
    query: &Query,
    content_type: &str,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let resource = shared.registry.get(target.resource);
    let kind = PatchKind::from_content_type(content_type)?;
    let patch = kind.parse_body(body)?;
    if kind == PatchKind::Apply {
        if query.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let api_version = patch.get("apiVersion").and_then(Value::as_str);
        let kind_field = patch.get("kind").and_then(Value::as_str);
        if api_version != Some(&resource.api_version()) || kind_field != Some(&resource.kind) {
            return Err(ApiError::bad_request(format!(
                "the applied object must have apiVersion {:?} and kind {:?}",
                resource.api_version(),
                resource.kind
            )));
        }
        if meta::name(&patch) != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the applied object does not match the name on the URL ({name})"
            )));
        }
    }
    let key = key(target, name);
    let mut store = lock(&shared.store);
    let Some(old) = store.get(&key).cloned() else {
        if kind == PatchKind::Apply && !target.status {
            // Apply creates what does not exist yet.
            let created =
                writer(shared, &mut store, target, query).create(target.namespace.as_deref(), patch)?;
            return Ok(json_response(201, &created));
        }
        return Err(ApiError::not_found(&resource.plural, name));
    };
    let patched = kind.apply_to(&old, &patch)?;
    let updated = writer(shared, &mut store, target, query).update(&key, patched, part(target))?;
    Ok(json_response(200, &updated))
}

fn writer<'a>(
    shared: &'a Shared,
    store: &'a mut crate::store::Store,
    target: &Target,
    query: &Query,
) -> Write<'a> {
    Write {
        store,
        id: target.resource,
        resource: shared.registry.get(target.resource),
        writer: Writer::Client,
        dry_run: query.dry_run(),
    }
}

fn key(target: &Target, name: &str) -> Key {
    Key::new(target.resource, target.namespace.as_deref(), name)
}

fn part(target: &Target) -> Part {
    if target.status { Part::Status } else { Part::Object }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body: {e}")))
}

fn json_response(code: u16, value: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = StatusCode::from_u16(code).expect("a valid HTTP status code");
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
