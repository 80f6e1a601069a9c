//! What applying or deleting policies would change: per-policy status and a line diff of
//! the YAML.

use serde::{Deserialize, Serialize};

use super::model::Policy;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub name: String,
    /// `created`, `changed`, `unchanged` or `deleted`.
    pub change: String,
    /// Unified-style lines (`+`, `-`, ` `) of the YAML; empty when unchanged.
    pub diff: Vec<String>,
}

pub fn yaml(policy: &Policy) -> String {
    super::yaml::to_string(policy).expect("policies serialise")
}

/// The set after applying `docs` to `current`: documents replace the policy of the same
/// name or are added; the others stay.
pub fn merge(current: &[Policy], docs: &[Policy]) -> Vec<Policy> {
    let mut out = current.to_vec();
    for doc in docs {
        match out.iter_mut().find(|p| p.metadata.name == doc.metadata.name) {
            Some(slot) => *slot = doc.clone(),
            None => out.push(doc.clone()),
        }
    }
    out
}

/// The YAML text of policies by name, serialised again only when a policy changed, so
/// saving or diffing a large set after a small change writes out only what changed.
#[derive(Default)]
pub struct Texts {
    by_name: std::collections::HashMap<String, (Policy, String)>,
}

impl Texts {
    /// The text of `policy` (`yaml(policy)`).
    pub fn text(&mut self, policy: &Policy) -> &str {
        let entry = self
            .by_name
            .entry(policy.metadata.name.clone())
            .or_insert_with(|| (policy.clone(), yaml(policy)));
        if entry.0 != *policy {
            *entry = (policy.clone(), yaml(policy));
        }
        &entry.1
    }

    /// Forgets every policy but those named.
    pub fn keep<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let names: std::collections::HashSet<&str> = names.into_iter().collect();
        self.by_name.retain(|name, _| names.contains(name.as_str()));
    }
}

/// Changes from `before` to `after`, in the order of `after`, deletions last.
pub fn changes(before: &[Policy], after: &[Policy]) -> Vec<Change> {
    changes_with(before, after, &mut Texts::default())
}

/// [`changes`], with the texts of policies taken from (and kept in) `texts`.
pub fn changes_with(before: &[Policy], after: &[Policy], texts: &mut Texts) -> Vec<Change> {
    let mut yaml = |policy: &Policy| texts.text(policy).to_owned();
    let mut out = Vec::new();
    for policy in after {
        let name = policy.metadata.name.clone();
        match before.iter().find(|p| p.metadata.name == name) {
            None => out.push(Change { name, change: "created".into(), diff: lines(&yaml(policy), '+') }),
            Some(old) if old == policy => {
                out.push(Change { name, change: "unchanged".into(), diff: Vec::new() });
            }
            Some(old) => {
                let old = yaml(old);
                out.push(Change { name, change: "changed".into(), diff: line_diff(&old, &yaml(policy)) });
            }
        }
    }
    for old in before.iter().filter(|p| !after.iter().any(|a| a.metadata.name == p.metadata.name)) {
        out.push(Change {
            name: old.metadata.name.clone(),
            change: "deleted".into(),
            diff: lines(&yaml(old), '-'),
        });
    }
    out
}

/// What putting `docs` into the set `before` changes (see [`merge`]), for the policies
/// `docs` name, in the order they take in the merged set; the line diffs only `with_diff`
/// (they cost a serialisation of each changed policy), with the texts of `before` taken
/// from `texts`.
pub fn changes_of(before: &[&Policy], docs: &[Policy], texts: &mut Texts, with_diff: bool) -> Vec<Change> {
    // The last document of a name is the one that stays.
    let effective: std::collections::HashMap<&str, &Policy> =
        docs.iter().map(|d| (d.metadata.name.as_str(), d)).collect();
    let held: std::collections::HashMap<&str, &Policy> =
        before.iter().map(|p| (p.metadata.name.as_str(), *p)).collect();
    let mut order: Vec<&str> =
        before.iter().map(|p| p.metadata.name.as_str()).filter(|n| effective.contains_key(n)).collect();
    let mut added = std::collections::HashSet::new();
    for doc in docs {
        let name = doc.metadata.name.as_str();
        if !held.contains_key(name) && added.insert(name) {
            order.push(name);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let new = effective[name];
            let (change, diff) = match held.get(name) {
                None => ("created", if with_diff { lines(&yaml(new), '+') } else { Vec::new() }),
                Some(old) if *old == new => ("unchanged", Vec::new()),
                Some(old) => {
                    ("changed", if with_diff { line_diff(texts.text(old), &yaml(new)) } else { Vec::new() })
                }
            };
            Change { name: name.to_owned(), change: change.into(), diff }
        })
        .collect()
}

fn lines(text: &str, mark: char) -> Vec<String> {
    text.lines().map(|l| format!("{mark}{l}")).collect()
}

