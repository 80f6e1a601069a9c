//! Containers announced by the OCI hook before their first instruction: their cgroup is
//! checked against what the annotations claim, the pod recorded, and the cgroup bound to
//! every identity whose pod selector picks it.

use crate::{
    daemon::command::{ContainerAnswer, Failure},
    daemon::engine::Engine,
    daemon::identity,
    daemon::identity::kubepods::{self, PodInfo},
    daemon::reports::{ContainerBound, ContainerStart},
    policy::validate::SelectorSpec,
};

fn bad(message: String) -> Failure {
    Failure { status: 400, message }
}

/// The sub-cgroup crun puts a container's processes in, below the cgroup the runtime
/// made for the container (systemd driver).
const CRUN_LEAF: &str = "/container";

/// Binds the container's cgroup. With `kubernetes`, a pod the watch has not delivered is
/// answered [`ContainerAnswer::UnknownPod`] (its labels must come from the API server);
/// without it, the annotations alone describe the pod (no labels, no service account).
pub fn start(
    engine: &mut Engine,
    start: &ContainerStart,
    kubernetes: bool,
) -> Result<ContainerAnswer, Failure> {
    if start.sandbox {
        return Ok(ContainerAnswer::Bound(ContainerBound { cgroup: None, identities: Vec::new() }));
    }
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", start.pid))
        .map_err(|e| bad(format!("reading the cgroup of process {}: {e}", start.pid)))?;
    let hierarchy_path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| bad(format!("process {} is in no cgroup v2", start.pid)))?;
    let own = identity::relative_to_root(engine.cgroup_root(), hierarchy_path).ok_or_else(|| {
        bad(format!(
            "cgroup {hierarchy_path} of process {} is outside {}",
            start.pid,
            engine.cgroup_root().display()
        ))
    })?;
    let own_id =
        identity::id_of(engine.cgroup_root(), &own).ok_or_else(|| bad(format!("cgroup {own} is gone")))?;
    // A process of a container being created is its only one: a running container's
    // process cannot be passed off as one (its set-up exemption would follow).
    let procs =
        std::fs::read_to_string(engine.cgroup_root().join(own.trim_start_matches('/')).join("cgroup.procs"))
            .map_err(|e| bad(format!("reading the processes of cgroup {own}: {e}")))?;
    if procs.split_whitespace().ne([start.pid.to_string().as_str()]) {
        return Err(bad(format!(
            "process {} is not the only process of cgroup {own}: not a container being created",
            start.pid
        )));
    }
    let path = own
        .strip_suffix(CRUN_LEAF)
        .filter(|p| kubepods::parse(p).is_some_and(|c| c.exact))
        .unwrap_or(&own)
        .to_owned();
    // The cgroup, which the runtime made, must say what the annotations say: a pod
    // selector trusts the kubelet's naming, never a claim alone.
    let cgroup = kubepods::parse(&path).filter(|c| c.exact).ok_or_else(|| {
        bad(format!("cgroup {path} is not a pod container's cgroup (kubepods/.../pod<uid>/<id>)"))
    })?;
    if cgroup.pod_uid != start.pod_uid.to_ascii_lowercase() || cgroup.container_id != start.container_id {
        return Err(bad(format!(
            "cgroup {path} belongs to pod {} container {}, not pod {} container {}",
            cgroup.pod_uid, cgroup.container_id, start.pod_uid, start.container_id
        )));
    }
    let id =
        identity::id_of(engine.cgroup_root(), &path).ok_or_else(|| bad(format!("cgroup {path} is gone")))?;
    // No pod selector names the namespace: nothing to look up (and no need of the API
    // server, which may itself be starting in this container).
    let selected = engine
        .policies()
        .iter()
        .any(|p| matches!(&p.selector, SelectorSpec::Pod { pod, .. } if pod.namespace == start.namespace));
    if !selected {
        return Ok(ContainerAnswer::Bound(ContainerBound {
            cgroup: Some(path),
            identities: engine.identities_of(id),
        }));
    }
    if engine.pods().get(&cgroup.pod_uid).is_none() {
        if kubernetes {
            return Ok(ContainerAnswer::UnknownPod);
        }
        engine.update_pods(|pods| {
            pods.upsert(PodInfo {
                uid: cgroup.pod_uid.clone(),
                namespace: start.namespace.clone(),
                name: start.pod.clone(),
                ..PodInfo::default()
            });
        });
    }
    engine.update_pods(|pods| {
        pods.add_container(&cgroup.pod_uid, &start.container_id, &start.container);
    });
    engine
        .bind_cgroup(identity::Cgroup { path: path.clone(), id })
        .map_err(|e| Failure { status: 500, message: format!("binding cgroup {path}: {e}") })?;
    let identities = engine.identities_of(id);
    if !identities.is_empty() {
        // The runtime still has to finish the container (mounts, `pivot_root`, sysctls)
        // from inside the now-managed cgroup: this process runs unmanaged until it
        // executes the entrypoint.
        engine.begin_setup(start.pid, own_id).map_err(|e| Failure {
            status: 500,
            message: format!("exempting the container's set-up: {e}"),
        })?;
    }
    Ok(ContainerAnswer::Bound(ContainerBound { cgroup: Some(path), identities }))
}
