//! The container ids that runtimes write into cgroup directory names.

/// Prefixes and suffix container runtimes give a container's cgroup directory.
const RUNTIME_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];

/// The container id a cgroup directory name carries, if any: `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, or a bare
/// 64-digit id (cgroupfs drivers: `/docker/<id>`, `/kubepods/.../<id>`).
pub fn container_id_of(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    let id = RUNTIME_PREFIXES.iter().find_map(|p| stem.strip_prefix(p)).unwrap_or(stem);
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}
