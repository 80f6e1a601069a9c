//! What the server does to an object on create, update and delete: the metadata it
//! owns, status isolation, generation, optimistic concurrency and finalizers.

use serde_json::Value;

use crate::meta;
use crate::resource::{Resource, ResourceId};
use crate::status::ApiError;
use crate::store::{Key, Store};

/// Who writes: a client over HTTP, or the test itself through `TestApiServer::put`,
/// which may set `.status` directly and is not held to resourceVersion preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    Client,
    Fixture,
}

/// Which part of the object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Object,
    Status,
}

/// One write request against one resource.
pub(crate) struct Write<'a> {
    pub(crate) store: &'a mut Store,
    pub(crate) id: ResourceId,
    pub(crate) resource: &'a Resource,
    pub(crate) writer: Writer,
    /// `dryRun=All`: check and return the result without storing it.
    pub(crate) dry_run: bool,
}

impl Write<'_> {
    /// Creates `object` in `namespace` (for namespaced resources).
    pub(crate) fn create(&mut self, namespace: Option<&str>, mut object: Value) -> Result<Value, ApiError> {
        let r = self.resource;
        if !object.is_object() {
            return Err(ApiError::bad_request("the object is not a JSON object"));
        }
        let name = match (meta::name(&object), meta::meta_str(&object, "generateName")) {
            (Some(name), _) => name.to_owned(),
            (None, Some(prefix)) => format!("{prefix}{}", meta::name_suffix()),
            (None, None) => {
                return Err(ApiError::invalid(format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    r.kind
                )));
            }
        };
        let namespace = if r.namespaced {
            let body = meta::namespace(&object);
            match (namespace, body) {
                (Some(path), Some(body)) if path != body => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(ns), _) | (None, Some(ns)) => Some(ns.to_owned()),
                (None, None) => return Err(ApiError::bad_request("a namespace is required")),
            }
        } else {
            None
        };
        let key = Key::new(self.id, namespace.as_deref(), &name);
        if self.store.get(&key).is_some() {
            return Err(ApiError::already_exists(&r.plural, &name));
        }
        set_type(&mut object, r);
        if r.status_subresource && self.writer == Writer::Client {
            // A status subresource makes `.status` writable only through `/status`.
            object.as_object_mut().expect("checked above").remove("status");
        }
        let m = meta::metadata_mut(&mut object);
        m.insert("name".into(), name.into());
        match namespace {
            Some(ns) => m.insert("namespace".into(), ns.into()),
            None => m.remove("namespace"),
        };
        m.insert("uid".into(), meta::new_uid().into());
        m.insert("creationTimestamp".into(), meta::now().into());
        m.insert("generation".into(), 1.into());
        for owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            m.remove(owned);
        }
        if self.dry_run {
            return Ok(object);
        }
        Ok(self.store.write(key, object))
    }

    /// Replaces `part` of the stored object at `key` by that part of `new`.
    pub(crate) fn update(&mut self, key: &Key, new: Value, part: Part) -> Result<Value, ApiError> {
        let r = self.resource;
        if !new.is_object() {
            return Err(ApiError::bad_request("the object is not a JSON object"));
        }
        if let Some(name) = meta::name(&new).filter(|n| *n != key.name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )));
        }
        if r.namespaced && meta::namespace(&new).is_some_and(|ns| ns != key.namespace) {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old = self.store.get(key).ok_or_else(|| ApiError::not_found(&r.plural, &key.name))?.clone();
        if self.writer == Writer::Client
            && meta::resource_version(&new).is_some_and(|rv| Some(rv) != meta::resource_version(&old))
        {
            return Err(ApiError::conflict(&r.plural, &key.name));
        }
        let mut result = match part {
            Part::Status => {
                let mut result = old.clone();
                meta::copy_top(&new, &mut result, "status");
                result
            }
            Part::Object => {
                let mut result = new;
                if r.status_subresource && self.writer == Writer::Client {
                    meta::copy_top(&old, &mut result, "status");
                }
                result
            }
        };
        set_type(&mut result, r);
        for owned in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ] {
            meta::copy_meta(&old, &mut result, owned);
        }
        if meta::desired_state_differs(&old, &result) {
            meta::metadata_mut(&mut result).insert("generation".into(), (meta::generation(&old) + 1).into());
        }
        if result == old {
            // The real server skips writes that change nothing: no new resourceVersion, no event.
            return Ok(old);
        }
        if self.dry_run {
            return Ok(result);
        }
        if meta::meta_str(&result, "deletionTimestamp").is_some() && meta::finalizers_empty(&result) {
            // The last finalizer is gone from an object being deleted: now it goes.
            self.store.write(key.clone(), result);
            return Ok(self.store.remove(key).expect("just written"));
        }
        Ok(self.store.write(key.clone(), result))
    }

    /// Deletes the object at `key`, or marks it for deletion while finalizers remain.
    /// `preconditions` is `DeleteOptions.preconditions` from the request body.
    pub(crate) fn delete(&mut self, key: &Key, preconditions: Option<&Value>) -> Result<Value, ApiError> {
        let r = self.resource;
        let old = self.store.get(key).ok_or_else(|| ApiError::not_found(&r.plural, &key.name))?.clone();
        for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let wanted = preconditions.and_then(|p| p.get(field)).and_then(Value::as_str);
            if let Some(wanted) = wanted
                && Some(wanted) != meta::meta_str(&old, field)
            {
                let message = format!(
                    "{what} in precondition: {wanted}, {what} in object meta: {}",
                    meta::meta_str(&old, field).unwrap_or_default()
                );
                return Err(ApiError::precondition_failed(&r.plural, &key.name, &message));
            }
        }
        if self.writer == Writer::Client && !meta::finalizers_empty(&old) {
            if meta::meta_str(&old, "deletionTimestamp").is_some() || self.dry_run {
                return Ok(old);
            }
            let mut marked = old;
            let m = meta::metadata_mut(&mut marked);
            m.insert("deletionTimestamp".into(), meta::now().into());
            m.insert("deletionGracePeriodSeconds".into(), 0.into());
            return Ok(self.store.write(key.clone(), marked));
        }
        if self.dry_run {
            return Ok(old);
        }
        Ok(self.store.remove(key).expect("found above"))
    }
}

