//! Query parameters of list, watch and write requests.

use std::time::Duration;

use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::status::ApiError;

/// The decoded `name=value` pairs of a query string.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(name), decode(value))
            })
            .collect();
        Self(pairs)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A boolean parameter: `true` or `1`, as the real server's query decoding accepts.
    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("invalid {name}: {v:?}"))))
            .transpose()
    }

    pub(crate) fn selectors(&self) -> Result<Selectors, ApiError> {
        Ok(Selectors {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or_default())?,
        })
    }

    /// `resourceVersion` as a number; `None` when absent or empty.
    pub(crate) fn resource_version(&self) -> Result<Option<u64>, ApiError> {
        self.number("resourceVersion")
    }

    pub(crate) fn limit(&self) -> Result<Option<usize>, ApiError> {
        let limit = self.number("limit")?.filter(|l| *l > 0);
        Ok(limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)))
    }

    pub(crate) fn timeout(&self) -> Result<Option<Duration>, ApiError> {
        Ok(self.number("timeoutSeconds")?.map(Duration::from_secs))
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// Percent-decoding of `application/x-www-form-urlencoded`, where `+` is a space.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match text.get(i + 1..i + 3).filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit())) {
                Some(hex) => {
                    out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_encoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier&fieldSelector=spec.nodeName%3Dnode-a&x=a+b&watch=1&bad=%zz%",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier"));
        assert_eq!(q.get("fieldSelector"), Some("spec.nodeName=node-a"));
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.get("bad"), Some("%zz%"));
        assert!(q.flag("watch"));
        assert!(!q.flag("allowWatchBookmarks"));
    }
}
