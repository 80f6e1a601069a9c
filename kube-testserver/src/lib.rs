//! An in-memory Kubernetes API server for tests, speaking the HTTP/JSON protocol that
//! kube-rs clients use: list with selectors and paging, watch with replay from a
//! resourceVersion, bookmarks, streaming lists and 410 Expired after compaction, get,
//! create, replace, delete, merge/JSON/apply patches and status subresources.
//!
//! Objects live in one store with a global resourceVersion counter and a history of
//! events, from which watches replay and older list snapshots are rebuilt.
//!
//! ```no_run
//! use kube_testserver::{TestApiServer, pods};
//!
//! let server = TestApiServer::start(vec![pods()]);
//! server.put(serde_json::json!({
//!     "apiVersion": "v1", "kind": "Pod",
//!     "metadata": { "name": "web", "namespace": "default" },
//!     "spec": { "nodeName": "node-a" },
//! }));
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig")).unwrap();
//! ```
//!
//! Simplified compared with the real server:
//! - strategic merge patch is applied as a plain merge patch (lists are replaced, not
//!   merged by key);
//! - server-side apply merges the applied document into the object as a merge patch,
//!   without tracking field ownership: `force` has nothing to override, there are no
//!   apply conflicts, and fields a manager stops applying stay;
//! - field selectors accept any dotted path into the object, not only the fields the
//!   real server indexes;
//! - DELETE always returns the object (200, or 202 while finalizers hold it) and
//!   ignores grace periods and propagation policies; `deletecollection` is not served;
//! - there is no authentication, admission, defaulting (a created pod gets no
//!   `status.phase`), schema validation, namespace lifecycle or garbage collection.

mod discovery;
mod http;
mod list;
mod meta;
mod patch;
mod query;
mod resource;
mod rules;
mod selectors;
mod server;
mod shared;
mod status;
mod store;
mod watch;

pub use resource::{Resource, pods, policies};
pub use server::TestApiServer;
