//! `labelSelector` and `fieldSelector` query parameters: parsing and matching.

use serde_json::Value;

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses equality (`a=b`, `a==b`, `a!=b`), existence (`a`, `!a`) and set
    /// (`a in (x,y)`, `a notin (x)`) requirements, comma-separated.
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_outside_parens(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self(requirements))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(key, value) => label(key) == Some(value),
            // As in the real API, `!=` and `notin` also match objects without the label.
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value),
            LabelRequirement::In(key, values) => label(key).is_some_and(|v| values.iter().any(|x| x == v)),
            LabelRequirement::NotIn(key, values) => {
                !label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::NotExists(key) => label(key).is_none(),
        })
    }
}

fn split_outside_parens(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, ApiError> {
    let invalid =
        || ApiError::bad_request(format!("unable to parse requirement: invalid label selector: {part:?}"));
    let key = |k: &str| {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) { Err(invalid()) } else { Ok(k.to_owned()) }
    };
    let value = |v: &str| {
        let v = v.trim();
        if v.contains(char::is_whitespace) { Err(invalid()) } else { Ok(v.to_owned()) }
    };
    if let Some(open) = part.find('(') {
        let close = part.strip_suffix(')').ok_or_else(invalid)?;
        let values = close[open + 1..].split(',').map(value).collect::<Result<Vec<_>, _>>()?;
        let head = part[..open].trim_end();
        if let Some(k) = head.strip_suffix(" notin") {
            return Ok(LabelRequirement::NotIn(key(k)?, values));
        }
        if let Some(k) = head.strip_suffix(" in") {
            return Ok(LabelRequirement::In(key(k)?, values));
        }
        return Err(invalid());
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelRequirement::Equals(key(k)?, value(v)?));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(key(k)?));
    }
    if part.contains(['<', '>']) {
        return Err(invalid());
    }
    Ok(LabelRequirement::Exists(key(part)?))
}

/// A parsed `fieldSelector`: `path=value`, `path==value` or `path!=value`, comma-separated.
///
/// The real API accepts only a few fields per kind (`metadata.name`, `metadata.namespace`,
/// `spec.nodeName`, `status.phase` for pods, ...); this server accepts any dotted path
/// into the object's JSON, and a missing field reads as the empty string, as
/// `spec.nodeName=` does for unscheduled pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let path = path.trim();
            if path.is_empty() {
                return Err(ApiError::bad_request(format!("invalid field selector: {part:?}")));
            }
            terms.push((path.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `metadata.name=name`, used for watches on an object's own path.
    pub(crate) fn with_name(mut self, name: &str) -> Self {
        self.0.push(("metadata.name".into(), true, name.into()));
        self
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| (field_value(object, path) == *value) == *equal)
    }
}

fn field_value(object: &Value, path: &str) -> String {
    let found = path.split('.').try_fold(object, |v, key| v.get(key));
    match found {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: &Value, node: Option<&str>) -> Value {
        json!({ "metadata": { "name": "p", "namespace": "ns", "labels": labels }, "spec": { "nodeName": node } })
    }

    #[test]
    fn label_equality_inequality_and_existence() {
        let web = pod(&json!({ "app": "web", "tier": "front" }), None);
        let db = pod(&json!({ "app": "db" }), None);
        let sel = |s| LabelSelector::parse(s).unwrap();
        assert!(sel("app=web").matches(&web) && !sel("app=web").matches(&db));
        assert!(sel("app==web,tier").matches(&web));
        assert!(!sel("app=web,tier=back").matches(&web));
        assert!(sel("app!=web").matches(&db) && !sel("app!=web").matches(&web));
        assert!(sel("tier!=front").matches(&db), "!= matches objects without the label");
        assert!(sel("!tier").matches(&db) && !sel("!tier").matches(&web));
        assert!(sel("app in (db, cache)").matches(&db) && !sel("app in (db,cache)").matches(&web));
        assert!(sel("app notin (db),tier").matches(&web));
        assert!(sel("").matches(&web));
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for bad in ["app in db", "a b=c", "=x", "app>1"] {
            let err = LabelSelector::parse(bad).expect_err(bad);
            assert_eq!(err.code, 400, "{bad}");
        }
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let on_a = pod(&json!({}), Some("node-a"));
        let unscheduled = pod(&json!({}), None);
        let sel = |s| FieldSelector::parse(s).unwrap();
        assert!(sel("spec.nodeName=node-a").matches(&on_a));
        assert!(!sel("spec.nodeName=node-a").matches(&unscheduled));
        assert!(sel("spec.nodeName=").matches(&unscheduled), "a missing field reads as empty");
        assert!(sel("spec.nodeName!=node-b,metadata.namespace==ns").matches(&on_a));
        assert!(!sel("metadata.name=q").matches(&on_a));
        assert!(FieldSelector::parse("spec.nodeName").is_err());
    }
}
