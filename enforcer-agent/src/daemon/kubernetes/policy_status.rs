//! What the agents write into a `Policy` resource's status: the `Valid` condition, with
//! the validator's message when the document is refused. Every node computes the same
//! status from the same resources, so agents on different nodes never undo each other.

use crate::policy::resource::{Condition, PolicyStatus};

/// The validator's answer for one resource: `Ok` (valid) or the problem.
pub type Verdict = Result<Held, String>;

/// A valid resource is in force unless another resource of the set is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    InForce,
    /// Valid, but another resource is invalid, so the last valid set stays in force.
    Waiting,
}

pub const CONDITION: &str = "Valid";

/// The status `current` should become for `verdict`, or `None` when it already says so
/// (the transition time only moves when the condition's status changes).
pub fn next(
    current: Option<&PolicyStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    now: &str,
) -> Option<PolicyStatus> {
    let (status, reason, message) = match verdict {
        Ok(Held::InForce) => ("True", "Valid", "the policy is valid and in force".to_owned()),
        Ok(Held::Waiting) => (
            "True",
            "WaitingForOthers",
            "the policy is valid; another Policy is invalid, so the last valid set stays in force".to_owned(),
        ),
        Err(problem) => ("False", "Invalid", format!("{problem}; the last valid set stays in force")),
    };
    let old = current.and_then(|s| s.conditions.iter().find(|c| c.kind == CONDITION));
    let unchanged = old.is_some_and(|c| {
        c.status == status
            && c.reason == reason
            && c.message == message
            && c.observed_generation == generation
    });
    if unchanged && current.is_some_and(|s| s.observed_generation == generation) {
        return None;
    }
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.to_owned(),
    };
    let mut conditions: Vec<Condition> = current
        .map(|s| s.conditions.iter().filter(|c| c.kind != CONDITION).cloned().collect())
        .unwrap_or_default();
    conditions.push(Condition {
        kind: CONDITION.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
    Some(PolicyStatus { observed_generation: generation, conditions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_written_once_per_change() {
        let first = next(None, Some(1), &Ok(Held::InForce), "t1").unwrap();
        assert_eq!(first.conditions[0].status, "True");
        assert_eq!(next(Some(&first), Some(1), &Ok(Held::InForce), "t2"), None);
        let refused = next(Some(&first), Some(2), &Err("spec.file[0]: bad".into()), "t3").unwrap();
        let c = &refused.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.last_transition_time.as_str()),
            ("False", "Invalid", "t3")
        );
        assert!(c.message.starts_with("spec.file[0]: bad"), "{}", c.message);
        assert_eq!(refused.observed_generation, Some(2));
        // Same condition status on a later generation keeps the transition time.
        let again = next(Some(&refused), Some(3), &Err("other".into()), "t4").unwrap();
        assert_eq!(again.conditions[0].last_transition_time, "t3");
        let waiting = next(Some(&first), Some(1), &Ok(Held::Waiting), "t5").unwrap();
        assert_eq!(waiting.conditions[0].reason, "WaitingForOthers");
    }
}
