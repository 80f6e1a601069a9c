//! The object store: objects by key, one global resourceVersion counter, the history of
//! events since the last compaction, and the live watchers to tell about new ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::meta;
use crate::resource::ResourceId;

/// Where an object lives: its resource, namespace (empty when cluster-scoped) and name.
/// Ordered like the real server's storage keys, so lists come out by namespace, then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) resource: ResourceId,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl Key {
    pub(crate) fn new(resource: ResourceId, namespace: Option<&str>, name: &str) -> Self {
        Self { resource, namespace: namespace.unwrap_or_default().to_owned(), name: name.to_owned() }
    }

    fn first_of(resource: ResourceId) -> Self {
        Self::new(resource, None, "")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One write, as watchers see it.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) key: Key,
    pub(crate) kind: EventType,
    /// The object as sent to watchers; for a deletion its last state, carrying the
    /// deletion's resourceVersion as the real server does.
    pub(crate) object: Value,
    /// The stored object before this write, used to rebuild older states and to tell a
    /// watcher when an object moved out of its selector.
    pub(crate) previous: Option<Value>,
}

/// The history no longer reaches back to the requested resourceVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compacted {
    pub(crate) current: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: Vec<Arc<Event>>,
    /// The history holds every event with a resourceVersion above this one.
    compacted: u64,
    /// Live watchers by resource. Events are sent while the store is locked, so each
    /// watcher receives them in resourceVersion order and none between its replay and
    /// its subscription is lost.
    subscribers: Vec<(ResourceId, mpsc::UnboundedSender<Arc<Event>>)>,
}

impl Store {
    pub(crate) fn current_rv(&self) -> u64 {
        self.rv
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Stores `object` under `key` with the next resourceVersion, and records ADDED or
    /// MODIFIED.
    pub(crate) fn write(&mut self, key: Key, mut object: Value) -> Value {
        self.rv += 1;
        meta::metadata_mut(&mut object).insert("resourceVersion".into(), self.rv.to_string().into());
        let previous = self.objects.insert(key.clone(), object.clone());
        let kind = if previous.is_some() { EventType::Modified } else { EventType::Added };
        self.record(Event { rv: self.rv, key, kind, object: object.clone(), previous });
        object
    }

    /// Removes the object and records DELETED; returns its last state.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<Value> {
        let previous = self.objects.remove(key)?;
        self.rv += 1;
        let mut object = previous.clone();
        meta::metadata_mut(&mut object).insert("resourceVersion".into(), self.rv.to_string().into());
        let event = Event {
            rv: self.rv,
            key: key.clone(),
            kind: EventType::Deleted,
            object: object.clone(),
            previous: Some(previous),
        };
        self.record(event);
        Some(object)
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        self.subscribers
            .retain(|(resource, tx)| *resource != event.key.resource || tx.send(Arc::clone(&event)).is_ok());
        self.history.push(event);
    }

    /// The objects of a resource as they were at `rv`, in key order: the current ones,
    /// with every later write in the history undone.
    pub(crate) fn list_at(&self, resource: ResourceId, rv: u64) -> Result<Vec<(Key, Value)>, Compacted> {
        if rv < self.compacted {
            return Err(Compacted { current: self.rv });
        }
        let mut objects: BTreeMap<Key, Value> = self
            .objects
            .range(Key::first_of(resource)..Key::first_of(resource + 1))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for event in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if event.key.resource != resource {
                continue;
            }
            match &event.previous {
                Some(previous) => objects.insert(event.key.clone(), previous.clone()),
                None => objects.remove(&event.key),
            };
        }
        Ok(objects.into_iter().collect())
    }

    /// Every recorded event of `resource` after `rv`, or `Compacted` if the history no
    /// longer reaches back that far.
    pub(crate) fn events_since(&self, resource: ResourceId, rv: u64) -> Result<Vec<Arc<Event>>, Compacted> {
        if rv < self.compacted {
            return Err(Compacted { current: self.rv });
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history[start..].iter().filter(|e| e.key.resource == resource).cloned().collect())
    }

    /// A channel that receives every later event of `resource`.
    pub(crate) fn subscribe(&mut self, resource: ResourceId) -> mpsc::UnboundedReceiver<Arc<Event>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push((resource, tx));
        rx
    }

    /// Forgets the history: lists and watches from any earlier resourceVersion fail
    /// with 410 Expired. Live watchers keep their streams, as with etcd compaction.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, v: i32) -> Value {
        json!({ "metadata": { "name": name }, "spec": { "v": v } })
    }

    #[test]
    fn rebuilds_earlier_states_from_history() {
        let mut store = Store::default();
        let (a, b) = (Key::new(0, Some("ns"), "a"), Key::new(0, Some("ns"), "b"));
        store.write(a.clone(), obj("a", 1));
        store.write(Key::new(1, None, "other"), obj("other", 1));
        store.write(b.clone(), obj("b", 1));
        store.write(a.clone(), obj("a", 2));
        store.remove(&b);
        let names = |rv| -> Vec<(String, i64)> {
            store
                .list_at(0, rv)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k.name, v["spec"]["v"].as_i64().unwrap()))
                .collect()
        };
        assert_eq!(names(5), [("a".to_owned(), 2)]);
        assert_eq!(names(3), [("a".to_owned(), 1), ("b".to_owned(), 1)]);
        assert_eq!(names(1), [("a".to_owned(), 1)]);
        assert_eq!(names(0), []);
        let since: Vec<_> = store.events_since(0, 2).unwrap().iter().map(|e| (e.rv, e.kind)).collect();
        assert_eq!(since, [(3, EventType::Added), (4, EventType::Modified), (5, EventType::Deleted)]);
        store.compact();
        assert_eq!(store.events_since(0, 4).unwrap_err(), Compacted { current: 5 });
        assert!(store.events_since(0, 5).unwrap().is_empty());
        assert!(store.list_at(0, 3).is_err());
    }
}
