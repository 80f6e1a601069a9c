//! `enforcer oci-hook`: run by the container runtime as a `createRuntime` hook, after the container's cgroup exists and before its process
//! runs its first instruction. It reads the runtime's state on stdin, finds the pod in
//! the CRI annotations and asks the agent to bind the container's cgroup.
//!
//! Fails closed: when the agent cannot be reached or refuses, the hook fails, and the
//! runtime does not start the container. Containers of `enforcer-system` (the agent's
//! own) and of the namespaces given with `--fail-open-namespace` (what must run before
//! the agent or the API server, e.g. `kube-system`) start anyway when the agent or the
//! API server is unavailable, never when the agent refuses.

use std::{collections::BTreeMap, io::Read as _, path::Path, process::ExitCode};

use hyper::Method;
use serde::Deserialize;

use crate::api::{
    ContainerBound, ContainerStart,
    client::{Client, ClientError},
};

/// The runtime's state, as the OCI runtime specification gives it to hooks.
#[derive(Debug, Deserialize)]
struct State {
    id: String,
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    bundle: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// `creating` in `createRuntime` hooks.
    #[serde(default)]
    status: String,
}

/// The agent's own namespace always fails open, or it could never start again.
const AGENT_NAMESPACE: &str = "enforcer-system";

/// How long the hook waits for the agent (the runtime's own hook timeout may be longer).
const AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Annotation keys: containerd's CRI plugin, then CRI-O's.
const TYPE: [&str; 2] = ["io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"];
const NAMESPACE: [&str; 2] = ["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"];
const POD: [&str; 2] = ["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"];
const POD_UID: [&str; 2] = ["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"];
const CONTAINER: [&str; 2] = ["io.kubernetes.cri.container-name", "io.kubernetes.container.name"];

/// What to ask the agent for a container, from its id, init pid and annotations; `None`
/// for a container no CRI runtime made (nothing to do).
pub fn describe(
    id: &str,
    pid: u32,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<ContainerStart>, String> {
    let get = |keys: [&str; 2]| keys.iter().find_map(|k| annotations.get(*k)).cloned();
    let (Some(namespace), Some(pod)) = (get(NAMESPACE), get(POD)) else { return Ok(None) };
    let sandbox = get(TYPE).as_deref() == Some("sandbox");
    let pod_uid = get(POD_UID).ok_or_else(|| format!("pod {namespace}/{pod}: no pod uid annotation"))?;
    let container = match get(CONTAINER) {
        Some(name) => name,
        None if sandbox => String::new(),
        None => return Err(format!("pod {namespace}/{pod}: no container name annotation")),
    };
    if pid == 0 && !sandbox {
        return Err(format!("pod {namespace}/{pod} container {container}: the runtime gave no pid"));
    }
    Ok(Some(ContainerStart { pid, container_id: id.to_owned(), namespace, pod, pod_uid, container, sandbox }))
}

/// Whether a container starts unmanaged after `error`: only when the agent or the API
/// server is unavailable (never when the agent refused), and only in the agent's own
/// namespace or one the operator listed.
fn fails_open(error: &ClientError, namespace: &str, fail_open: &[String]) -> bool {
    let unavailable = match error {
        ClientError::Connect { .. } | ClientError::Http(_) => true,
        ClientError::Api { status, .. } => *status == 503,
    };
    unavailable && (namespace == AGENT_NAMESPACE || fail_open.iter().any(|n| n == namespace))
}

pub fn run(socket: &Path, fail_open: &[String]) -> ExitCode {
    match hook(socket, fail_open) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("enforcer oci-hook: {message}");
            ExitCode::FAILURE
        }
    }
}