/// A longest-common-subsequence line diff. Lines common to both ends are matched first,
/// so a small change to a long policy costs time in proportion to its length, not its
/// square; the quadratic part runs only on what lies between.
pub fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..].iter().rev().zip(b[head..].iter().rev()).take_while(|(x, y)| x == y).count();
    let mut out: Vec<String> = a[..head].iter().map(|l| format!(" {l}")).collect();
    out.extend(middle_diff(&a[head..a.len() - tail], &b[head..b.len() - tail]));
    out.extend(a[a.len() - tail..].iter().map(|l| format!(" {l}")));
    out
}

/// The LCS diff of two runs of lines (all removed, then all added, when too long to compare).
fn middle_diff(a: &[&str], b: &[&str]) -> Vec<String> {
    if a.len() * b.len() > 4_000_000 {
        let mut out: Vec<String> = a.iter().map(|l| format!("-{l}")).collect();
        out.extend(b.iter().map(|l| format!("+{l}")));
        return out;
    }
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", b[j]));
            j += 1;
        } else {
            out.push(format!("-{}", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::parse;

    fn doc(name: &str, mode: &str) -> Policy {
        let yaml = format!(
            "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    cgroupPath: /{name}\n  mode: {mode}\n"
        );
        parse("t", &yaml).unwrap().remove(0)
    }

    #[test]
    fn merge_replaces_by_name_and_appends() {
        let merged =
            merge(&[doc("a", "enforce"), doc("b", "enforce")], &[doc("b", "audit"), doc("c", "audit")]);
        let names: Vec<_> = merged.iter().map(|p| p.metadata.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(merged[1], doc("b", "audit"));
    }

    #[test]
    fn reports_each_kind_of_change() {
        let before = [doc("a", "enforce"), doc("b", "enforce"), doc("gone", "enforce")];
        let after = [doc("a", "enforce"), doc("b", "audit"), doc("new", "enforce")];
        let c = changes(&before, &after);
        let kinds: Vec<_> = c.iter().map(|c| (c.name.as_str(), c.change.as_str())).collect();
        assert_eq!(kinds, [("a", "unchanged"), ("b", "changed"), ("new", "created"), ("gone", "deleted")]);
        assert!(c[1].diff.contains(&"-  mode: enforce".to_owned()), "{:?}", c[1].diff);
        assert!(c[1].diff.contains(&"+  mode: audit".to_owned()), "{:?}", c[1].diff);
    }

    #[test]
    fn texts_follow_the_policy_of_each_name() {
        let mut texts = Texts::default();
        assert_eq!(texts.text(&doc("a", "enforce")), yaml(&doc("a", "enforce")));
        assert_eq!(texts.text(&doc("a", "audit")), yaml(&doc("a", "audit")));
        assert_eq!(
            changes_with(&[doc("a", "enforce")], &[doc("a", "audit")], &mut texts),
            changes(&[doc("a", "enforce")], &[doc("a", "audit")])
        );
        texts.keep(["b"]);
        assert!(texts.by_name.is_empty());
        // Changes of a partial apply: in merged order, the last document of a name kept,
        // diffs only when asked.
        let before = [doc("a", "enforce"), doc("b", "enforce")];
        let before: Vec<&Policy> = before.iter().collect();
        let docs = [doc("c", "audit"), doc("b", "audit"), doc("a", "enforce"), doc("c", "enforce")];
        let c = changes_of(&before, &docs, &mut texts, false);
        let summary: Vec<(&str, &str)> = c.iter().map(|c| (c.name.as_str(), c.change.as_str())).collect();
        assert_eq!(summary, [("a", "unchanged"), ("b", "changed"), ("c", "created")]);
        assert!(c.iter().all(|c| c.diff.is_empty()));
        let c = changes_of(&before, &docs, &mut texts, true);
        assert!(c[1].diff.contains(&"+  mode: audit".to_owned()), "{:?}", c[1].diff);
        assert!(c[2].diff.iter().all(|l| l.starts_with('+')));
    }

    #[test]
    fn line_diff_keeps_common_lines() {
        assert_eq!(line_diff("a\nb\nc", "a\nx\nc"), [" a", "+x", "-b", " c"]);
        assert_eq!(line_diff("a\nb", "a\nb\nc"), [" a", " b", "+c"]);
        assert_eq!(line_diff("a\nb\nc", "c"), ["-a", "-b", " c"]);
        assert_eq!(line_diff("a\na", "a"), [" a", "-a"]);
    }

    #[test]
    fn line_diff_of_a_long_policy_shows_the_one_line_changed() {
        let old: Vec<String> = (0..20_000).map(|i| format!("line {i}")).collect();
        let mut new = old.clone();
        new[10_000] = "changed".to_owned();
        let diff = line_diff(&old.join("\n"), &new.join("\n"));
        assert_eq!(diff.len(), 20_001);
        assert_eq!(diff.iter().filter(|l| !l.starts_with(' ')).count(), 2, "only the changed line differs");
    }
}
