//! Watch streams over raw HTTP: replay, live events, selectors, bookmarks, 410 and
//! streaming lists.

mod common;

use std::time::{Duration, Instant};

use common::{Next, Watch, get, pod, request, rv, summary};
use kube_testserver::{TestApiServer, pods};
use serde_json::json;

fn s(kind: &str, name: &str, rv: u64) -> (String, String, String) {
    (kind.to_owned(), name.to_owned(), rv.to_string())
}

#[test]
fn watch_replays_history_after_the_version_then_streams_live_events() {
    let server = TestApiServer::start(vec![pods()]);
    server.put(pod("a", "p1", "node-a", &json!({}))); // rv 1
    server.put(pod("a", "p2", "node-a", &json!({}))); // rv 2
    server.put(pod("b", "other", "node-a", &json!({}))); // rv 3, another namespace
    server.put(pod("a", "p1", "node-b", &json!({}))); // rv 4

    let mut watch = Watch::open(&server, "/api/v1/namespaces/a/pods?watch=true&resourceVersion=1");
    assert_eq!(summary(&watch.event()), s("ADDED", "p2", 2));
    let modified = watch.event();
    assert_eq!(summary(&modified), s("MODIFIED", "p1", 4));
    assert_eq!(modified["object"]["spec"]["nodeName"], "node-b");
    assert!(
        matches!(watch.next(Duration::from_millis(200)), Next::Quiet),
        "nothing else happened in namespace a"
    );

    server.put(pod("a", "p3", "node-a", &json!({})));
    assert_eq!(summary(&watch.event()), s("ADDED", "p3", 5));
    server.put(pod("b", "other", "node-b", &json!({})));
    server.delete("v1", "Pod", Some("a"), "p2");
    let deleted = watch.event();
    assert_eq!(summary(&deleted), s("DELETED", "p2", 7), "the deletion carries its own resourceVersion");
    assert_eq!(deleted["object"]["spec"]["nodeName"], "node-a", "and the object's last state");

    // Without a resourceVersion the watch starts with the current objects.
    let mut fresh = Watch::open(&server, "/api/v1/namespaces/a/pods?watch=1");
    let mut initial = vec![summary(&fresh.event()), summary(&fresh.event())];
    initial.sort();
    assert_eq!(initial, [s("ADDED", "p1", 4), s("ADDED", "p3", 5)]);
}

#[test]
fn watch_with_a_selector_sees_objects_move_in_and_out() {
    let server = TestApiServer::start(vec![pods()]);
    server.put(pod("a", "p", "node-a", &json!({ "app": "db" })));
    let mut watch = Watch::open(&server, "/api/v1/pods?watch=true&resourceVersion=1&labelSelector=app%3Dweb");
    server.put(pod("a", "p", "node-a", &json!({ "app": "web" })));
    assert_eq!(summary(&watch.event()), s("ADDED", "p", 2), "modified into the selector");
    server.put(pod("a", "p", "node-b", &json!({ "app": "web" })));
    assert_eq!(summary(&watch.event()), s("MODIFIED", "p", 3));
    server.put(pod("a", "p", "node-b", &json!({ "app": "db" })));
    assert_eq!(summary(&watch.event()), s("DELETED", "p", 4), "modified out of the selector");
    server.put(pod("a", "p", "node-c", &json!({ "app": "db" })));
    assert!(matches!(watch.next(Duration::from_millis(200)), Next::Quiet));
}

#[test]
fn bookmarks_carry_the_current_version_when_asked_for() {
    let server = TestApiServer::start(vec![pods()]);
    server.set_bookmark_interval(Duration::from_millis(100));
    server.put(pod("a", "p", "node-a", &json!({})));
    let mut plain = Watch::open(&server, "/api/v1/pods?watch=true&resourceVersion=1");
    let mut watch =
        Watch::open(&server, "/api/v1/pods?watch=true&resourceVersion=1&allowWatchBookmarks=true");
    let bookmark = watch.event();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"],
        json!({ "kind": "Pod", "apiVersion": "v1", "metadata": { "resourceVersion": "1" } })
    );

    server.put(pod("a", "q", "node-a", &json!({})));
    assert_eq!(summary(&watch.change()), s("ADDED", "q", 2));
    loop {
        let event = watch.event();
        if event["type"] == "BOOKMARK" {
            assert_eq!(event["object"]["metadata"]["resourceVersion"], "2");
            break;
        }
    }
    assert_eq!(summary(&plain.event()), s("ADDED", "q", 2));
    assert!(matches!(plain.next(Duration::from_millis(400)), Next::Quiet), "no bookmarks unless asked for");
}

