//! Create, replace, patch, apply and delete over raw HTTP, with status subresources,
//! optimistic concurrency and the events each write makes.

mod common;

use common::{Watch, request, rv, summary};
use kube_testserver::{TestApiServer, policies};
use serde_json::{Value, json};

const POLICIES: &str = "/apis/enforcer.dev/v1/policies";
const MERGE: Option<&str> = Some("application/merge-patch+json");

fn create_policy(server: &TestApiServer, name: &str) -> Value {
    let body = json!({
        "apiVersion": "enforcer.dev/v1", "kind": "Policy",
        "metadata": { "name": name },
        "spec": { "mode": "audit" },
        "status": { "phase": "Forged" },
    });
    let reply = request(server, "POST", POLICIES, Some("application/json"), &body.to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body
}

#[test]
fn create_sets_server_metadata_and_refuses_duplicates() {
    let server = TestApiServer::start(vec![policies()]);
    let mut watch = Watch::open(&server, &format!("{POLICIES}?watch=true&resourceVersion=0"));
    let created = create_policy(&server, "p");
    let meta = &created["metadata"];
    assert_eq!((meta["resourceVersion"].as_str(), meta["generation"].as_i64()), (Some("1"), Some(1)));
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36) && meta["creationTimestamp"].is_string());
    assert!(created.get("status").is_none(), "status is set only through /status: {created}");
    assert_eq!(summary(&watch.event()), ("ADDED".into(), "p".into(), "1".into()));

    let again = request(&server, "POST", POLICIES, Some("application/json"), &created.to_string());
    assert_eq!((again.status, again.body["reason"].as_str()), (409, Some("AlreadyExists")));
    assert_eq!(again.body["message"], "policies \"p\" already exists");

    let generated = request(
        &server,
        "POST",
        POLICIES,
        Some("application/json"),
        r#"{"apiVersion":"enforcer.dev/v1","kind":"Policy","metadata":{"generateName":"gen-"}}"#,
    );
    let name = generated.body["metadata"]["name"].as_str().unwrap_or_default();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert_ne!(generated.body["metadata"]["uid"], created["metadata"]["uid"]);
}

#[test]
fn status_subresource_isolates_status_from_the_rest() {
    let server = TestApiServer::start(vec![policies()]);
    create_policy(&server, "p");
    let path = format!("{POLICIES}/p");

    let main =
        request(&server, "PATCH", &path, MERGE, r#"{"spec":{"mode":"enforce"},"status":{"phase":"Sneaky"}}"#);
    assert_eq!(main.status, 200);
    assert_eq!(main.body["spec"]["mode"], "enforce");
    assert!(main.body.get("status").is_none(), "a patch of the object ignores status: {}", main.body);
    assert_eq!(main.body["metadata"]["generation"], 2, "a spec change moves the generation");

    let status = request(
        &server,
        "PATCH",
        &format!("{path}/status"),
        MERGE,
        r#"{"spec":{"mode":"off"},"status":{"phase":"Applied","observedGeneration":2}}"#,
    );
    assert_eq!(status.status, 200);
    assert_eq!(status.body["status"], json!({ "phase": "Applied", "observedGeneration": 2 }));
    assert_eq!(status.body["spec"]["mode"], "enforce", "a patch of /status ignores the spec");
    assert_eq!(status.body["metadata"]["generation"], 2, "status writes leave the generation");
    assert_eq!(rv(&status.body), 3);

    let mut replaced = status.body.clone();
    replaced["status"] = json!({ "phase": "Replaced" });
    replaced["spec"] = json!({ "mode": "off" });
    let put =
        request(&server, "PUT", &format!("{path}/status"), Some("application/json"), &replaced.to_string());
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        (put.body["status"]["phase"].as_str(), put.body["spec"]["mode"].as_str()),
        (Some("Replaced"), Some("enforce"))
    );

    let mut whole = put.body.clone();
    whole["status"] = json!({ "phase": "Overwritten" });
    whole["metadata"]["labels"] = json!({ "team": "a" });
    let put = request(&server, "PUT", &path, Some("application/json"), &whole.to_string());
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["status"]["phase"], "Replaced", "a replace of the object keeps the stored status");
    assert_eq!(
        (put.body["metadata"]["labels"]["team"].as_str(), put.body["metadata"]["generation"].as_i64()),
        (Some("a"), Some(2))
    );

    let stored = server.get("enforcer.dev/v1", "Policy", None, "p").expect("the policy is stored");
    assert_eq!(stored, put.body);
}

#[test]
fn stale_resource_versions_conflict() {
    let server = TestApiServer::start(vec![policies()]);
    let created = create_policy(&server, "p");
    let path = format!("{POLICIES}/p");
    let mut first = created.clone();
    first["spec"]["mode"] = json!("enforce");
    let ok = request(&server, "PUT", &path, Some("application/json"), &first.to_string());
    assert_eq!((ok.status, rv(&ok.body)), (200, 2));

    let mut stale = created.clone();
    stale["spec"]["mode"] = json!("off");
    let conflict = request(&server, "PUT", &path, Some("application/json"), &stale.to_string());
    assert_eq!((conflict.status, conflict.body["reason"].as_str()), (409, Some("Conflict")));
    assert!(conflict.body["message"].as_str().unwrap_or_default().contains("the object has been modified"));

    let stale_patch = request(
        &server,
        "PATCH",
        &path,
        MERGE,
        r#"{"metadata":{"resourceVersion":"1"},"spec":{"mode":"off"}}"#,
    );
    assert_eq!(stale_patch.status, 409, "a patch naming a resourceVersion is a precondition too");
    let stored = server.get("enforcer.dev/v1", "Policy", None, "p").unwrap();
    assert_eq!(stored["spec"]["mode"], "enforce", "refused writes change nothing");

    let missing =
        request(&server, "PUT", &format!("{POLICIES}/q"), Some("application/json"), &first.to_string());
    assert_eq!(missing.status, 400, "the body names p, the URL q");
}

