//! Kubernetes pods on this node: where the kubelet puts their containers' cgroups, and
//! what the agent knows of each pod (from the pod watch and the OCI hook).
//!
//! The kubelet names cgroups the same way under both of its drivers, only spelled
//! differently:
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID with
//!   _ for ->.slice/cri-containerd-<ID>.scope` (CRI-O: `crio-<ID>.scope`);
//! - cgroupfs: `/kubepods/burstable/pod<UID>/<ID>`.
//!
//! Guaranteed pods sit directly under the kubepods cgroup, and a kubelet `--cgroup-root`
//! adds components in front (`/kubelet.slice/kubelet-kubepods.slice/...`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{daemon::identity::cgroup_names::container_id_of, policy::pods::PodContainer};

/// A container cgroup of a pod, as its path names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup<'a> {
    pub pod_uid: String,
    pub container_id: &'a str,
    /// The path is the container's own cgroup, not a cgroup below it.
    pub exact: bool,
}

/// The pod and container a cgroup path belongs to, if the kubelet made it (a cgroup of a
/// container, or below one). Never under `/user.slice`, where users create cgroups.
pub fn parse(path: &str) -> Option<ContainerCgroup<'_>> {
    if path.starts_with("/user.slice/") {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut seen_kubepods = false;
    for (i, part) in parts.iter().enumerate() {
        seen_kubepods |= part.contains("kubepods");
        if !seen_kubepods {
            continue;
        }
        let Some(uid) = pod_uid(part) else { continue };
        let id = container_id_of(parts.get(i + 1)?)?;
        return Some(ContainerCgroup { pod_uid: uid, container_id: id, exact: parts.len() == i + 2 });
    }
    None
}

/// The pod UID a pod cgroup's name carries: `pod<UID>` (cgroupfs) or
/// `<parent>-pod<UID with _>.slice` (systemd).
fn pod_uid(name: &str) -> Option<String> {
    let uid = if let Some(stem) = name.strip_suffix(".slice") {
        stem.rsplit_once("-pod")?.1.replace('_', "-")
    } else {
        name.strip_prefix("pod")?.to_owned()
    };
    // UUIDs (36 characters) and the 32 hex digits of static pods' hashed UIDs.
    let ok = (32..=36).contains(&uid.len())
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && !uid.starts_with('-');
    ok.then(|| uid.to_ascii_lowercase())
}

/// The container id a runtime reports (`containerd://<ID>`, `cri-o://<ID>`) without its
/// scheme.
pub fn bare_container_id(reported: &str) -> &str {
    reported.rsplit_once("://").map_or(reported, |(_, id)| id)
}

/// One pod on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Container id → container name (app, init and ephemeral containers; never the
    /// sandbox).
    pub containers: BTreeMap<String, String>,
}

/// Names a verdict carries for a process in a pod's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub container: String,
    pub service_account: String,
}

/// Containers a pod may carry that its status does not (yet) name: announced by the hook.
/// Bounded, so a pod whose containers restart forever does not grow without end.
const ANNOUNCED_KEPT: usize = 64;

/// Keeps the containers `old` knew that `pod`'s status does not name yet.
fn keep_announced(pod: &mut PodInfo, old: PodInfo) {
    for (id, name) in old.containers {
        if pod.containers.len() >= ANNOUNCED_KEPT {
            break;
        }
        pod.containers.entry(id).or_insert(name);
    }
}

/// A change the pod watch reports.
#[derive(Debug, Clone)]
pub enum PodsChange {
    Upsert(PodInfo),
    Remove(String),
    /// A complete listing (start, or a re-list after the watch lost its place).
    Resync(Vec<PodInfo>),
}

/// The pods on this node by UID.
#[derive(Debug, Clone, Default)]
pub struct Pods {
    by_uid: BTreeMap<String, PodInfo>,
}

impl Pods {
    /// Adds or replaces a pod from the watch. Containers the OCI hook announced before
    /// the pod's status listed them are kept.
    pub fn upsert(&mut self, mut pod: PodInfo) {
        if let Some(old) = self.by_uid.remove(&pod.uid) {
            keep_announced(&mut pod, old);
        }
        self.by_uid.insert(pod.uid.clone(), pod);
    }

    pub fn change(&mut self, change: PodsChange) {
        match change {
            PodsChange::Upsert(pod) => self.upsert(pod),
            PodsChange::Remove(uid) => self.remove(&uid),
            PodsChange::Resync(pods) => self.replace_all(pods),
        }
    }

    pub fn remove(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }

