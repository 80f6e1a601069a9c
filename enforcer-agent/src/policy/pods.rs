//! Pod selectors: their validation (Kubernetes name and label syntax) and matching
//! against what is known of a pod's container.

use std::collections::BTreeMap;

use super::model::PodSelector;

/// A validated pod selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMatch {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub container: Option<String>,
}

/// What the agent knows of one container of a pod on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub service_account: &'a str,
    pub container: &'a str,
}

impl PodMatch {
    pub fn matches(&self, c: &PodContainer<'_>) -> bool {
        self.namespace == c.namespace
            && self.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v))
            && self.service_account.as_deref().is_none_or(|sa| sa == c.service_account)
            && self.container.as_deref().is_none_or(|name| name == c.container)
    }
}

impl std::fmt::Display for PodMatch {
    /// `namespace shop, app=cart, serviceAccount cart, container app`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "namespace {}", self.namespace)?;
        for (k, v) in &self.labels {
            write!(f, ", {k}={v}")?;
        }
        if let Some(sa) = &self.service_account {
            write!(f, ", serviceAccount {sa}")?;
        }
        if let Some(c) = &self.container {
            write!(f, ", container {c}")?;
        }
        Ok(())
    }
}

/// Checks a selector as the API server would check the names in it.
pub fn validate(s: &PodSelector) -> Result<PodMatch, (String, String)> {
    let field = |f: &str| format!("spec.selector.pod.{f}");
    dns_label(&s.namespace).map_err(|p| (field("namespace"), p))?;
    for (key, value) in &s.match_labels {
        label_key(key).map_err(|p| (field("matchLabels"), p))?;
        label_value(value).map_err(|p| (field(&format!("matchLabels.{key}")), p))?;
    }
    if let Some(sa) = &s.service_account {
        dns_subdomain(sa).map_err(|p| (field("serviceAccount"), p))?;
    }
    if let Some(container) = &s.container {
        dns_label(container).map_err(|p| (field("container"), p))?;
    }
    Ok(PodMatch {
        namespace: s.namespace.clone(),
        labels: s.match_labels.clone(),
        service_account: s.service_account.clone(),
        container: s.container.clone(),
    })
}

/// RFC 1123 label: namespaces, container names.
fn dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    ok.then_some(()).ok_or_else(|| {
        format!("{name:?} is not a valid name (at most 63 lowercase letters, digits and '-', alphanumeric at both ends)")
    })
}

/// RFC 1123 subdomain: service account names, label key prefixes.
fn dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(|part| dns_label(part).is_ok());
    ok.then_some(()).ok_or_else(|| format!("{name:?} is not a valid DNS subdomain name"))
}

/// `[prefix/]name`, as label keys are written.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|_| format!("label key {key:?} has an invalid prefix"))?;
    }
    if name.is_empty() || !label_chars(name) {
        return Err(format!(
            "label key {key:?} is not valid (name: at most 63 letters, digits, '-', '_', '.', alphanumeric at both ends)"
        ));
    }
    Ok(())
}

fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_chars(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid label value (at most 63 letters, digits, '-', '_', '.', alphanumeric at both ends)"
        ))
    }
}

fn label_chars(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge(s.chars().next())
        && edge(s.chars().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(namespace: &str, labels: &[(&str, &str)]) -> PodSelector {
        PodSelector {
            namespace: namespace.into(),
            match_labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            service_account: None,
            container: None,
        }
    }

    #[test]
    fn matching_needs_every_part() {
        let mut s = validate(&selector("shop", &[("app", "cart")])).unwrap();
        let labels: BTreeMap<String, String> =
            [("app".into(), "cart".into()), ("tier".into(), "web".into())].into();
        let c =
            PodContainer { namespace: "shop", labels: &labels, service_account: "cart", container: "app" };
        assert!(s.matches(&c));
        assert!(!s.matches(&PodContainer { namespace: "other", ..c.clone() }));
        let other: BTreeMap<String, String> = [("app".into(), "carts".into())].into();
        assert!(!s.matches(&PodContainer { labels: &other, ..c.clone() }));
        s.service_account = Some("cart".into());
        s.container = Some("app".into());
        assert!(s.matches(&c));
        assert!(!s.matches(&PodContainer { container: "sidecar", ..c.clone() }));
        assert!(!s.matches(&PodContainer { service_account: "default", ..c }));
    }

    #[test]
    fn names_follow_the_api_servers_rules() {
        assert!(validate(&selector("shop", &[("app.kubernetes.io/name", "cart"), ("empty", "")])).is_ok());
        let (field, problem) = validate(&selector("Shop", &[])).unwrap_err();
        assert_eq!(field, "spec.selector.pod.namespace");
        assert!(problem.contains("\"Shop\""), "{problem}");
        let (field, _) = validate(&selector("shop", &[("-bad", "x")])).unwrap_err();
        assert_eq!(field, "spec.selector.pod.matchLabels");
        let (field, _) = validate(&selector("shop", &[("app", "a b")])).unwrap_err();
        assert_eq!(field, "spec.selector.pod.matchLabels.app");
        let mut s = selector("shop", &[]);
        s.container = Some("App".into());
        assert_eq!(validate(&s).unwrap_err().0, "spec.selector.pod.container");
    }
}
