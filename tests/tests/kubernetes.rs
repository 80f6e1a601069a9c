//! The agent as a Kubernetes node agent, against the test API server (list + watch) and
//! a real `runc`: Policy resources from the cluster are the set in force, with their
//! status written back; the OCI hook binds a pod's container before its first
//! instruction; the pod watch binds containers the hook never announced.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use enforcer_tests::{Agent, AgentDirs, field, runc};
use kube_testserver::{TestApiServer, pods, policies};
use serde_json::{Value, json};

const NODE: &str = "node-a";
const RUNC_ROOT: &str = "/run/runc-kube-test";

fn agent_binary() -> String {
    std::env::var("ENFORCER_BIN").unwrap_or_else(|_| "/bin/enforcer".to_owned())
}

/// A 64-digit container id ending in `n`.
fn container_id(n: u8) -> String {
    format!("{}{n:02x}", "c0ffee".repeat(10) + "00")
}

fn pod(statuses: &[(&str, &str)]) -> Value {
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|(name, id)| {
            json!({"name": name, "containerID": format!("containerd://{id}"), "image": "busybox",
                   "imageID": "", "ready": true, "restartCount": 0})
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cart-0", "namespace": "shop", "labels": {"app": "cart", "tier": "web"}},
        "spec": {"nodeName": NODE, "serviceAccountName": "cart",
                 "containers": [{"name": "app", "image": "busybox"}, {"name": "late", "image": "busybox"}]},
        "status": {"phase": "Running", "containerStatuses": statuses}
    })
}

fn policy_resource(name: &str, file_action: &str) -> Value {
    json!({
        "apiVersion": "enforcer.dev/v1", "kind": "Policy",
        "metadata": {"name": name},
        "spec": {
            "selector": {"pod": {"namespace": "shop", "matchLabels": {"app": "cart"}}},
            // An allow list: the runtime's own opens while it finishes the container
            // (after the hook bound it) must not be judged by it.
            "defaults": {"file": "deny"},
            "file": [{"path": "/secret", "action": file_action}, {"dir": "/dev", "action": "allow"}]
        }
    })
}

