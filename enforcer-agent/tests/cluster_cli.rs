//! `enforcer policy … --kubernetes` against the test API server: the verbs read and write
//! the cluster's `Policy` resources, and a bad file writes nothing.

use std::{path::PathBuf, process::Command};

use kube_testserver::{TestApiServer, policies};
use serde_json::json;

fn enforcer(kubeconfig: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(args)
        .arg("--kubernetes")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .expect("running enforcer");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("enforcer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

#[test]
fn policy_verbs_act_on_the_clusters_resources() {
    let server = TestApiServer::start(vec![policies()]);
    let dir = work_dir("cluster-cli");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();

    // apply: every document becomes a resource whose spec is the document's.
    let (code, stdout, stderr) = enforcer(&kubeconfig, &["policy", "apply", "-f", EXAMPLES]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("policy.enforcer.dev/payments-api: created"), "{stdout}");
    let payments = server.get("enforcer.dev/v1", "Policy", None, "payments-api").expect("created");
    assert_eq!(payments["spec"]["file"][0], json!({"dir": "/srv/secrets", "action": "deny"}));
    assert_eq!(payments["spec"]["selector"]["cgroupPath"], "/demo/payments");
    let (code, stdout, _) = enforcer(&kubeconfig, &["policy", "apply", "-f", EXAMPLES]);
    assert_eq!(code, 0);
    assert!(stdout.contains("policy.enforcer.dev/payments-api: unchanged"), "{stdout}");

    // diff: what would change, with a line diff, and nothing written.
    let changed = dir.join("payments.yaml");
    let text = std::fs::read_to_string(format!("{EXAMPLES}/payments-api.yaml")).unwrap();
    std::fs::write(&changed, text.replace("action: deny", "action: allow")).unwrap();
    let (code, stdout, stderr) = enforcer(&kubeconfig, &["policy", "diff", "-f", changed.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("payments-api: would be changed"), "{stdout}");
    assert!(stdout.contains("+    action: allow"), "{stdout}");
    let after = server.get("enforcer.dev/v1", "Policy", None, "payments-api").unwrap();
    assert_eq!(after["metadata"]["resourceVersion"], payments["metadata"]["resourceVersion"]);

    // A write replaces the whole resource: a field dropped from the document leaves it,
    // whoever set it.
    let mut widened = server.get("enforcer.dev/v1", "Policy", None, "payments-api").unwrap();
    widened["spec"]["allowMounts"] = json!(true);
    server.put(widened);
    std::fs::write(&changed, &text).unwrap();
    let (code, stdout, stderr) = enforcer(&kubeconfig, &["policy", "apply", "-f", changed.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let payments = server.get("enforcer.dev/v1", "Policy", None, "payments-api").unwrap();
    assert!(payments["spec"].get("allowMounts").is_none(), "{payments}");

    // A document the validator refuses, or one that governs an identity another resource
    // already governs, writes nothing.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, text.replace("action: deny", "action: maybe")).unwrap();
    let (code, _, stderr) = enforcer(&kubeconfig, &["policy", "apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("maybe"), "{stderr}");
    let twin = dir.join("twin.yaml");
    std::fs::write(
        &twin,
        text.replace("name: payments-api", "name: twin\nspec-placeholder")
            .replace("spec-placeholder\nspec:\n", "spec:\n  identity: payments-api\n"),
    )
    .unwrap();
    let (code, _, stderr) = enforcer(&kubeconfig, &["policy", "apply", "-f", twin.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already governed"), "{stderr}");
    assert!(server.get("enforcer.dev/v1", "Policy", None, "twin").is_none());
    let after = server.get("enforcer.dev/v1", "Policy", None, "payments-api").unwrap();
    assert_eq!(after["metadata"]["resourceVersion"], payments["metadata"]["resourceVersion"]);

    // list: the resources with what the agents wrote in their status.
    let mut reported = after.clone();
    reported["status"] = json!({"conditions": [{"type": "Valid", "status": "True", "reason": "Valid",
        "message": "the policy is valid and in force", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    server.put(reported);
    let (code, stdout, _) = enforcer(&kubeconfig, &["--output", "json", "policy", "list"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["name"] == "payments-api").expect("listed");
    assert_eq!(row["valid"], "True", "{row}");
    assert_eq!(row["identity"], "payments-api", "{row}");
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");

    // delete, and a second delete names the missing resource.
    let (code, stdout, _) = enforcer(&kubeconfig, &["policy", "delete", "payments-api"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(server.get("enforcer.dev/v1", "Policy", None, "payments-api").is_none());
    let (code, _, stderr) = enforcer(&kubeconfig, &["policy", "delete", "payments-api"]);
    assert_eq!(code, 3, "{stderr}");
}
