//! GET on collections and objects, over raw HTTP.

mod common;

use common::{get, names, pod, request};
use kube_testserver::{TestApiServer, pods, policies};
use serde_json::json;

fn server_with_pods() -> TestApiServer {
    let server = TestApiServer::start(vec![pods(), policies()]);
    server.put(pod("a", "web-1", "node-a", &json!({ "app": "web", "tier": "front" })));
    server.put(pod("a", "db-1", "node-b", &json!({ "app": "db" })));
    server.put(pod("b", "web-2", "node-b", &json!({ "app": "web" })));
    server
}

#[test]
fn list_has_the_list_kind_version_and_items() {
    let server = server_with_pods();
    server.put(
        json!({ "apiVersion": "enforcer.dev/v1", "kind": "Policy", "metadata": { "name": "p" }, "spec": {} }),
    );

    let all = get(&server, "/api/v1/pods");
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), Some("application/json"));
    assert_eq!((all.body["apiVersion"].as_str(), all.body["kind"].as_str()), (Some("v1"), Some("PodList")));
    assert_eq!(all.body["metadata"]["resourceVersion"], "4", "the list carries the store's current version");
    assert_eq!(names(&all.body), ["db-1", "web-1", "web-2"], "ordered by namespace, then name");
    let first = &all.body["items"][0];
    assert_eq!((first["kind"].as_str(), first["metadata"]["namespace"].as_str()), (Some("Pod"), Some("a")));
    assert!(first["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36), "{first}");
    assert!(first["metadata"]["creationTimestamp"].is_string());

    let in_a = get(&server, "/api/v1/namespaces/a/pods");
    assert_eq!(names(&in_a.body), ["db-1", "web-1"]);

    let policies = get(&server, "/apis/enforcer.dev/v1/policies");
    assert_eq!(policies.body["kind"], "PolicyList");
    assert_eq!(policies.body["apiVersion"], "enforcer.dev/v1");
    assert_eq!(names(&policies.body), ["p"]);
}

#[test]
fn list_honours_label_and_field_selectors() {
    let server = server_with_pods();
    let list = |query: &str| names(&get(&server, &format!("/api/v1/pods?{query}")).body);
    assert_eq!(list("labelSelector=app%3Dweb"), ["web-1", "web-2"]);
    assert_eq!(list("labelSelector=app%21%3Dweb"), ["db-1"]);
    assert_eq!(list("labelSelector=tier"), ["web-1"]);
    assert_eq!(list("labelSelector=app%3Dweb%2C%21tier"), ["web-2"]);
    assert_eq!(list("labelSelector=app+in+%28db%2Ccache%29"), ["db-1"]);
    assert_eq!(list("fieldSelector=spec.nodeName%3Dnode-b"), ["db-1", "web-2"]);
    assert_eq!(list("fieldSelector=metadata.namespace%3Da%2Cspec.nodeName%3Dnode-b"), ["db-1"]);
    assert_eq!(list("fieldSelector=metadata.name%3Dweb-2&labelSelector=app%3Dweb"), ["web-2"]);
    assert!(list("fieldSelector=spec.nodeName%3Dnode-z").is_empty());

    let bad = get(&server, "/api/v1/pods?labelSelector=app+in+web");
    assert_eq!(bad.status, 400);
    assert_eq!(
        (bad.body["kind"].as_str(), bad.body["reason"].as_str()),
        (Some("Status"), Some("BadRequest"))
    );
}

#[test]
fn pages_follow_one_snapshot_and_expire_with_compaction() {
    let server = TestApiServer::start(vec![pods()]);
    for i in 1..=5 {
        server.put(pod("a", &format!("p{i}"), "node-a", &json!({})));
    }
    let first = get(&server, "/api/v1/namespaces/a/pods?limit=2");
    assert_eq!(names(&first.body), ["p1", "p2"]);
    assert_eq!(first.body["metadata"]["resourceVersion"], "5");
    assert_eq!(first.body["metadata"]["remainingItemCount"], 3);
    let token = first.body["metadata"]["continue"].as_str().expect("a continue token").to_owned();

    // Changes after the first page do not show in the rest of the list.
    server.delete("v1", "Pod", Some("a"), "p3");
    server.put(pod("a", "p0", "node-a", &json!({})));
    let second = get(&server, &format!("/api/v1/namespaces/a/pods?limit=2&continue={token}"));
    assert_eq!(names(&second.body), ["p3", "p4"]);
    assert_eq!(second.body["metadata"]["resourceVersion"], "5");
    let token = second.body["metadata"]["continue"].as_str().expect("a second continue token").to_owned();
    let last = get(&server, &format!("/api/v1/namespaces/a/pods?limit=2&continue={token}"));
    assert_eq!(names(&last.body), ["p5"]);
    assert!(last.body["metadata"].get("continue").is_none(), "{}", last.body);

    // A new list sees the current state.
    assert_eq!(names(&get(&server, "/api/v1/namespaces/a/pods").body), ["p0", "p1", "p2", "p4", "p5"]);
    // Exact reads an older version from the history.
    let exact = get(&server, "/api/v1/namespaces/a/pods?resourceVersion=3&resourceVersionMatch=Exact");
    assert_eq!(names(&exact.body), ["p1", "p2", "p3"]);

    server.compact();
    let expired = get(&server, &format!("/api/v1/namespaces/a/pods?limit=2&continue={token}"));
    assert_eq!((expired.status, expired.body["reason"].as_str()), (410, Some("Expired")));
    let exact_expired =
        get(&server, "/api/v1/namespaces/a/pods?resourceVersion=3&resourceVersionMatch=Exact");
    assert_eq!(
        (exact_expired.status, exact_expired.body["message"].as_str()),
        (410, Some("too old resource version: 3 (7)"))
    );
    let too_new = get(&server, "/api/v1/pods?resourceVersion=999&resourceVersionMatch=NotOlderThan");
    assert_eq!(too_new.status, 504);
}

#[test]
fn unknown_objects_and_paths_are_not_found_statuses() {
    let server = server_with_pods();
    let found = get(&server, "/api/v1/namespaces/a/pods/web-1");
    assert_eq!((found.status, found.body["metadata"]["name"].as_str()), (200, Some("web-1")));

    let missing = get(&server, "/api/v1/namespaces/b/pods/web-1");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.body["kind"], "Status");
    assert_eq!(missing.body["status"], "Failure");
    assert_eq!(missing.body["reason"], "NotFound");
    assert_eq!(missing.body["code"], 404);
    assert_eq!(missing.body["message"], "pods \"web-1\" not found");
    assert_eq!(missing.body["details"], json!({ "name": "web-1", "kind": "pods" }));

    for path in ["/apis/apps/v1/deployments", "/api/v1/namespaces/a/pods/web-1/log", "/healthz"] {
        let reply = get(&server, path);
        assert_eq!((reply.status, reply.body["reason"].as_str()), (404, Some("NotFound")), "{path}");
    }
    let delete_all = request(&server, "DELETE", "/api/v1/namespaces/a/pods", None, "");
    assert_eq!(delete_all.status, 405);
}

#[test]
fn discovery_lists_the_registered_resources() {
    let server = server_with_pods();
    let groups = get(&server, "/apis");
    assert_eq!(groups.body["groups"][0]["name"], "enforcer.dev");
    let core = get(&server, "/api/v1");
    let resources: Vec<&str> =
        core.body["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(resources, ["pods", "pods/status"]);
    assert_eq!(get(&server, "/version").body["major"], "1");
}
