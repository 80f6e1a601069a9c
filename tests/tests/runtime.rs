//! A real container runtime (Debian's `runc`) running inside a managed identity: with the
//! hardened defaults its set-up (a memfd re-exec, mounts, changing root) is refused with
//! `restricted` verdicts; with `allowMounts` and `allowFilelessExec` the container starts,
//! runs its entrypoint, and the identity's file rules still apply inside it (a subtree
//! binding covers the container's cgroup, created by runc below the bound one). With the
//! hardened defaults and runc named in `spec.runtimes`, the container starts too, and its
//! entrypoint is restricted again: its own mount is refused.

use std::{fs, os::unix::fs::symlink, path::Path, process::Command, time::Duration};

use enforcer_tests::{Agent, AgentDirs, TestCgroup, field, policy, relative, run_in_dir, runc};
use serde_json::Value;

const BUNDLE: &str = "/tmp/runtime/bundle";

/// A bundle whose rootfs holds busybox (as `sh` and `cat`) and `/secret`, and whose
/// container lives in the cgroup `cgroups_path` (relative to the cgroup root).
fn bundle(cgroups_path: &str) {
    let _ = fs::remove_dir_all(BUNDLE);
    let rootfs = format!("{BUNDLE}/rootfs");
    for dir in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(format!("{rootfs}/{dir}")).unwrap();
    }
    enforcer_tests::tool(&format!("{rootfs}/bin"), "busybox");
    for applet in ["sh", "cat", "mount"] {
        symlink("busybox", format!("{rootfs}/bin/{applet}")).unwrap();
    }
    fs::write(format!("{rootfs}/secret"), "s").unwrap();
    let status = Command::new(runc()).arg("spec").current_dir(BUNDLE).status().expect("runc spec");
    assert!(status.success(), "runc spec failed");
    let path = format!("{BUNDLE}/config.json");
    let mut config: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "echo started; cat /secret; echo rc=$?; mount -t tmpfs none /tmp; echo mount=$?"
    ]);
    config["root"]["readonly"] = false.into();
    config["linux"]["cgroupsPath"] = cgroups_path.into();
    fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// `runc run` of the bundle from `cgroup`: (exit code, stdout + stderr).
fn run_container(cgroup: &Path, name: &str) -> (i32, String) {
    let out = format!("/tmp/runtime/{name}.out");
    let (cgroup, log) = (cgroup.to_owned(), out.clone());
    let code = run_in_dir(Some(&cgroup), move || {
        let Ok(file) = fs::File::create(&log) else { return 250 };
        let Ok(err) = file.try_clone() else { return 251 };
        Command::new(runc())
            // The test VM's root is the initial ramfs, where `pivot_root` cannot work: runc
            // moves the root with a mount and `chroot`s instead (both restricted the same).
            .args(["--root", "/run/runc-test", "run", "--no-pivot", "--bundle", BUNDLE, name])
            .stdout(file)
            .stderr(err)
            .status()
            .map_or(252, |s| s.code().unwrap_or(253))
    });
    (code, fs::read_to_string(out).unwrap_or_default())
}

fn records_with(agent: &Agent, want: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(r) = agent.records().into_iter().find(|r| want(r)) {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The entrypoint's `cat /secret` failed, with a deny verdict of the identity (judged by
/// the path the container sees).
fn secret_denied(agent: &Agent, output: &str) {
    assert!(output.contains("rc=1"), "reading /secret inside the container must fail:\n{output}");
    let denied =
        records_with(agent, |r| field(r, "hook") == "file_open" && field(&r["target"], "path") == "/secret")
            .unwrap_or_else(|| panic!("no verdict for /secret; runc said:\n{output}"));
    assert_eq!(field(&denied, "decision"), "deny", "{denied}");
    assert_eq!(field(&denied, "identity"), "runtime-policy", "{denied}");
}

#[test]
fn a_runc_container_runs_inside_a_managed_identity() {
    // The identity binds `parent` with its subtree; runc runs in `parent/runner` and puts
    // the container in `parent/ctr` (a cgroup with no processes of its own can enable
    // controllers for its children, as runc does).
    let parent = TestCgroup::new("runtime");
    let runner = parent.child("runner");
    bundle(&format!("{}/ctr", relative(&parent)));
    let rules = "  file:\n    - path: /secret\n      action: deny\n";
    let dirs = AgentDirs::new("runtime", &policy("runtime-policy", &parent, rules));
    let agent = Agent::start(&dirs, "detach");

    // Hardened defaults: the runtime's set-up is the identity's own operations.
    let (code, output) = run_container(&runner.path, "hardened");
    assert_ne!(code, 0, "runc must not start a container without allowMounts/allowFilelessExec:\n{output}");
    let refused = records_with(&agent, |r| field(r, "reason") == "restricted")
        .unwrap_or_else(|| panic!("no restricted verdict; runc said:\n{output}"));
    assert_eq!(field(&refused, "identity"), "runtime-policy", "{refused}");
    let _ = Command::new(runc()).args(["--root", "/run/runc-test", "delete", "--force", "hardened"]).status();

    // Allowed by the policy: the container starts and runs its entrypoint, and the file
    // rule still holds inside it (the path as the container sees it).
    dirs.set_policy(&policy(
        "runtime-policy",
        &parent,
        &format!("  allowMounts: true\n  allowFilelessExec: true\n{rules}"),
    ));
    agent.reload();
    agent.wait_record(|r| field(r, "type") == "policy" && r["generation"] == 2);
    let (code, output) = run_container(&runner.path, "allowed");
    assert_eq!(code, 0, "runc run failed:\n{output}");
    assert!(output.contains("started"), "the entrypoint did not run:\n{output}");
    secret_denied(&agent, &output);
}

#[test]
fn a_named_runtime_sets_containers_up_under_the_hardened_defaults() {
    let parent = TestCgroup::new("named-runtime");
    let runner = parent.child("runner");
    bundle(&format!("{}/ctr", relative(&parent)));
    let rules = format!("  runtimes: [{}]\n  file:\n    - path: /secret\n      action: deny\n", runc());
    let dirs = AgentDirs::new("named-runtime", &policy("runtime-policy", &parent, &rules));
    let agent = Agent::start(&dirs, "detach");

    // runc's memfd re-exec, mounts and change of root pass: the container starts.
    let (code, output) = run_container(&runner.path, "named");
    assert_eq!(code, 0, "runc run failed with the runtime named:\n{output}");
    assert!(output.contains("started"), "the entrypoint did not run:\n{output}");
    // File rules judged the runtime's tree throughout, and judge the entrypoint.
    secret_denied(&agent, &output);
    // The entrypoint's exec ended the exemption: its own mount is refused and reported.
    assert!(
        output.contains("mount=") && !output.contains("mount=0"),
        "the entrypoint's mount must fail:\n{output}"
    );
    let refused = records_with(&agent, |r| field(r, "reason") == "restricted" && field(r, "hook") == "mount")
        .unwrap_or_else(|| panic!("no restricted verdict for the entrypoint's mount; runc said:\n{output}"));
    assert_eq!(field(&refused, "identity"), "runtime-policy", "{refused}");
    assert_eq!(field(&refused, "comm"), "mount", "the entrypoint's mount, not runc's: {refused}");
}
