//! Selectors: which cgroups a policy's identity governs, checked and normalised.

use super::{model, paths::normalise};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorSpec {
    CgroupPath { path: String, subtree: bool },
    SystemdUnit { unit: String, subtree: bool },
    ContainerId { id: String, subtree: bool },
    Pod { pod: super::pods::PodMatch, subtree: bool },
}

pub fn selector(s: &model::Selector) -> Result<SelectorSpec, (String, String)> {
    let set = [s.cgroup_path.is_some(), s.systemd_unit.is_some(), s.container_id.is_some(), s.pod.is_some()];
    match set.iter().filter(|x| **x).count() {
        0 => {
            return Err((
                "spec.selector".into(),
                "is empty; set one of cgroupPath, systemdUnit, containerId, pod".into(),
            ));
        }
        1 => {}
        _ => {
            return Err((
                "spec.selector".into(),
                "sets more than one of cgroupPath, systemdUnit, containerId, pod".into(),
            ));
        }
    }
    let subtree = s.subtree;
    if let Some(pod) = &s.pod {
        return Ok(SelectorSpec::Pod { pod: super::pods::validate(pod)?, subtree });
    }
    if let Some(path) = &s.cgroup_path {
        let path = normalise(path).map_err(|p| ("spec.selector.cgroupPath".to_owned(), p))?;
        if path == "/" {
            return Err((
                "spec.selector.cgroupPath".into(),
                "selects the whole machine; name a cgroup below the root".into(),
            ));
        }
        return Ok(SelectorSpec::CgroupPath { path, subtree });
    }
    if let Some(unit) = &s.systemd_unit {
        let known = [".service", ".scope", ".slice"];
        if unit.contains('/') || !known.iter().any(|k| unit.ends_with(k)) || unit.len() <= 8 {
            return Err((
                "spec.selector.systemdUnit".into(),
                format!("{unit:?} is not a unit name like payments.service"),
            ));
        }
        return Ok(SelectorSpec::SystemdUnit { unit: unit.clone(), subtree });
    }
    let id = s.container_id.as_deref().unwrap_or_default().to_ascii_lowercase();
    // The full id: a prefix would also select any other container (or a cgroup someone
    // named to look like one) that shares it.
    if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err((
            "spec.selector.containerId".into(),
            format!("{id:?} is not a full container id (64 hex digits)"),
        ));
    }
    Ok(SelectorSpec::ContainerId { id, subtree })
}
