//! GET with `watch=true`: a chunked stream of JSON lines, one watch event each.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::query::Query;
use crate::resource::ResourceId;
use crate::selectors::Selectors;
use crate::shared::{Shared, lock};
use crate::status::ApiError;
use crate::store::{Event, EventType};

/// A response body fed line by line by the task that follows the watch.
pub(crate) struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// Which events a watch passes on.
struct Filter {
    namespace: Option<String>,
    selectors: Selectors,
}

impl Filter {
    fn admits(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_ref().is_none_or(|ns| ns == namespace) && self.selectors.matches(object)
    }

    /// The event as this watcher sees it. As in the real server, an object modified
    /// into the selector arrives as ADDED and one modified out of it as DELETED.
    fn view(&self, event: &Event) -> Option<EventType> {
        let namespace = &event.key.namespace;
        let now = self.admits(namespace, &event.object);
        match event.kind {
            EventType::Added | EventType::Deleted => now.then_some(event.kind),
            EventType::Modified => {
                let before = event.previous.as_ref().is_some_and(|p| self.admits(namespace, p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    line(&json!({ "type": kind, "object": object }))
}

/// Starts a watch on `id` (in `namespace`, or all of them; on one object when `name`
/// is given) and returns its body.
///
/// Where it starts: with `sendInitialEvents=true`, or without a resourceVersion or with
/// `0`, it first sends the current objects as ADDED; from resourceVersion R it replays
/// every recorded event after R, or sends a 410 Expired ERROR event and ends if the
/// history no longer reaches back to R. Then it follows new events until
/// `timeoutSeconds` pass or the client goes away.
pub(crate) fn start(
    shared: &Arc<Shared>,
    id: ResourceId,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &Query,
) -> Result<ChannelBody, ApiError> {
    let mut selectors = query.selectors()?;
    if let Some(name) = name {
        selectors.fields = selectors.fields.with_name(name);
    }
    let filter = Filter { namespace: namespace.map(str::to_owned), selectors };
    let requested = query.resource_version()?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.get("sendInitialEvents") == Some("true");
    let version_match = query.get("resourceVersionMatch").filter(|m| !m.is_empty());
    if send_initial {
        if version_match != Some("NotOlderThan") {
            return Err(ApiError::invalid(
                "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for resourceVersionMatch different than NotOlderThan",
            ));
        }
        if !bookmarks {
            return Err(ApiError::invalid(
                "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set",
            ));
        }
    } else if version_match.is_some() {
        return Err(ApiError::invalid(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let timeout = query.timeout()?;
    let resource = shared.registry.get(id);
    let bookmark = |rv: u64| {
        json!({
            "kind": resource.kind,
            "apiVersion": resource.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
        })
    };

    let mut initial = Vec::new();
    let mut store = lock(&shared.store);
    let current = store.current_rv();
    match requested {
        Some(rv) if rv != 0 && !send_initial => match store.events_since(id, rv) {
            Ok(events) => {
                initial.extend(
                    events.iter().filter_map(|e| Some(event_line(filter.view(e)?.as_str(), &e.object))),
                );
            }
            Err(compacted) => {
                let message = format!("too old resource version: {rv} ({})", compacted.current);
                let error = ApiError::expired(message).to_status();
                return Ok(finished(&[event_line("ERROR", &error)]));
            }
        },
        _ => {
            let objects = store.list_at(id, current).expect("the current state is always readable");
            initial.extend(
                objects
                    .iter()
                    .filter(|(key, object)| filter.admits(&key.namespace, object))
                    .map(|(_, object)| event_line(EventType::Added.as_str(), object)),
            );
            if send_initial {
                let mut end = bookmark(current);
                end["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
                initial.push(event_line("BOOKMARK", &end));
            }
        }
    }
    let events = store.subscribe(id);
    drop(store);

    let (tx, rx) = mpsc::channel(64);
    let watch = Watch {
        shared: Arc::clone(shared),
        filter,
        events,
        out: tx,
        bookmark: bookmarks.then(|| bookmark(0)),
        deadline: timeout.map(|t| Instant::now() + t),
    };
    tokio::spawn(watch.run(initial));
    Ok(ChannelBody(rx))
}

/// A body holding `lines` and then ending.
fn finished(lines: &[Bytes]) -> ChannelBody {
    let (tx, rx) = mpsc::channel(lines.len().max(1));
    for l in lines {
        tx.try_send(l.clone()).expect("the channel has room for every line");
    }
    ChannelBody(rx)
}

/// The task behind one watch response.
struct Watch {
    shared: Arc<Shared>,
    filter: Filter,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
    out: mpsc::Sender<Bytes>,
    /// The BOOKMARK object to send, its resourceVersion filled in each time;
    /// `None` unless the client asked for bookmarks.
    bookmark: Option<Value>,
    deadline: Option<Instant>,
}

impl Watch {
    async fn run(mut self, initial: Vec<Bytes>) {
        for l in initial {
            if self.out.send(l).await.is_err() {
                return;
            }
        }
        // Far enough away to stand for "never" in a test.
        let never = Instant::now() + Duration::from_hours(24 * 365);
        let deadline = self.deadline.unwrap_or(never);
        let mut next_bookmark = Instant::now() + self.bookmark_interval();
        loop {
            tokio::select! {
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    if !self.send_event(&event).await {
                        return;
                    }
                }
                () = sleep_until(next_bookmark), if self.bookmark.is_some() => {
                    if !self.send_bookmark().await {
                        return;
                    }
                    next_bookmark = Instant::now() + self.bookmark_interval();
                }
                () = sleep_until(deadline) => return,
                () = self.out.closed() => return,
            }
        }
    }

    fn bookmark_interval(&self) -> Duration {
        *lock(&self.shared.bookmark_interval)
    }

    async fn send_event(&self, event: &Event) -> bool {
        match self.filter.view(event) {
            Some(kind) => self.out.send(event_line(kind.as_str(), &event.object)).await.is_ok(),
            None => true,
        }
    }

    /// Sends every event up to the current resourceVersion, then a BOOKMARK carrying it:
    /// the client may resume from there without missing anything.
    async fn send_bookmark(&mut self) -> bool {
        let (current, pending) = {
            // Events are queued while the store is locked, so with the lock held the
            // queue holds every event up to `current`.
            let store = lock(&self.shared.store);
            let mut pending = Vec::new();
            while let Ok(event) = self.events.try_recv() {
                pending.push(event);
            }
            (store.current_rv(), pending)
        };
        for event in pending {
            if !self.send_event(&event).await {
                return false;
            }
        }
        let Some(bookmark) = &mut self.bookmark else { return true };
        bookmark["metadata"]["resourceVersion"] = current.to_string().into();
        let l = event_line("BOOKMARK", bookmark);
        self.out.send(l).await.is_ok()
    }
}
