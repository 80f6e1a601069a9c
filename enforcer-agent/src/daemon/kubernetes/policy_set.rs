//! The cluster's resources as one policy set: applied whole when every resource is valid;
//! otherwise nothing changes and each resource is told why.

use super::policy_status::{Held, Verdict};
use crate::{
    daemon::command::ClusterPolicy,
    policy::{model::Policy, validate},
};

/// Each resource's verdict, and the set to apply when all are valid.
pub fn judge(resources: &[ClusterPolicy]) -> (Vec<(String, Verdict)>, Option<Vec<Policy>>) {
    let mut verdicts: Vec<(String, Verdict)> = Vec::new();
    let mut docs = Vec::new();
    for resource in resources {
        match &resource.policy {
            Ok(policy) => match validate::validate(policy) {
                Ok(_) => {
                    verdicts.push((resource.name.clone(), Ok(Held::InForce)));
                    docs.push(policy.clone());
                }
                Err(e) => verdicts.push((resource.name.clone(), Err(problem(&e)))),
            },
            Err(e) => verdicts.push((resource.name.clone(), Err(problem(e)))),
        }
    }
    // Across documents: an identity governed twice (names are unique in a cluster).
    if verdicts.iter().all(|(_, v)| v.is_ok())
        && let Err(e) = validate::validate_set(&docs)
    {
        for (name, verdict) in &mut verdicts {
            if e.document == format!("policy {name:?}") || e.document == *name || e.document == "policy set" {
                *verdict = Err(problem(&e));
            }
        }
    }
    if verdicts.iter().all(|(_, v)| v.is_ok()) {
        return (verdicts, Some(docs));
    }
    for (_, verdict) in &mut verdicts {
        if verdict.is_ok() {
            *verdict = Ok(Held::Waiting);
        }
    }
    (verdicts, None)
}

/// The validator's message without the document name (the resource is the document).
fn problem(e: &validate::PolicyError) -> String {
    format!("{}: {}", e.field, e.problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, identity: &str, file_action: &str) -> ClusterPolicy {
        let text = format!(
            "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  identity: {identity}\n  selector: {{pod: {{namespace: shop}}}}\n  file: [{{path: /secret, action: {file_action}}}]\n"
        );
        let policy = validate::parse(name, &text).map(|mut v| v.remove(0));
        ClusterPolicy { name: name.to_owned(), policy }
    }

    #[test]
    fn a_valid_set_is_applied_whole() {
        let (verdicts, set) = judge(&[resource("a", "a", "deny"), resource("b", "b", "allow")]);
        assert_eq!(set.unwrap().len(), 2);
        assert!(verdicts.iter().all(|(_, v)| *v == Ok(Held::InForce)));
    }

    #[test]
    fn one_invalid_resource_holds_the_set() {
        let (verdicts, set) = judge(&[resource("a", "a", "deny"), resource("b", "b", "maybe")]);
        assert!(set.is_none());
        assert_eq!(verdicts[0].1, Ok(Held::Waiting));
        let Err(message) = &verdicts[1].1 else { panic!("b is invalid") };
        assert!(message.contains("maybe"), "{message}");
    }

    #[test]
    fn an_identity_governed_twice_is_named() {
        let (verdicts, set) = judge(&[resource("a", "same", "deny"), resource("b", "same", "deny")]);
        assert!(set.is_none());
        let Err(message) = &verdicts[1].1 else { panic!("b repeats a's identity: {verdicts:?}") };
        assert!(message.contains("already governed"), "{message}");
    }
}