fn hook(socket: &Path, fail_open: &[String]) -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|e| format!("reading the state on stdin: {e}"))?;
    let mut state: State = serde_json::from_str(&input).map_err(|e| format!("the state on stdin: {e}"))?;
    // Runtimes before OCI 1.0.2 leave the annotations out of the state: read the bundle's.
    if state.annotations.is_empty() && !state.bundle.is_empty() {
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        let config = Path::new(&state.bundle).join("config.json");
        // Fail-closed: a bundle that cannot be read might be a pod's.
        let text = std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
        let parsed: Config = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
        state.annotations = parsed.annotations;
    }
    let Some(start) = describe(&state.id, state.pid, &state.annotations)? else { return Ok(()) };
    if start.sandbox {
        return Ok(());
    }
    // Only before the container's process runs is there anything to bind in time (and a
    // set-up to exempt); `createRuntime` hooks see `creating`.
    if !state.status.is_empty() && state.status != "creating" {
        return Err(format!(
            "run as a createRuntime hook: the container is {:?}, not \"creating\"",
            state.status
        ));
    }
    let body = serde_json::to_string(&start).expect("serialises");
    let answer: Result<ContainerBound, ClientError> = super::runtime().block_on(async {
        tokio::time::timeout(
            AGENT_TIMEOUT,
            Client::new(socket).call(Method::POST, "/v1/containers", Some(body)),
        )
        .await
        .unwrap_or_else(|_| Err(ClientError::Http(format!("no answer within {} s", AGENT_TIMEOUT.as_secs()))))
    });
    let Err(e) = answer else { return Ok(()) };
    if fails_open(&e, &start.namespace, fail_open) {
        eprintln!(
            "enforcer oci-hook: {e}; pod {}/{} starts unmanaged (namespace {} fails open)",
            start.namespace, start.pod, start.namespace
        );
        return Ok(());
    }
    Err(format!("pod {}/{} container {}: {e}", start.namespace, start.pod, start.container))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reads_containerd_and_crio_annotations() {
        let containerd = annotations(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.sandbox-name", "cart-0"),
            ("io.kubernetes.cri.sandbox-uid", "u-1"),
            ("io.kubernetes.cri.container-name", "app"),
        ]);
        let crio = annotations(&[
            ("io.kubernetes.cri-o.ContainerType", "container"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.name", "cart-0"),
            ("io.kubernetes.pod.uid", "u-1"),
            ("io.kubernetes.container.name", "app"),
        ]);
        for a in [containerd, crio] {
            let start = describe("abc", 42, &a).unwrap().unwrap();
            assert_eq!(
                start,
                ContainerStart {
                    pid: 42,
                    container_id: "abc".into(),
                    namespace: "shop".into(),
                    pod: "cart-0".into(),
                    pod_uid: "u-1".into(),
                    container: "app".into(),
                    sandbox: false,
                }
            );
        }
    }

    #[test]
    fn only_unavailability_fails_open_and_only_where_listed() {
        let gone = || ClientError::Connect {
            path: "/run/enforcer/enforcer.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let listed = vec!["kube-system".to_owned()];
        assert!(fails_open(&gone(), "enforcer-system", &[]), "the agent's own namespace");
        assert!(fails_open(&gone(), "kube-system", &listed));
        assert!(!fails_open(&gone(), "shop", &listed));
        let api_down = ClientError::Api { status: 503, message: "pod unreadable".into() };
        assert!(fails_open(&api_down, "kube-system", &listed));
        let refused = ClientError::Api { status: 400, message: "not that pod's cgroup".into() };
        assert!(!fails_open(&refused, "kube-system", &listed), "a refusal never fails open");
        assert!(!fails_open(
            &ClientError::Api { status: 403, message: String::new() },
            "enforcer-system",
            &[]
        ));
    }

    #[test]
    fn sandboxes_and_other_containers() {
        let sandbox = annotations(&[
            ("io.kubernetes.cri.container-type", "sandbox"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.sandbox-name", "cart-0"),
            ("io.kubernetes.cri.sandbox-uid", "u-1"),
        ]);
        assert!(describe("abc", 42, &sandbox).unwrap().unwrap().sandbox);
        assert_eq!(describe("abc", 42, &BTreeMap::new()).unwrap(), None);
        let no_name = annotations(&[
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.sandbox-name", "cart-0"),
            ("io.kubernetes.cri.sandbox-uid", "u-1"),
        ]);
        assert!(describe("abc", 42, &no_name).unwrap_err().contains("container name"));
    }
}
