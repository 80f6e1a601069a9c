//! Cgroup discovery: which cgroups each identity's selector picks.

pub mod cgroup_names;
pub mod containers;
pub mod kubepods;

use cgroup_names::container_id_of;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{
    daemon::identity::kubepods::Pods,
    policy::{
        compile::ResolvedBinding,
        validate::{SelectorSpec, Valid},
    },
};

/// Deepest level walked below the cgroup root.
pub const MAX_SCAN_DEPTH: usize = 32;

/// A cgroup v2 directory: its path relative to the root (`/a/b`) and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub path: String,
    pub id: u64,
}

/// Every cgroup under `root` (the root itself as `/`). Cgroups that vanish mid-walk are
/// skipped.
pub fn scan(root: &Path) -> Vec<Cgroup> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), "/".to_owned(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(meta) = fs::metadata(&dir) else { continue };
        out.push(Cgroup { path: rel.clone(), id: meta.ino() });
        if depth >= MAX_SCAN_DEPTH {
            continue;
        }
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let child_rel = if rel == "/" { format!("/{name}") } else { format!("{rel}/{name}") };
                stack.push((entry.path(), child_rel, depth + 1));
            }
        }
    }
    out
}

/// Whether process `pid` runs in a cgroup that `bindings` (cgroup id → covers its
/// subtree) puts under an identity, judged as the kernel programs do: the cgroup itself
/// bound, or an ancestor bound with its subtree. Unknown (the process is gone, cgroup v2
/// not found) counts as managed.
pub fn pid_is_managed(pid: i32, bindings: &BTreeMap<u64, bool>) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return true };
    let Some(relative) = text.lines().find_map(|l| l.strip_prefix("0::")) else { return true };
    let Some(mount) = cgroup2_mount() else { return true };
    let mut dir = mount.join(relative.trim_start_matches('/'));
    let mut level = 0;
    loop {
        let Ok(meta) = fs::metadata(&dir) else { return true };
        if let Some(subtree) = bindings.get(&meta.ino())
            && (level == 0 || *subtree)
        {
            return true;
        }
        if dir == mount || !dir.pop() {
            return false;
        }
        level += 1;
    }
}

/// A path relative to the cgroup v2 hierarchy's root, made relative to `root` (the
/// agent's `--cgroup-root`): `None` if it lies outside.
pub fn relative_to_root(root: &Path, hierarchy_path: &str) -> Option<String> {
    let mount = cgroup2_mount()?;
    let prefix = root.strip_prefix(&mount).ok()?;
    let prefix = format!("/{}", prefix.display());
    let prefix = prefix.trim_end_matches('/');
    let rest = hierarchy_path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some("/".to_owned());
    }
    rest.starts_with('/').then(|| rest.to_owned())
}

/// Where cgroup v2 is mounted (read once: the agent never remounts it).
fn cgroup2_mount() -> Option<PathBuf> {
    static MOUNT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
            mounts.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
                (kind == "cgroup2").then(|| PathBuf::from(dir))
            })
        })
        .clone()
}

/// The id of the cgroup at `path` (relative to `root`), if it exists.
pub fn id_of(root: &Path, path: &str) -> Option<u64> {
    fs::metadata(root.join(path.trim_start_matches('/'))).ok().map(|m| m.ino())
}

/// Whether a selector picks the cgroup at `path` (relative to the root).
///
/// Names are only trusted where unprivileged users cannot create cgroups:
/// - `systemdUnit` matches a unit of the system manager: `/system.slice/NAME` or below
///   nested system slices (`/system.slice/system-getty.slice/NAME`), never a cgroup of the
///   same name in a user's delegated tree (`/user.slice/...`) or anywhere else.
/// - `containerId` matches the full id in a runtime's cgroup name (`docker-ID.scope`,
///   `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`, or a bare ID under
///   the cgroupfs driver), never under `/user.slice` (rootless runtimes live in trees
///   their users control).
/// - `pod` matches the cgroup of a container of a pod on this node that `pods` knows
///   (from the pod watch or the OCI hook), by the kubelet's naming (see `kubepods`).
pub fn selects(selector: &SelectorSpec, path: &str, pods: &Pods) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    match selector {
        SelectorSpec::CgroupPath { path: wanted, .. } => path == wanted,
        SelectorSpec::SystemdUnit { unit, .. } => name == unit && under_system_slice(path),
        SelectorSpec::ContainerId { id, .. } => {
            !path.starts_with("/user.slice/") && container_id_of(name).is_some_and(|found| found == id)
        }
        SelectorSpec::Pod { pod, .. } => pods.selectable(path).is_some_and(|c| pod.matches(&c)),
    }
}

