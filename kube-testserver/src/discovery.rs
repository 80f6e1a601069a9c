//! `/version`, `/api`, `/apis` and the per-group-version resource lists, built from the
//! registered resources, for clients that discover before they list.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::resource::Resource;

/// The discovery document for `path`, or `None` if it is not a discovery path.
pub(crate) fn document(resources: &[Resource], path: &str) -> Option<Value> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => Some(json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0",
            "platform": "linux/amd64",
        })),
        ["api"] => Some(json!({ "kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"] })),
        ["apis"] => Some(group_list(resources)),
        ["api", version] => resource_list(resources, "", version),
        ["apis", group, version] => resource_list(resources, group, version),
        _ => None,
    }
}

fn group_list(resources: &[Resource]) -> Value {
    let groups: BTreeSet<&str> =
        resources.iter().map(|r| r.group.as_str()).filter(|g| !g.is_empty()).collect();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            let versions: BTreeSet<&str> =
                resources.iter().filter(|r| r.group == group).map(|r| r.version.as_str()).collect();
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
                .collect();
            json!({ "name": group, "versions": versions, "preferredVersion": versions[0] })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn resource_list(resources: &[Resource], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> =
        resources.iter().filter(|r| r.group == group && r.version == version).collect();
    let first = served.first()?;
    let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let mut entries = Vec::new();
    for r in &served {
        entries.push(json!({
            "name": r.plural,
            "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        }));
        if r.status_subresource {
            entries.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": first.api_version(),
        "resources": entries,
    }))
}
