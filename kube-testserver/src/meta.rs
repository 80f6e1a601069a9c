//! Reading and setting the `metadata` fields the server owns.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// 64 bits that differ on every call and between processes: the standard library's
/// randomly keyed hasher over a counter.
fn random_u64() -> u64 {
    RandomState::new().hash_one(UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// A version-4 shaped UUID, as the API server gives each new object.
pub(crate) fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// Five characters from the alphabet the API server uses for `generateName` suffixes.
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[usize::try_from(bits % 27).expect("below 27")];
            bits /= 27;
            char::from(c)
        })
        .collect()
}

/// Now, as an RFC 3339 timestamp at second precision, as `metav1.Time` is written.
pub(crate) fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The object's `metadata` map, created if missing.
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"].as_object_mut().expect("made an object above")
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str().filter(|s| !s.is_empty())
}

pub(crate) fn name(object: &Value) -> Option<&str> {
    meta_str(object, "name")
}

pub(crate) fn namespace(object: &Value) -> Option<&str> {
    meta_str(object, "namespace")
}

pub(crate) fn resource_version(object: &Value) -> Option<&str> {
    meta_str(object, "resourceVersion")
}

pub(crate) fn generation(object: &Value) -> i64 {
    object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn finalizers_empty(object: &Value) -> bool {
    object.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty)
}

/// Copies `field` of `metadata` from `from` into `to`, removing it from `to` if `from`
/// lacks it.
pub(crate) fn copy_meta(from: &Value, to: &mut Value, field: &str) {
    let value = from.get("metadata").and_then(|m| m.get(field)).cloned();
    let meta = metadata_mut(to);
    match value {
        Some(v) => meta.insert(field.to_owned(), v),
        None => meta.remove(field),
    };
}

/// Copies the top-level `field` from `from` into `to`, removing it if `from` lacks it.
pub(crate) fn copy_top(from: &Value, to: &mut Value, field: &str) {
    let Some(to) = to.as_object_mut() else { return };
    match from.get(field) {
        Some(v) => to.insert(field.to_owned(), v.clone()),
        None => to.remove(field),
    };
}

/// Everything but `metadata` and `status`: the part whose changes bump `generation`.
pub(crate) fn desired_state_differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut map = v.as_object().cloned().unwrap_or_default();
        for field in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(field);
        }
        map
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_unique_and_uuid_shaped() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert_eq!(&a[14..15], "4", "{a}");
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