fn set_type(object: &mut Value, resource: &Resource) {
    object["apiVersion"] = resource.api_version().into();
    object["kind"] = resource.kind.clone().into();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Resource, policies};
    use serde_json::json;

    fn write<'a>(store: &'a mut Store, resource: &'a Resource) -> Write<'a> {
        Write { store, id: 0, resource, writer: Writer::Client, dry_run: false }
    }

    #[test]
    fn generation_moves_with_spec_only_and_noop_writes_are_skipped() {
        let (mut store, r) = (Store::default(), policies());
        let created = write(&mut store, &r)
            .create(None, json!({ "metadata": { "name": "p" }, "spec": { "a": 1 } }))
            .unwrap();
        assert_eq!(
            (created["metadata"]["generation"].as_i64(), meta::resource_version(&created)),
            (Some(1), Some("1"))
        );
        let key = Key::new(0, None, "p");
        let mut labelled = created.clone();
        labelled["metadata"]["labels"] = json!({ "x": "y" });
        let labelled = write(&mut store, &r).update(&key, labelled, Part::Object).unwrap();
        assert_eq!((meta::generation(&labelled), meta::resource_version(&labelled)), (1, Some("2")));
        let mut respec = labelled.clone();
        respec["spec"]["a"] = json!(2);
        let respec = write(&mut store, &r).update(&key, respec, Part::Object).unwrap();
        assert_eq!((meta::generation(&respec), meta::resource_version(&respec)), (2, Some("3")));
        let same = write(&mut store, &r).update(&key, respec.clone(), Part::Object).unwrap();
        assert_eq!(same, respec);
        assert_eq!(store.current_rv(), 3, "an unchanged object is not written again");
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let (mut store, r) = (Store::default(), policies());
        let body = json!({ "metadata": { "name": "p", "finalizers": ["enforcer.dev/cleanup"] } });
        write(&mut store, &r).create(None, body).unwrap();
        let key = Key::new(0, None, "p");
        let marked = write(&mut store, &r).delete(&key, None).unwrap();
        assert!(meta::meta_str(&marked, "deletionTimestamp").is_some());
        assert!(store.get(&key).is_some());
        let mut released = marked.clone();
        released["metadata"]["finalizers"] = json!([]);
        write(&mut store, &r).update(&key, released, Part::Object).unwrap();
        assert!(store.get(&key).is_none(), "removing the last finalizer completes the deletion");
    }
}
