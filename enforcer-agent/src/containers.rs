//! Containers announced by the OCI hook before their first instruction: their cgroup is
//! checked against what the annotations claim, the pod recorded, and the cgroup bound to
//! every identity whose pod selector picks it.

use crate::{
    api::{
        ContainerBound, ContainerStart,
        server::{ContainerAnswer, Failure},
    },
    engine::Engine,
    identity,
    kubepods::{self, PodInfo},
};

fn bad(message: String) -> Failure {
    Failure { status: 400, message }
}

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
    let path = identity::relative_to_root(engine.cgroup_root(), hierarchy_path).ok_or_else(|| {
        bad(format!(
            "cgroup {hierarchy_path} of process {} is outside {}",
            start.pid,
            engine.cgroup_root().display()
        ))
    })?;
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
    let id =
        identity::id_of(engine.cgroup_root(), &path).ok_or_else(|| bad(format!("cgroup {path} is gone")))?;
    engine
        .bind_cgroup(identity::Cgroup { path: path.clone(), id })
        .map_err(|e| Failure { status: 500, message: format!("binding cgroup {path}: {e}") })?;
    let identities = engine.identities_of(id);
    if !identities.is_empty() {
        // The runtime still has to finish the root (mounts, `pivot_root`) from inside the
        // now-managed cgroup: allowed for this process until it executes the entrypoint.
        engine.begin_setup(start.pid, id).map_err(|e| Failure {
            status: 500,
            message: format!("exempting the container's set-up: {e}"),
        })?;
    }
    Ok(ContainerAnswer::Bound(ContainerBound { cgroup: Some(path), identities }))
}
