//! The kinds of object the server knows, and how a URL path names them.

/// One kind of object the server serves, registered by the test that starts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group: `""` for the core group (`/api/v1`), otherwise e.g. `"enforcer.dev"`.
    pub group: String,
    pub version: String,
    /// Lower-case plural used in URLs, e.g. `"pods"`.
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// With a status subresource, writes to the object ignore `.status` and writes to
    /// `/status` change nothing else.
    pub status_subresource: bool,
}

impl Resource {
    /// `"v1"` for the core group, `"group/version"` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }
}

/// Core `v1` Pod: namespaced, with a status subresource.
pub fn pods() -> Resource {
    Resource {
        group: String::new(),
        version: "v1".into(),
        plural: "pods".into(),
        kind: "Pod".into(),
        namespaced: true,
        status_subresource: true,
    }
}

/// `enforcer.dev/v1` Policy: cluster-scoped, with a status subresource.
pub fn policies() -> Resource {
    Resource {
        group: "enforcer.dev".into(),
        version: "v1".into(),
        plural: "policies".into(),
        kind: "Policy".into(),
        namespaced: false,
        status_subresource: true,
    }
}

/// Index of a resource in the server's registration list.
pub(crate) type ResourceId = usize;

/// The registered resources, in registration order.
#[derive(Debug)]
pub(crate) struct Registry {
    resources: Vec<Resource>,
}

impl Registry {
    pub(crate) fn new(resources: Vec<Resource>) -> Self {
        Self { resources }
    }

    pub(crate) fn get(&self, id: ResourceId) -> &Resource {
        &self.resources[id]
    }

    pub(crate) fn all(&self) -> &[Resource] {
        &self.resources
    }

    pub(crate) fn by_api_version_kind(&self, api_version: &str, kind: &str) -> Option<ResourceId> {
        self.resources.iter().position(|r| r.api_version() == api_version && r.kind == kind)
    }

    fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<ResourceId> {
        self.resources.iter().position(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Resolves a request path to what it names; `None` for paths that name no resource.
    pub(crate) fn route(&self, path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        // `namespaces/{ns}/{plural}` is a namespaced path only when such a plural is
        // registered as namespaced; otherwise `namespaces` itself may be the plural.
        if let ["namespaces", namespace, plural, tail @ ..] = rest
            && let Some(id) = self.by_plural(group, version, plural)
            && self.resources[id].namespaced
        {
            return Target::new(id, Some(namespace), tail);
        }
        let [plural, tail @ ..] = rest else { return None };
        let id = self.by_plural(group, version, plural)?;
        if self.resources[id].namespaced && !tail.is_empty() {
            // A namespaced object cannot be named without its namespace.
            return None;
        }
        Target::new(id, None, tail)
    }
}

/// What a request path names: a collection, one object, or one object's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) resource: ResourceId,
    /// `None` for cluster-scoped resources and for lists across all namespaces.
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) status: bool,
}

impl Target {
    fn new(resource: ResourceId, namespace: Option<&str>, tail: &[&str]) -> Option<Self> {
        let (name, status) = match tail {
            [] => (None, false),
            [name] => (Some(*name), false),
            [name, "status"] => (Some(*name), true),
            _ => return None,
        };
        if namespace == Some("") || name == Some("") {
            return None;
        }
        Some(Self {
            resource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::new(vec![pods(), policies()])
    }

    #[test]
    fn routes_core_and_group_paths() {
        let r = registry();
        let t = r.route("/api/v1/pods").unwrap();
        assert_eq!((t.resource, t.namespace, t.name, t.status), (0, None, None, false));
        let t = r.route("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (t.resource, t.namespace.as_deref(), t.name.as_deref(), t.status),
            (0, Some("default"), Some("web"), true)
        );
        let t = r.route("/apis/enforcer.dev/v1/policies/p1/status").unwrap();
        assert_eq!((t.resource, t.namespace, t.name.as_deref(), t.status), (1, None, Some("p1"), true));
    }

    #[test]
    fn rejects_paths_that_name_nothing() {
        let r = registry();
        assert_eq!(r.route("/api/v1/pods/web"), None, "a pod needs its namespace");
        assert_eq!(
            r.route("/apis/enforcer.dev/v1/namespaces/a/policies"),
            None,
            "policies are cluster-scoped"
        );
        assert_eq!(r.route("/apis/enforcer.dev/v2/policies"), None);
        assert_eq!(r.route("/api/v1/namespaces/a/pods/web/log"), None);
        assert_eq!(r.route("/healthz"), None);
    }
}
