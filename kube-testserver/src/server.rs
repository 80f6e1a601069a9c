//! The server's lifetime (its own thread and runtime) and what tests do to it directly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::http;
use crate::meta;
use crate::resource::{Registry, Resource};
use crate::rules::{Part, Write, Writer};
use crate::shared::{Shared, lock};
use crate::store::Key;

/// An in-memory Kubernetes API server on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct TestApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestApiServer {
    /// Starts on 127.0.0.1 with a random port, on its own thread and tokio runtime, so it
    /// serves the same from synchronous and asynchronous tests.
    pub fn start(resources: Vec<Resource>) -> Self {
        let shared = Arc::new(Shared {
            registry: Registry::new(resources),
            store: Mutex::default(),
            requests: Mutex::default(),
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port on 127.0.0.1");
        listener.set_nonblocking(true).expect("making the listener non-blocking");
        let addr = listener.local_addr().expect("the listener's address");
        let (shutdown, shutdown_rx) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kube-testserver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the server's tokio runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("handing the listener to tokio");
                    http::serve(serving, listener, shutdown_rx).await;
                });
                // Open watches and connections end here, with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawning the server thread");
        Self { shared, addr, shutdown: Some(shutdown), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig that points at this server without authentication, with its
    /// context current and `default` as the namespace.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let config = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: kube-testserver
  cluster:
    server: {}
contexts:
- name: kube-testserver
  context:
    cluster: kube-testserver
    user: kube-testserver
    namespace: default
current-context: kube-testserver
users:
- name: kube-testserver
  user: {{}}
",
            self.url()
        );
        std::fs::write(path, config)
    }

    /// Creates or replaces the object named by its apiVersion, kind, namespace and name,
    /// as the test's own write: `.status` is kept as given and no resourceVersion
    /// precondition applies. Watchers see ADDED or MODIFIED; an object that would not
    /// change is not written again and makes no event, as with the real server.
    /// Returns the stored object. A namespaced object without a namespace goes to
    /// `default`.
    pub fn put(&self, mut object: Value) -> Value {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        let id = self.resource_id(&api_version, &kind);
        let resource = self.shared.registry.get(id);
        let name = meta::name(&object)
            .map_or_else(|| panic!("put: the object has no metadata.name: {object}"), str::to_owned);
        let namespace = resource.namespaced.then(|| meta::namespace(&object).unwrap_or("default").to_owned());
        let key = Key::new(id, namespace.as_deref(), &name);
        if let Some(ns) = &namespace {
            meta::metadata_mut(&mut object).insert("namespace".into(), ns.clone().into());
        }
        let mut store = lock(&self.shared.store);
        let exists = store.get(&key).is_some();
        let mut write = Write { store: &mut store, id, resource, writer: Writer::Fixture, dry_run: false };
        let result = if exists {
            write.update(&key, object, Part::Object)
        } else {
            write.create(namespace.as_deref(), object)
        };
        result.unwrap_or_else(|e| panic!("put {kind} {}: {e}", key.name))
    }

    /// Deletes the object at once, finalizers or not; watchers see DELETED. Nothing
    /// happens if it does not exist.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        let key = Key::new(self.resource_id(api_version, kind), namespace, name);
        lock(&self.shared.store).remove(&key);
    }

    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = Key::new(self.resource_id(api_version, kind), namespace, name);
        lock(&self.shared.store).get(&key).cloned()
    }

    /// Forgets the event history, as etcd compaction does: a watch or a continued list
    /// from any resourceVersion before now gets 410 Expired. Open watches go on.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Every request so far as `METHOD path?query`, the query as the client encoded it.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// How often watches that allow bookmarks get one (1 s unless set); open watches
    /// take the new interval after their next bookmark.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *lock(&self.shared.bookmark_interval) = interval;
    }

    fn resource_id(&self, api_version: &str, kind: &str) -> usize {
        self.shared
            .registry
            .by_api_version_kind(api_version, kind)
            .unwrap_or_else(|| panic!("{api_version} {kind} is not a resource this server was started with"))
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already be gone if its thread panicked; join reports that.
            let _gone = shutdown.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the kube-testserver thread panicked");
        }
    }
}