#[test]
fn watch_from_a_compacted_version_gets_410_and_ends() {
    let server = TestApiServer::start(vec![pods()]);
    server.put(pod("a", "p", "node-a", &json!({})));
    server.put(pod("a", "p", "node-b", &json!({})));
    server.compact();

    let mut watch = Watch::open(&server, "/api/v1/pods?watch=true&resourceVersion=1");
    let error = watch.event();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(
        error["object"],
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410,
        })
    );
    assert!(matches!(watch.next(Duration::from_secs(2)), Next::End), "the stream ends after the error");

    // From the compaction point on, watching works.
    let mut current = Watch::open(&server, "/api/v1/pods?watch=true&resourceVersion=2");
    server.put(pod("a", "q", "node-a", &json!({})));
    assert_eq!(summary(&current.event()), s("ADDED", "q", 3));
}

#[test]
fn timeout_seconds_ends_the_stream() {
    let server = TestApiServer::start(vec![pods()]);
    let started = Instant::now();
    let mut watch = Watch::open(&server, "/api/v1/pods?watch=true&timeoutSeconds=1");
    assert!(matches!(watch.next(Duration::from_secs(5)), Next::End));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "ended after {took:?}");
}

#[test]
fn streaming_list_sends_current_objects_then_the_end_bookmark() {
    let server = TestApiServer::start(vec![pods()]);
    server.set_bookmark_interval(Duration::from_secs(3600));
    server.put(pod("a", "p1", "node-a", &json!({})));
    server.put(pod("a", "p2", "node-b", &json!({})));
    server.put(pod("a", "p1", "node-a", &json!({ "x": "y" })));
    let path = "/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
                &allowWatchBookmarks=true&resourceVersion=0&fieldSelector=spec.nodeName%3Dnode-a";
    let mut watch = Watch::open(&server, path);
    assert_eq!(summary(&watch.event()), s("ADDED", "p1", 3));
    let end = watch.event();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(end["object"]["metadata"]["resourceVersion"], "3");
    assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    server.put(pod("a", "p3", "node-a", &json!({})));
    assert_eq!(summary(&watch.event()), s("ADDED", "p3", 4));

    let without_match =
        get(&server, "/api/v1/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true");
    assert_eq!((without_match.status, without_match.body["reason"].as_str()), (422, Some("Invalid")));
}

#[test]
fn watch_on_an_object_path_follows_that_object() {
    let server = TestApiServer::start(vec![pods()]);
    let created = server.put(pod("a", "p", "node-a", &json!({})));
    server.put(pod("a", "q", "node-a", &json!({})));
    let mut watch = Watch::open(
        &server,
        &format!("/api/v1/namespaces/a/pods/p?watch=true&resourceVersion={}", rv(&created)),
    );
    let reply = request(
        &server,
        "PATCH",
        "/api/v1/namespaces/a/pods/q",
        Some("application/merge-patch+json"),
        r#"{"metadata":{"labels":{"seen":"no"}}}"#,
    );
    assert_eq!(reply.status, 200);
    let reply = request(
        &server,
        "PATCH",
        "/api/v1/namespaces/a/pods/p",
        Some("application/merge-patch+json"),
        r#"{"metadata":{"labels":{"seen":"yes"}}}"#,
    );
    assert_eq!(reply.status, 200);
    let event = watch.event();
    assert_eq!(summary(&event), s("MODIFIED", "p", 4));
    assert_eq!(event["object"]["metadata"]["labels"]["seen"], "yes");
}

#[test]
fn dropping_the_server_ends_open_watches_and_closes_the_port() {
    let server = TestApiServer::start(vec![pods()]);
    let address = server.url().trim_start_matches("http://").to_owned();
    let mut watch = Watch::open(&server, "/api/v1/pods?watch=true");
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(3), "drop took {:?}", started.elapsed());
    assert!(matches!(watch.next(Duration::from_secs(2)), Next::End), "the open watch ends");
    assert!(std::net::TcpStream::connect(&address).is_err(), "nothing listens on {address} any more");
}
