//! A real kube-rs client against the test server: the watcher state machine (list,
//! watch, 410, re-list, streaming lists) and status patches on a custom resource.

use std::path::PathBuf;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, ResourceExt};
use kube_testserver::{TestApiServer, pods, policies};
use serde_json::{Value, json};

/// A client configured the way the agent is: from a kubeconfig file.
async fn client(server: &TestApiServer) -> Client {
    let path = kubeconfig_path();
    server.write_kubeconfig(&path).expect("writing the kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading the kubeconfig back");
    std::fs::remove_file(&path).expect("removing the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client configuration from the kubeconfig");
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).expect("a client")
}

fn kubeconfig_path() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("kube-testserver-{}-{n}.yaml", std::process::id()))
}

fn pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "nodeName": node, "containers": [{ "name": "main", "image": "busybox" }] },
    })
}

/// What a watcher event says, with pod names, for assertions.
fn describe(event: &Result<Event<Pod>, watcher::Error>) -> String {
    match event {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(p)) => format!("InitApply {}", p.name_any()),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(p)) => format!("Apply {}", p.name_any()),
        Ok(Event::Delete(p)) => format!("Delete {}", p.name_any()),
        Err(watcher::Error::WatchError(status)) => format!("WatchError {}", status.code),
        Err(e) => format!("Error {e}"),
    }
}

async fn next(stream: &mut (impl Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin)) -> String {
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watcher event within 10 s")
        .expect("the watcher stream goes on");
    describe(&event)
}

fn count_lists(server: &TestApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/pods?") && !r.contains("watch=true"))
        .count()
}

#[tokio::test]
async fn watcher_relists_after_compaction_and_converges() {
    let server = TestApiServer::start(vec![pods()]);
    // No bookmarks: the watcher's resourceVersion stays at its last event, so that
    // compaction leaves it behind.
    server.set_bookmark_interval(Duration::from_secs(3600));
    server.put(pod("a1", "node-a"));
    server.put(pod("b1", "node-b"));
    let api: Api<Pod> = Api::all(client(&server).await);
    let config = watcher::Config::default().fields("spec.nodeName=node-a").timeout(1);
    let mut stream = watcher::watcher(api, config).boxed();

    assert_eq!(next(&mut stream).await, "Init");
    assert_eq!(next(&mut stream).await, "InitApply a1");
    assert_eq!(next(&mut stream).await, "InitDone");
    server.put(pod("a2", "node-a"));
    assert_eq!(next(&mut stream).await, "Apply a2");
    assert_eq!(count_lists(&server), 1);

    server.put(pod("b2", "node-b"));
    server.compact();
    // The watch times out after a second; resuming from a2's version now gets 410,
    // and the watcher starts over with a list.
    let mut after = Vec::new();
    while after.last().is_none_or(|e| e != "InitDone") {
        after.push(next(&mut stream).await);
    }
    assert_eq!(after, ["WatchError 410", "Init", "InitApply a1", "InitApply a2", "InitDone"]);
    assert_eq!(count_lists(&server), 2, "a second list after the 410: {:#?}", server.requests());
    let requests = server.requests();
    let watches: Vec<&String> = requests.iter().filter(|r| r.contains("watch=true")).collect();
    assert!(
        watches
            .iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a") && r.contains("timeoutSeconds=1")),
        "{watches:#?}"
    );

    server.put(pod("a3", "node-a"));
    server.put(pod("b3", "node-b"));
    server.delete("v1", "Pod", Some("default"), "a1");
    let mut live = Vec::new();
    while live.len() < 2 {
        live.push(next(&mut stream).await);
    }
    assert_eq!(live, ["Apply a3", "Delete a1"], "the watcher converges on the server's state");
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_and_bookmark() {
    let server = TestApiServer::start(vec![pods()]);
    server.put(pod("a1", "node-a"));
    server.put(pod("b1", "node-b"));
    let api: Api<Pod> = Api::namespaced(client(&server).await, "default");
    let config = watcher::Config::default().fields("spec.nodeName=node-a").streaming_lists();
    let mut stream = watcher::watcher(api, config).boxed();
    assert_eq!(next(&mut stream).await, "Init");
    assert_eq!(next(&mut stream).await, "InitApply a1");
    assert_eq!(next(&mut stream).await, "InitDone");
    server.put(pod("a2", "node-a"));
    assert_eq!(next(&mut stream).await, "Apply a2");
    assert_eq!(count_lists(&server), 0, "a streaming list needs no list request");
    assert!(server.requests().iter().any(|r| r.contains("sendInitialEvents=true")));
}

#[tokio::test]
async fn patch_status_on_a_custom_resource_reads_back() {
    let server = TestApiServer::start(vec![policies()]);
    let gvk = GroupVersionKind::gvk("enforcer.dev", "v1", "Policy");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "policies");
    let api: Api<DynamicObject> = Api::all_with(client(&server).await, &resource);

    let policy = DynamicObject::new("deny-ssh", &resource).data(json!({ "spec": { "mode": "enforce" } }));
    let created = api.create(&PostParams::default(), &policy).await.expect("creating the policy");
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({ "status": { "phase": "Applied", "observedGeneration": 1 } });
    let patched = api
        .patch_status("deny-ssh", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patching the status");
    assert_eq!(patched.data["status"]["phase"], "Applied");

    let read = api.get("deny-ssh").await.expect("reading the policy back");
    assert_eq!(read.data["status"], json!({ "phase": "Applied", "observedGeneration": 1 }));
    assert_eq!(read.data["spec"]["mode"], "enforce");
    assert_eq!(read.metadata.generation, Some(1), "a status write leaves the generation alone");

    let applied = json!({
        "apiVersion": "enforcer.dev/v1", "kind": "Policy",
        "metadata": { "name": "deny-ssh" },
        "status": { "phase": "Degraded" },
    });
    let params = PatchParams::apply("enforcer-agent").force();
    api.patch_status("deny-ssh", &params, &Patch::Apply(&applied)).await.expect("applying the status");
    let stored = server.get("enforcer.dev/v1", "Policy", None, "deny-ssh").expect("the policy is stored");
    assert_eq!(stored["status"]["phase"], "Degraded");

    let sneaky = json!({ "status": { "phase": "Forged" } });
    api.patch("deny-ssh", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .expect("patching the object");
    let read = api.get("deny-ssh").await.expect("reading the policy again");
    assert_eq!(read.data["status"]["phase"], "Degraded", "the main resource ignores status changes");

    let missing = api.get("nope").await.expect_err("an unknown policy");
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{missing:?}"
    );
}