/// `/system.slice/[X.slice/...]NAME`: every component between is a slice.
fn under_system_slice(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/system.slice/") else { return false };
    let mut parts: Vec<&str> = rest.split('/').collect();
    parts.pop();
    // Unit names are case-sensitive: `X.SLICE` is not a slice.
    #[expect(clippy::case_sensitive_file_extension_comparisons, reason = "unit suffixes, not file names")]
    parts.iter().all(|p| p.ends_with(".slice") && p.len() > ".slice".len())
}

fn subtree(selector: &SelectorSpec) -> bool {
    match selector {
        SelectorSpec::CgroupPath { subtree, .. }
        | SelectorSpec::SystemdUnit { subtree, .. }
        | SelectorSpec::ContainerId { subtree, .. }
        | SelectorSpec::Pod { subtree, .. } => *subtree,
    }
}

/// The bindings the policies' selectors give over `cgroups`.
pub fn resolve(
    policies: &[impl std::borrow::Borrow<Valid>],
    cgroups: &[Cgroup],
    pods: &Pods,
) -> Vec<ResolvedBinding> {
    let mut out = Vec::new();
    for policy in policies.iter().map(std::borrow::Borrow::borrow) {
        for cgroup in cgroups.iter().filter(|c| selects(&policy.selector, &c.path, pods)) {
            out.push(ResolvedBinding {
                identity: policy.identity.clone(),
                cgroup_id: cgroup.id,
                subtree: subtree(&policy.selector),
            });
        }
    }
    out
}

/// Cgroup id → path, for naming cgroups in verdicts.
pub fn paths_by_id(cgroups: &[Cgroup]) -> BTreeMap<u64, String> {
    cgroups.iter().map(|c| (c.id, c.path.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1d0b7e4a5f8c6d2e1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";

    #[test]
    fn recognises_runtime_cgroup_names() {
        for name in [
            format!("docker-{ID}.scope"),
            format!("cri-containerd-{ID}.scope"),
            format!("crio-{ID}.scope"),
            format!("libpod-{ID}.scope"),
            ID.to_owned(),
        ] {
            assert_eq!(container_id_of(&name), Some(ID), "{name}");
        }
        assert_eq!(container_id_of(&format!("crio-conmon-{ID}.scope")), None);
        assert_eq!(container_id_of("payments.service"), None);
    }

    #[test]
    fn selectors_pick_the_right_cgroups() {
        let none = Pods::default();
        let by_path = SelectorSpec::CgroupPath { path: "/demo/payments".into(), subtree: true };
        assert!(selects(&by_path, "/demo/payments", &none));
        assert!(!selects(&by_path, "/demo/payments/worker", &none));
        let by_unit = SelectorSpec::SystemdUnit { unit: "ci.service".into(), subtree: true };
        assert!(selects(&by_unit, "/system.slice/ci.service", &none));
        assert!(selects(&by_unit, "/system.slice/system-ci.slice/ci.service", &none));
        assert!(!selects(&by_unit, "/system.slice/ci.service.d", &none));
        // Look-alikes where others can create cgroups are never the unit.
        assert!(!selects(
            &by_unit,
            "/user.slice/user-1000.slice/user@1000.service/app.slice/ci.service",
            &none
        ));
        assert!(!selects(&by_unit, "/ci.service", &none));
        assert!(!selects(&by_unit, "/system.slice/other.service/ci.service", &none));
        let by_id = SelectorSpec::ContainerId { id: ID.into(), subtree: true };
        assert!(selects(
            &by_id,
            &format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            &none
        ));
        assert!(selects(&by_id, &format!("/docker/{ID}"), &none));
        assert!(!selects(&by_id, "/docker/other", &none));
        // A prefix of the id is another container; a user's tree is not the runtime's.
        let other = format!("{}0000", &ID[..60]);
        assert!(!selects(&by_id, &format!("/system.slice/docker-{other}.scope"), &none));
        assert!(!selects(&by_id, &format!("/user.slice/user-1000.slice/docker-{ID}.scope"), &none));
    }

    #[test]
    fn scan_walks_a_directory_tree() {
        let dir = std::env::temp_dir().join(format!("enforcer-scan-{}", std::process::id()));
        fs::create_dir_all(dir.join("a/b")).unwrap();
        let found: Vec<String> = scan(&dir).into_iter().map(|c| c.path).collect();
        fs::remove_dir_all(&dir).unwrap();
        assert!(found.contains(&"/".to_owned()));
        assert!(found.contains(&"/a".to_owned()));
        assert!(found.contains(&"/a/b".to_owned()));
    }
}