    /// Replaces every pod (a re-list), keeping hook-announced containers of pods that
    /// remain.
    pub fn replace_all(&mut self, pods: Vec<PodInfo>) {
        let mut old = std::mem::take(&mut self.by_uid);
        for mut pod in pods {
            if let Some(previous) = old.remove(&pod.uid) {
                keep_announced(&mut pod, previous);
            }
            self.by_uid.insert(pod.uid.clone(), pod);
        }
    }

    /// Records a container the OCI hook announced for a known pod.
    pub fn add_container(&mut self, uid: &str, id: &str, name: &str) -> bool {
        match self.by_uid.get_mut(uid) {
            Some(pod) => {
                pod.containers.insert(id.to_owned(), name.to_owned());
                true
            }
            None => false,
        }
    }

    /// Every pod, for saving.
    pub fn all(&self) -> Vec<PodInfo> {
        self.by_uid.values().cloned().collect()
    }

    pub fn get(&self, uid: &str) -> Option<&PodInfo> {
        self.by_uid.get(uid)
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// The known container at a cgroup path (its own cgroup or one below it).
    pub fn container_at(&self, path: &str) -> Option<(&PodInfo, &str, bool)> {
        let cgroup = parse(path)?;
        let pod = self.by_uid.get(&cgroup.pod_uid)?;
        let name = pod.containers.get(cgroup.container_id)?;
        Some((pod, name.as_str(), cgroup.exact))
    }

    /// What a pod selector is matched against, for the container cgroup at `path`.
    pub fn selectable(&self, path: &str) -> Option<PodContainer<'_>> {
        let (pod, container, exact) = self.container_at(path)?;
        exact.then_some(PodContainer {
            namespace: &pod.namespace,
            labels: &pod.labels,
            service_account: &pod.service_account,
            container,
        })
    }

    /// The names a verdict of a process in the cgroup at `path` carries.
    pub fn reference(&self, path: &str) -> Option<PodRef> {
        let (pod, container, _) = self.container_at(path)?;
        Some(PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            container: container.to_owned(),
            service_account: pod.service_account.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1d0b7e4a5f8c6d2e1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
    const UID: &str = "0b5c7a1e-94d2-4c1f-9a57-2f3b8d6e1c40";

    #[test]
    fn parses_the_systemd_driver() {
        let u = UID.replace('-', "_");
        for path in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
            ),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope"),
            format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
            ),
        ] {
            let c = parse(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!((c.pod_uid.as_str(), c.container_id, c.exact), (UID, ID, true), "{path}");
        }
    }

    #[test]
    fn parses_the_cgroupfs_driver() {
        for path in [format!("/kubepods/burstable/pod{UID}/{ID}"), format!("/kubepods/pod{UID}/{ID}")] {
            let c = parse(&path).unwrap();
            assert_eq!((c.pod_uid.as_str(), c.container_id, c.exact), (UID, ID, true), "{path}");
        }
        let below = format!("/kubepods/besteffort/pod{UID}/{ID}/worker");
        assert!(!parse(&below).unwrap().exact);
        let static_pod = format!("/kubepods/pod{}/{ID}", "a".repeat(32));
        assert_eq!(parse(&static_pod).unwrap().pod_uid, "a".repeat(32));
    }

    #[test]
    fn refuses_what_the_kubelet_did_not_make() {
        // The pod cgroup itself, the sandbox's conmon, a user's look-alike, no kubepods.
        assert_eq!(parse(&format!("/kubepods/burstable/pod{UID}")), None);
        assert_eq!(parse(&format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}.scope")), None);
        assert_eq!(parse(&format!("/user.slice/kubepods/pod{UID}/{ID}")), None);
        assert_eq!(parse(&format!("/system.slice/pod{UID}/{ID}")), None);
        assert_eq!(parse(&format!("/kubepods/podnot-a-uid/{ID}")), None);
    }

    #[test]
    fn hook_announced_containers_survive_watch_updates() {
        let mut pods = Pods::default();
        let pod = PodInfo {
            uid: UID.into(),
            namespace: "shop".into(),
            name: "cart-0".into(),
            ..PodInfo::default()
        };
        pods.upsert(pod.clone());
        assert!(pods.add_container(UID, ID, "app"));
        pods.upsert(pod.clone());
        pods.replace_all(vec![pod]);
        let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        let reference = pods.reference(&path).unwrap();
        assert_eq!((reference.name.as_str(), reference.container.as_str()), ("cart-0", "app"));
        assert_eq!(pods.selectable(&path).unwrap().namespace, "shop");
        assert!(
            pods.selectable(&format!("{path}/sub")).is_none(),
            "only the container's own cgroup is selected"
        );
        pods.remove(UID);
        assert!(pods.reference(&path).is_none());
        assert!(!pods.add_container(UID, ID, "app"));
    }
}