#[test]
fn apply_creates_then_merges_the_applied_fields() {
    let server = TestApiServer::start(vec![policies()]);
    let path = format!("{POLICIES}/p?fieldManager=enforcer&force=true");
    let apply = Some("application/apply-patch+yaml");
    let yaml = "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: p\n  labels:\n    a: \"1\"\nspec:\n  mode: audit\n  rules: [x]\n";
    let created = request(&server, "PATCH", &path, apply, yaml);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!((created.body["spec"]["rules"][0].as_str(), rv(&created.body)), (Some("x"), 1));

    let json_body = r#"{"apiVersion":"enforcer.dev/v1","kind":"Policy","metadata":{"name":"p","labels":{"b":"2"}},"spec":{"mode":"enforce"}}"#;
    let updated = request(&server, "PATCH", &path, apply, json_body);
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["metadata"]["labels"], json!({ "a": "1", "b": "2" }));
    assert_eq!(updated.body["spec"], json!({ "mode": "enforce", "rules": ["x"] }));
    assert_eq!(updated.body["metadata"]["generation"], 2);
    assert_eq!(updated.body["metadata"]["uid"], created.body["metadata"]["uid"]);

    let unchanged = request(&server, "PATCH", &path, apply, json_body);
    assert_eq!(rv(&unchanged.body), 2, "applying the same fields again writes nothing");

    let anonymous = request(&server, "PATCH", &format!("{POLICIES}/p"), apply, json_body);
    assert_eq!((anonymous.status, anonymous.body["reason"].as_str()), (422, Some("Invalid")));
    let other_name = request(&server, "PATCH", &format!("{POLICIES}/q?fieldManager=x"), apply, json_body);
    assert_eq!(other_name.status, 400);
}

#[test]
fn json_patch_and_unknown_patch_types() {
    let server = TestApiServer::start(vec![policies()]);
    create_policy(&server, "p");
    let path = format!("{POLICIES}/p");
    let ops = r#"[{"op":"add","path":"/metadata/finalizers","value":["enforcer.dev/cleanup"]},{"op":"replace","path":"/spec/mode","value":"enforce"}]"#;
    let patched = request(&server, "PATCH", &path, Some("application/json-patch+json"), ops);
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["metadata"]["finalizers"], json!(["enforcer.dev/cleanup"]));
    let bad_test = r#"[{"op":"test","path":"/spec/mode","value":"audit"}]"#;
    assert_eq!(request(&server, "PATCH", &path, Some("application/json-patch+json"), bad_test).status, 422);
    assert_eq!(request(&server, "PATCH", &path, Some("text/plain"), "{}").status, 415);
}

#[test]
fn delete_waits_for_finalizers_and_emits_deleted() {
    let server = TestApiServer::start(vec![policies()]);
    create_policy(&server, "keep");
    create_policy(&server, "gone");
    let mut watch = Watch::open(&server, &format!("{POLICIES}?watch=true&resourceVersion=2"));

    let deleted = request(&server, "DELETE", &format!("{POLICIES}/gone"), None, "");
    assert_eq!((deleted.status, deleted.body["metadata"]["name"].as_str()), (200, Some("gone")));
    assert_eq!(summary(&watch.event()), ("DELETED".into(), "gone".into(), "3".into()));
    assert!(server.get("enforcer.dev/v1", "Policy", None, "gone").is_none());
    assert_eq!(request(&server, "DELETE", &format!("{POLICIES}/gone"), None, "").status, 404);

    let keep = format!("{POLICIES}/keep");
    request(&server, "PATCH", &keep, MERGE, r#"{"metadata":{"finalizers":["enforcer.dev/cleanup"]}}"#);
    assert_eq!(summary(&watch.event()).0, "MODIFIED");
    let precondition = r#"{"preconditions":{"resourceVersion":"1"}}"#;
    assert_eq!(request(&server, "DELETE", &keep, Some("application/json"), precondition).status, 409);
    let marked = request(&server, "DELETE", &keep, None, "");
    assert_eq!(marked.status, 202, "finalizers hold the object");
    assert!(marked.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(summary(&watch.event()).0, "MODIFIED");
    request(&server, "PATCH", &keep, MERGE, r#"{"metadata":{"finalizers":null}}"#);
    assert_eq!(summary(&watch.event()).0, "MODIFIED");
    assert_eq!(summary(&watch.event()).0, "DELETED", "the last finalizer's removal completes the deletion");
    assert!(server.get("enforcer.dev/v1", "Policy", None, "keep").is_none());
}
