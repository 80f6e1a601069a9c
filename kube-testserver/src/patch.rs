//! Patch bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and apply documents.

use serde_json::{Map, Value};

use crate::status::ApiError;

/// How a PATCH body is to be read, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    /// Strategic merge patch is applied as a plain merge patch: lists are replaced
    /// whole rather than merged by key, and `$patch` directives are not understood.
    Strategic,
    Json,
    /// Server-side apply, simplified: the applied document is merged into the object as
    /// a merge patch. Field ownership is not tracked, so fields a manager stops applying
    /// are not removed and `force` has nothing to override.
    Apply,
}

impl PatchKind {
    pub(crate) fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }

    /// Parses the body: YAML (a superset of the JSON that clients usually send) for
    /// apply, JSON for the others.
    pub(crate) fn parse_body(self, body: &[u8]) -> Result<Value, ApiError> {
        let parsed = match self {
            Self::Apply => serde_saphyr::from_slice_with_options::<Value>(
                body,
                serde_saphyr::options! { with_snippet: false },
            )
            .map_err(|e| e.to_string()),
            _ => serde_json::from_slice::<Value>(body).map_err(|e| e.to_string()),
        };
        let value = parsed.map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let well_formed = if self == Self::Json { value.is_array() } else { value.is_object() };
        if !well_formed {
            return Err(ApiError::bad_request("the patch body has the wrong shape for its content type"));
        }
        Ok(value)
    }

    /// Applies a parsed patch to a copy of `target`.
    pub(crate) fn apply_to(self, target: &Value, patch: &Value) -> Result<Value, ApiError> {
        let mut result = target.clone();
        match self {
            Self::Merge | Self::Strategic | Self::Apply => merge_patch(&mut result, patch),
            Self::Json => json_patch(&mut result, patch)?,
        }
        Ok(result)
    }
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else { unreachable!("made an object above") };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902: `add`, `remove`, `replace`, `move`, `copy` and `test`, in order; the
/// first failing operation fails the whole patch.
fn json_patch(target: &mut Value, operations: &Value) -> Result<(), ApiError> {
    let fail = |what: String| ApiError::invalid(format!("the json patch could not be applied: {what}"));
    for op in operations.as_array().into_iter().flatten() {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| fail(format!("operation lacks \"{name}\": {op}")))
        };
        let path = field("path")?;
        let value =
            || op.get("value").cloned().ok_or_else(|| fail(format!("operation lacks \"value\": {op}")));
        match field("op")? {
            "add" => add(target, path, value()?).map_err(fail)?,
            "remove" => drop(remove(target, path).map_err(fail)?),
            "replace" => {
                let slot = target.pointer_mut(path).ok_or_else(|| fail(format!("no value at {path}")))?;
                *slot = value()?;
            }
            "move" => {
                let moved = remove(target, field("from")?).map_err(fail)?;
                add(target, path, moved).map_err(fail)?;
            }
            "copy" => {
                let from = field("from")?;
                let copied =
                    target.pointer(from).cloned().ok_or_else(|| fail(format!("no value at {from}")))?;
                add(target, path, copied).map_err(fail)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(fail(format!("test failed at {path}")));
                }
            }
            other => return Err(fail(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
}

/// Splits a JSON pointer into its parent's pointer and its unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| format!("invalid path {path:?}"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, key) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if key == "-" {
                items.len()
            } else {
                key.parse().map_err(|_| format!("bad index in {path}"))?
            };
            if index > items.len() {
                return Err(format!("index out of range in {path}"));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("no parent for {path}")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, key) = split_pointer(path)?;
    let removed = match target.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&key),
        Some(Value::Array(items)) => {
            key.parse::<usize>().ok().filter(|i| *i < items.len()).map(|index| items.remove(index))
        }
        _ => None,
    };
    removed.ok_or_else(|| format!("no value at {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({ "a": "b", "c": { "d": "e", "f": "g" }, "l": [1, 2] });
        merge_patch(&mut doc, &json!({ "a": "z", "c": { "f": null }, "l": [3], "n": { "x": 1 } }));
        assert_eq!(doc, json!({ "a": "z", "c": { "d": "e" }, "l": [3], "n": { "x": 1 } }));
    }

    #[test]
    fn json_patch_operations() {
        let doc = json!({ "metadata": { "finalizers": ["a", "b"], "labels": { "x/y": "1" } } });
        let patch = json!([
            { "op": "test", "path": "/metadata/finalizers/0", "value": "a" },
            { "op": "remove", "path": "/metadata/finalizers/0" },
            { "op": "add", "path": "/metadata/finalizers/-", "value": "c" },
            { "op": "replace", "path": "/metadata/labels/x~1y", "value": "2" },
            { "op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations" },
            { "op": "move", "from": "/metadata/annotations/x~1y", "path": "/metadata/annotations/z" },
        ]);
        let out = PatchKind::Json.apply_to(&doc, &patch).unwrap();
        assert_eq!(
            out,
            json!({ "metadata": {
                "finalizers": ["b", "c"], "labels": { "x/y": "2" }, "annotations": { "z": "2" } } })
        );
        let failing = json!([{ "op": "test", "path": "/metadata/finalizers/0", "value": "zzz" }]);
        assert_eq!(PatchKind::Json.apply_to(&doc, &failing).unwrap_err().code, 422);
    }

    #[test]
    fn apply_bodies_may_be_yaml() {
        let body = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n";
        let parsed = PatchKind::Apply.parse_body(body).unwrap();
        assert_eq!(parsed["metadata"]["name"], "p");
        assert_eq!(PatchKind::Merge.parse_body(b"[1]").unwrap_err().code, 400);
        assert_eq!(PatchKind::from_content_type("text/plain").unwrap_err().code, 415);
    }
}
