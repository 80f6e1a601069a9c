//! GET on a collection: selectors, resourceVersion semantics and paging.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::query::Query;
use crate::resource::{Resource, ResourceId};
use crate::status::ApiError;
use crate::store::{Key, Store};

/// Lists `resource` (in `namespace`, or across all of them) as a `<Kind>List`.
///
/// A page and its continuations are one consistent snapshot: the continue token carries
/// the resourceVersion of the first page, and later pages are read at that version
/// from the history, failing with 410 once it is compacted away, as the real server does.
pub(crate) fn list(
    store: &Store,
    id: ResourceId,
    resource: &Resource,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Value, ApiError> {
    let selectors = query.selectors()?;
    let limit = query.limit()?;
    let current = store.current_rv();
    let (at, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, after) = decode_continue(token)?;
            (rv, Some(after))
        }
        None => (read_version(query, current)?, None),
    };
    let objects = store.list_at(id, at).map_err(|compacted| {
        ApiError::expired(if after.is_some() {
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter."
                .into()
        } else {
            format!("too old resource version: {at} ({})", compacted.current)
        })
    })?;
    let mut matching = objects
        .into_iter()
        .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
        .filter(|(key, _)| after.as_ref().is_none_or(|a| (&key.namespace, &key.name) > (&a.0, &a.1)))
        .filter(|(_, object)| selectors.matches(object));
    let mut items = Vec::new();
    let mut last: Option<Key> = None;
    for (key, object) in matching.by_ref().take(limit.unwrap_or(usize::MAX)) {
        items.push(object);
        last = Some(key);
    }
    let remaining = matching.count();
    let mut metadata = json!({ "resourceVersion": at.to_string() });
    if remaining > 0
        && let Some(last) = last
    {
        metadata["continue"] = encode_continue(at, &last).into();
        // The real server leaves the count out when selectors make it expensive to know.
        if selectors.is_empty() {
            metadata["remainingItemCount"] = remaining.into();
        }
    }
    Ok(json!({
        "apiVersion": resource.api_version(),
        "kind": format!("{}List", resource.kind),
        "metadata": metadata,
        "items": items,
    }))
}

/// The resourceVersion a list without a continue token is read at. Unset, `0` and
/// `NotOlderThan` read the current state; `Exact` reads the given version.
fn read_version(query: &Query, current: u64) -> Result<u64, ApiError> {
    let requested = query.resource_version()?;
    match (query.get("resourceVersionMatch").filter(|m| !m.is_empty()), requested) {
        (Some("Exact" | "NotOlderThan"), None) => {
            Err(ApiError::invalid("resourceVersionMatch is forbidden unless resourceVersion is provided"))
        }
        (Some("Exact"), Some(rv)) => {
            if rv > current {
                return Err(ApiError::too_large_resource_version(rv, current));
            }
            Ok(rv)
        }
        (Some("NotOlderThan") | None, Some(rv)) if rv > current => {
            Err(ApiError::too_large_resource_version(rv, current))
        }
        (Some("NotOlderThan") | None, _) => Ok(current),
        (Some(other), _) => {
            Err(ApiError::invalid(format!("resourceVersionMatch: Unsupported value: {other:?}")))
        }
    }
}

/// The continue token: the snapshot's resourceVersion and the last key returned,
/// hex-encoded so it stays opaque and URL-safe.
fn encode_continue(rv: u64, last: &Key) -> String {
    let text = json!({ "rv": rv, "namespace": last.namespace, "name": last.name }).to_string();
    text.bytes().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").expect("writing to a String");
        out
    })
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let invalid = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let field = |f: &str| value.get(f).and_then(Value::as_str).map(str::to_owned);
    match (value.get("rv").and_then(Value::as_u64), field("namespace"), field("name")) {
        (Some(rv), Some(namespace), Some(name)) => Ok((rv, (namespace, name))),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key = Key::new(0, Some("ns"), "web-1");
        let token = encode_continue(42, &key);
        assert_eq!(decode_continue(&token).unwrap(), (42, ("ns".into(), "web-1".into())));
        assert_eq!(decode_continue("zz").unwrap_err().code, 400);
        assert_eq!(decode_continue("7b7d").unwrap_err().code, 400);
    }
}