/// A bundle whose rootfs holds busybox and `/secret`, its container in the kubelet's
/// cgroupfs-driver cgroup for the pod, with containerd's CRI annotations and, when
/// `hook` is set, `enforcer oci-hook` as its `createRuntime` hook.
fn bundle(dir: &Path, pod_uid: &str, id: &str, container: &str, args: &[&str], hook: Option<&Path>) {
    let _ = fs::remove_dir_all(dir);
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    enforcer_tests::tool(rootfs.join("bin").to_str().unwrap(), "busybox");
    for applet in ["sh", "cat", "sleep"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("secret"), "s").unwrap();
    let status = Command::new(runc()).arg("spec").current_dir(dir).status().expect("runc spec");
    assert!(status.success(), "runc spec failed");
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = json!(args);
    config["root"]["readonly"] = false.into();
    config["linux"]["cgroupsPath"] = format!("/kubepods/besteffort/pod{pod_uid}/{id}").into();
    config["annotations"] = json!({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.sandbox-name": "cart-0",
        "io.kubernetes.cri.sandbox-uid": pod_uid,
        "io.kubernetes.cri.container-name": container,
    });
    if let Some(socket) = hook {
        config["hooks"] = json!({"createRuntime": [{
            "path": agent_binary(),
            "args": ["enforcer", "--socket", socket, "oci-hook"],
            "timeout": 60
        }]});
    }
    fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// `runc run` (no `pivot_root`: the VM's root is the initial ramfs), output to `out`.
fn runc_run(bundle: &Path, id: &str, out: &Path) -> std::process::Child {
    let file = fs::File::create(out).unwrap();
    Command::new(runc())
        .args(["--root", RUNC_ROOT, "run", "--no-pivot", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("runc run")
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn valid_condition(server: &TestApiServer, name: &str) -> Option<Value> {
    let object = server.get("enforcer.dev/v1", "Policy", None, name)?;
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Valid").cloned()
}

fn work_dir() -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/kube-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn pods_are_enforced_from_their_first_instruction_with_policies_from_the_cluster() {
    let server = TestApiServer::start(vec![pods(), policies()]);
    let work = work_dir();
    let kubeconfig = work.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    // The API server assigns the pod's UID, as a real one does.
    let created = server.put(pod(&[]));
    let uid = created["metadata"]["uid"].as_str().expect("the server assigns a uid").to_owned();
    server.put(policy_resource("cart", "deny"));

    let dirs = AgentDirs::new("kube", "");
    let agent = Agent::start_with_dirs_only(
        &dirs,
        &["--kubernetes", "--kubeconfig", kubeconfig.to_str().unwrap(), "--node-name", NODE],
    );
    agent.wait_record(|r| field(r, "type") == "policy" && field(r, "source") == "kubernetes");
    wait_until("the Valid condition on the resource", Duration::from_secs(30), || {
        valid_condition(&server, "cart").is_some_and(|c| c["status"] == "True")
    });

    // The node's own API does not change a cluster-owned set.
    let file = work.join("local.yaml");
    fs::write(&file, "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata: {name: local}\nspec:\n  selector: {cgroupPath: /x}\n").unwrap();
    let (code, _, stderr) = agent.cli(&["policy", "apply", "-f", file.to_str().unwrap()]);
    assert_ne!(code, 0, "a node-local apply must be refused in Kubernetes mode");
    assert!(stderr.contains("--kubernetes"), "{stderr}");

    // 1. The hook binds the container before the entrypoint runs: `cat /secret` is the
    //    entrypoint itself, and its first open is denied.
    let app = container_id(1);
    let app_bundle = work.join("app");
    bundle(&app_bundle, &uid, &app, "app", &["/bin/cat", "/secret"], Some(&agent.socket));
    let out = work.join("app.out");
    let status = runc_run(&app_bundle, &app, &out).wait().unwrap();
    let output = fs::read_to_string(&out).unwrap_or_default();
    assert!(
        !status.success(),
        "cat /secret must fail inside the selected container:\n{output}\n{}",
        agent.stderr()
    );
    assert!(output.contains("Operation not permitted"), "{output}");
    let denied = agent.wait_record(|r| {
        field(r, "hook") == "file_open"
            && field(&r["target"], "path") == "/secret"
            && field(r, "decision") == "deny"
    });
    assert_eq!(field(&denied, "identity"), "cart", "{denied}");
    assert_eq!(
        denied["pod"],
        json!({"namespace": "shop", "name": "cart-0", "container": "app", "serviceAccount": "cart"}),
        "{denied}"
    );
    let bound = agent.wait_record(|r| field(r, "type") == "container");
    assert_eq!(bound["identities"], json!(["cart"]), "{bound}");
    let _ = Command::new(runc()).args(["--root", RUNC_ROOT, "delete", "--force", &app]).status();

    // 2. Without the hook, the pod watch binds the container once its status names it:
    //    the same open succeeds before and fails after.
    let late = container_id(2);
    let late_bundle = work.join("late");
    let script = "cat /secret >/dev/null; echo first=$?; while [ ! -e /tmp/go ]; do sleep 0.1; done; cat /secret >/dev/null; echo second=$?";
    bundle(&late_bundle, &uid, &late, "late", &["/bin/sh", "-c", script], None);
    let out = work.join("late.out");
    let mut child = runc_run(&late_bundle, &late, &out);
    wait_until("the unmanaged first read", Duration::from_secs(60), || {
        fs::read_to_string(&out).unwrap_or_default().contains("first=")
    });
    assert!(fs::read_to_string(&out).unwrap().contains("first=0"), "the container is not selected yet");
    server.put(pod(&[("app", &app), ("late", &late)]));
    wait_until("the watch to bind the late container", Duration::from_secs(30), || {
        let (_, stdout, _) = agent.cli(&["identities"]);
        stdout.contains(&late)
    });
    fs::write(late_bundle.join("rootfs/tmp/go"), "").unwrap();
    let status = child.wait().unwrap();
    let output = fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "{output}");
    assert!(output.contains("second=1"), "the read after binding must be denied:\n{output}");
    let denied = agent.wait_record(|r| {
        field(r, "hook") == "file_open"
            && field(&r["pod"], "container") == "late"
            && field(r, "decision") == "deny"
    });
    assert_eq!(field(&denied, "identity"), "cart", "{denied}");
    let _ = Command::new(runc()).args(["--root", RUNC_ROOT, "delete", "--force", &late]).status();

    // 3. An invalid resource is refused with the validator's message and the last valid
    //    set stays in force; removing it lets the set apply again.
    let generation = |agent: &Agent| {
        let (_, stdout, _) = agent.cli(&["--output", "json", "policy", "list"]);
        serde_json::from_str::<Value>(&stdout).map(|v| v["generation"].clone()).unwrap_or_default()
    };
    let before = generation(&agent);
    server.put(policy_resource("broken", "maybe"));
    wait_until("the Invalid condition", Duration::from_secs(30), || {
        valid_condition(&server, "broken").is_some_and(|c| c["status"] == "False")
    });
    let refused = valid_condition(&server, "broken").unwrap();
    assert!(refused["message"].as_str().unwrap().contains("maybe"), "{refused}");
    wait_until("cart to wait for the others", Duration::from_secs(30), || {
        valid_condition(&server, "cart").is_some_and(|c| c["reason"] == "WaitingForOthers")
    });
    assert_eq!(generation(&agent), before, "an invalid resource must not change the set in force");
    server.delete("enforcer.dev/v1", "Policy", None, "broken");
    wait_until("cart back in force", Duration::from_secs(30), || {
        valid_condition(&server, "cart").is_some_and(|c| c["reason"] == "Valid")
    });
}
