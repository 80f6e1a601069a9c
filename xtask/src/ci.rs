//! What the README's test command runs: every check, in order, stopping at the first failure.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    build::{self, exec, workspace_root},
    image, vm,
};

/// Kubernetes versions whose API schemas the manifests must satisfy: the oldest the
/// project supports and the newest `kubernetes-validate` knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let cargo = || {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root);
        cmd
    };
    let mut phases = Phases::start();
    phases.next("cargo fmt --check");
    exec(cargo().args(["fmt", "--all", "--check"]))?;
    phases.next("clippy, host crates (warnings are errors)");
    exec(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "enforcer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    phases.next("clippy, kernel programs (bpfel target)");
    // A target directory of its own: cargo rebuilds what RUSTC_BOOTSTRAP changes, and in
    // the shared one this check's build scripts and proc macros replaced the host's, so
    // the release build after it compiled them and every crate using them again.
    let kernel_clippy_dir = build::cargo_target_dir().join("kernel-clippy");
    exec(
        cargo().env("RUSTC_BOOTSTRAP", "1").arg("clippy").arg("--target-dir").arg(&kernel_clippy_dir).args([
            "--package",
            "enforcer-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    phases.next("unit tests");
    exec(cargo().args(["test", "--workspace", "--exclude", "enforcer-ebpf", "--exclude", "enforcer-tests"]))?;
    phases.next(&format!(
        "deploy manifests (kubectl kustomize deploy, Kubernetes schemas {KUBERNETES_VERSIONS:?})"
    ));
    deploy_manifests(&root)?;
    phases.next("container image (read back by skopeo and umoci)");
    let image = image::build(&build::agent()?, &root.join("target/image"), image::DEFAULT_TAG)?;
    image::check(&image)?;
    phases.next("VM tests");
    let result = vm::run_all(None);
    phases.end();
    result
}

/// Prints each phase's name as it starts and, at the end, how long each took: where a
/// run's time goes, without timestamps on every line.
struct Phases {
    started: Instant,
    done: Vec<(String, Duration)>,
    current: Option<(String, Instant)>,
}

impl Phases {
    fn start() -> Self {
        Self { started: Instant::now(), done: Vec::new(), current: None }
    }

    fn next(&mut self, name: &str) {
        self.finish_current();
        eprintln!("ci: {name}");
        self.current = Some((name.to_owned(), Instant::now()));
    }

    fn finish_current(&mut self) {
        if let Some((name, at)) = self.current.take() {
            self.done.push((name, at.elapsed()));
        }
    }

    fn end(mut self) {
        self.finish_current();
        for (name, took) in &self.done {
            eprintln!("ci: {:>5} s  {name}", took.as_secs());
        }
        eprintln!("ci: {:>5} s  in all", self.started.elapsed().as_secs());
    }
}

/// Renders `deploy/` as `kubectl apply -k` would, validates every object against the
/// Kubernetes schemas (unknown fields are errors) and checks what the schemas cannot:
/// that the objects name each other correctly.
fn deploy_manifests(root: &Path) -> anyhow::Result<()> {
    let output = Command::new("kubectl")
        .args(["kustomize", "deploy"])
        .current_dir(root)
        .output()
        .context("running kubectl (scripts/bootstrap.sh installs it)")?;
    if !output.status.success() {
        bail!("kubectl kustomize deploy failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let rendered = root.join("target/deploy.yaml");
    std::fs::create_dir_all(root.join("target"))?;
    std::fs::write(&rendered, &output.stdout)?;

    let mut validate = Command::new("python3");
    validate.env("PYTHONPATH", kubernetes_validate_dir()?).args([
        "-m",
        "kubernetes_validate",
        "--strict",
        "--quiet",
    ]);
    for version in KUBERNETES_VERSIONS {
        validate.args(["-k", version]);
    }
    let output = validate.arg(&rendered).output().context("running python3 -m kubernetes_validate")?;
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if said.contains("No module named kubernetes_validate") {
        bail!(
            "kubernetes-validate is not installed in {}: run scripts/bootstrap.sh",
            kubernetes_validate_dir()?.display()
        );
    }
    // With --quiet it prints only problems; an object of a kind it has no schema for is a
    // warning with exit status 0, which here counts as a failure too.
    if !output.status.success() || !said.trim().is_empty() {
        bail!("the rendered manifests ({}) do not validate:\n{said}", rendered.display());
    }

    let objects = parse_objects(&std::fs::read_to_string(&rendered)?)?;
    let problems = cross_references(&objects);
    if !problems.is_empty() {
        bail!(
            "the rendered manifests ({}) do not fit together:\n{}",
            rendered.display(),
            problems.join("\n")
        );
    }
    Ok(())
}

/// Where scripts/bootstrap.sh installs kubernetes-validate (with `pip --target`).
fn kubernetes_validate_dir() -> anyhow::Result<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(cache.join("enforcer/kubernetes-validate"))
}

/// The objects of a multi-document YAML stream.
fn parse_objects(yaml: &str) -> anyhow::Result<Vec<Value>> {
    // Empty documents are skipped.
    serde_saphyr::from_multiple(yaml).context("parsing the rendered manifests")
}

/// References between objects that the API server resolves only at run time: a wrong one
/// is accepted by `kubectl apply` and fails later (a pod that is never created, a
/// binding that grants nothing).
fn cross_references(objects: &[Value]) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let named = |kind: &str| -> BTreeSet<(String, String)> {
        objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .map(|o| (text(&o["metadata"]["namespace"]), text(&o["metadata"]["name"])))
            .collect()
    };
    let (namespaces, accounts, roles) = (named("Namespace"), named("ServiceAccount"), named("ClusterRole"));
    let mut problems = Vec::new();
    for object in objects {
        let kind = text(&object["kind"]);
        let name = format!("{kind} {}", text(&object["metadata"]["name"]));
        let namespace = text(&object["metadata"]["namespace"]);
        if !namespace.is_empty() && !namespaces.contains(&(String::new(), namespace.clone())) {
            problems.push(format!("{name}: namespace {namespace} is not among the manifests"));
        }
        match kind.as_str() {
            "DaemonSet" | "Deployment" | "StatefulSet" => {
                let template = &object["spec"]["template"];
                if let Some(selector) = object["spec"]["selector"]["matchLabels"].as_object() {
                    for (key, value) in selector {
                        if template["metadata"]["labels"][key] != *value {
                            problems
                                .push(format!("{name}: the pod template lacks the selector's label {key}"));
                        }
                    }
                }
                problems.extend(pod_references(&name, &namespace, &template["spec"], &accounts));
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let role = &object["roleRef"];
                if role["kind"] == "ClusterRole" && !roles.contains(&(String::new(), text(&role["name"]))) {
                    problems.push(format!(
                        "{name}: ClusterRole {} is not among the manifests",
                        text(&role["name"])
                    ));
                }
                for subject in object["subjects"].as_array().into_iter().flatten() {
                    let account = (text(&subject["namespace"]), text(&subject["name"]));
                    if subject["kind"] == "ServiceAccount" && !accounts.contains(&account) {
                        problems.push(format!(
                            "{name}: ServiceAccount {}/{} is not among the manifests",
                            account.0, account.1
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    problems
}

/// A pod spec's volumes, ports and service account, as its containers name them.
fn pod_references(
    name: &str,
    namespace: &str,
    pod: &Value,
    accounts: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let account = pod["serviceAccountName"].as_str().unwrap_or("default");
    if !accounts.contains(&(namespace.to_owned(), account.to_owned())) {
        problems.push(format!("{name}: ServiceAccount {namespace}/{account} is not among the manifests"));
    }
    let volumes: BTreeSet<&str> =
        pod["volumes"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    for container in pod["containers"].as_array().into_iter().flatten() {
        let container_name = container["name"].as_str().unwrap_or_default();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = mount["name"].as_str().unwrap_or_default();
            if !volumes.contains(volume) {
                problems.push(format!(
                    "{name}: container {container_name} mounts volume {volume}, which the pod lacks"
                ));
            }
        }
        let ports: BTreeSet<&str> =
            container["ports"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            if let Some(port) = container[probe]["httpGet"]["port"].as_str()
                && !ports.contains(port)
            {
                problems.push(format!(
                    "{name}: {probe} of {container_name} uses port {port}, which it does not name"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r"
apiVersion: v1
kind: Namespace
metadata: {name: ns}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: ns}
---
kind: ClusterRole
metadata: {name: role}
---
kind: ClusterRoleBinding
metadata: {name: binding}
roleRef: {kind: ClusterRole, name: role}
subjects: [{kind: ServiceAccount, name: sa, namespace: ns}]
---
kind: DaemonSet
metadata: {name: ds, namespace: ns}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      serviceAccountName: sa
      volumes: [{name: state}]
      containers:
        - name: c
          ports: [{name: metrics, containerPort: 9464}]
          readinessProbe: {httpGet: {path: /readyz, port: metrics}}
          volumeMounts: [{name: state, mountPath: /state}]
";

    fn problems(yaml: &str) -> String {
        cross_references(&parse_objects(yaml).unwrap()).join("\n")
    }

    #[test]
    fn consistent_manifests_have_no_problems() {
        assert_eq!(problems(GOOD), "");
    }

    #[test]
    fn every_dangling_reference_is_reported() {
        let bad = GOOD
            .replace("roleRef: {kind: ClusterRole, name: role}", "roleRef: {kind: ClusterRole, name: rol}")
            .replace("serviceAccountName: sa", "serviceAccountName: other")
            .replace("volumeMounts: [{name: state", "volumeMounts: [{name: data")
            .replace("port: metrics}", "port: metric}")
            .replace("labels: {app: x}", "labels: {app: y}")
            .replace("name: sa, namespace: ns}]", "name: sa, namespace: elsewhere}]");
        let all = problems(&bad);
        for want in [
            "ClusterRole rol is not among",
            "ServiceAccount elsewhere/sa is not among",
            "ServiceAccount ns/other is not among",
            "mounts volume data",
            "uses port metric",
            "lacks the selector's label app",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
    }

    #[test]
    fn the_deploy_directory_fits_together() {
        // The source files, without kustomize: every resource names its namespace itself.
        let dir = workspace_root().join("deploy");
        let mut yaml = String::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("kustomization.yaml") {
                yaml.push_str("\n---\n");
                yaml.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        assert_eq!(problems(&yaml), "");
    }
}
