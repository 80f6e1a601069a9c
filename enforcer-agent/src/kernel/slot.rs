//! What one policy slot of the kernel maps holds, and the least change that makes it hold
//! another set (pure: `maps` does the writing).
//!
//! The agent is the only writer of the policy maps and creates them empty at load, so it
//! can remember what it wrote into each slot instead of reading the maps back: rewriting
//! a slot then removes only the entries the new set lacks and writes only those it adds
//! or changes, and an LPM trie, which cannot be cleared in one call, is never walked.

use enforcer_common::maps::{Binding, IdentityConfig, NetEntry, PathRule};

use crate::policy::compiled::{CompiledSet, InodeRuleKey, NetPrefix, PathRuleKey};

/// The entries of one slot, each list sorted by key with one entry per key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotContents {
    pub identities: Vec<(u32, IdentityConfig)>,
    pub bindings: Vec<(u64, Binding)>,
    /// With their keyed proofs (`PathRule::check`) filled in.
    pub path_rules: Vec<(PathRuleKey, PathRule)>,
    pub inode_rules: Vec<(InodeRuleKey, PathRule)>,
    pub net_rules: Vec<(NetPrefix, NetEntry)>,
    pub listen_rules: Vec<(u32, NetEntry)>,
}

impl SlotContents {
    /// What the maps hold once `set` is installed; `check` gives the keyed proof of a path.
    pub fn of(set: &CompiledSet, check: impl Fn(&str) -> u64) -> Self {
        let names: std::collections::HashMap<PathRuleKey, &str> =
            set.path_names.iter().map(|(k, n)| (*k, n.as_str())).collect();
        let path_rules = set
            .path_rules
            .iter()
            .map(|(key, rule)| {
                let mut rule = *rule;
                rule.check = names.get(key).map_or(0, |name| check(name));
                (*key, rule)
            })
            .collect();
        Self {
            identities: sorted(set.identities.clone()),
            bindings: sorted(set.bindings.clone()),
            path_rules: sorted(path_rules),
            inode_rules: sorted(set.inode_rules.clone()),
            net_rules: sorted(set.net_rules.clone()),
            listen_rules: sorted(set.listen_rules.clone()),
        }
    }

    /// Records a binding added (or replaced) after the slot was written.
    pub fn bind(&mut self, cgroup_id: u64, binding: Binding) {
        match self.bindings.binary_search_by_key(&cgroup_id, |(c, _)| *c) {
            Ok(at) => self.bindings[at].1 = binding,
            Err(at) => self.bindings.insert(at, (cgroup_id, binding)),
        }
    }

    /// Records bindings removed after the slot was written.
    pub fn unbind(&mut self, cgroup_ids: &[u64]) {
        self.bindings.retain(|(c, _)| !cgroup_ids.contains(c));
    }
}

/// Sorted by key; where a key repeats, the last entry stays (as the last write would).
fn sorted<K: Ord + Copy, V: Copy>(mut entries: Vec<(K, V)>) -> Vec<(K, V)> {
    entries.sort_by_key(|(k, _)| *k);
    entries.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            *kept = *later;
        }
        same
    });
    entries
}

/// How one list of a slot changes.
#[derive(Debug, PartialEq, Eq)]
pub struct Delta<K, V> {
    /// Keys held that the new set lacks.
    pub removed: Vec<K>,
    /// Entries the new set adds or changes.
    pub written: Vec<(K, V)>,
}

/// The change from `old` to `new`, both sorted by key with unique keys: one merge pass.
pub fn delta<K: Ord + Copy, V: PartialEq + Copy>(old: &[(K, V)], new: &[(K, V)]) -> Delta<K, V> {
    let mut out = Delta { removed: Vec::new(), written: Vec::new() };
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o.0 == n.0 => {
                if o.1 != n.1 {
                    out.written.push(*n);
                }
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o.0 < n.0 => {
                out.removed.push(o.0);
                i += 1;
            }
            (Some(o), None) => {
                out.removed.push(o.0);
                i += 1;
            }
            (_, Some(n)) => {
                out.written.push(*n);
                j += 1;
            }
            (None, None) => unreachable!("the loop runs while either list has entries"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_removes_what_is_gone_and_writes_what_is_new_or_changed() {
        let old = [(1, 'a'), (2, 'b'), (4, 'd'), (6, 'f')];
        let new = [(0, 'z'), (2, 'b'), (4, 'x'), (5, 'e')];
        assert_eq!(
            delta(&old, &new),
            Delta { removed: vec![1, 6], written: vec![(0, 'z'), (4, 'x'), (5, 'e')] }
        );
        assert_eq!(delta(&new, &new), Delta { removed: vec![], written: vec![] });
        assert_eq!(delta::<u8, u8>(&[], &[(1, 1)]), Delta { removed: vec![], written: vec![(1, 1)] });
        assert_eq!(delta::<u8, u8>(&[(1, 1)], &[]), Delta { removed: vec![1], written: vec![] });
    }

    #[test]
    fn contents_are_sorted_with_the_last_entry_of_a_key_kept() {
        assert_eq!(sorted(vec![(3, 'c'), (1, 'a'), (3, 'd'), (2, 'b')]), [(1, 'a'), (2, 'b'), (3, 'd')]);
    }

    #[test]
    fn live_bindings_are_recorded_in_order() {
        let binding = |identity| Binding { identity, flags: 0 };
        let mut held =
            SlotContents { bindings: vec![(10, binding(1)), (30, binding(1))], ..Default::default() };
        held.bind(20, binding(2));
        held.bind(30, binding(3));
        assert_eq!(held.bindings, [(10, binding(1)), (20, binding(2)), (30, binding(3))]);
        held.unbind(&[10, 99]);
        assert_eq!(held.bindings, [(20, binding(2)), (30, binding(3))]);
    }

    #[test]
    fn path_rules_carry_the_proof_of_their_path() {
        let key = PathRuleKey { identity: 1, kind: 0, hash: 7, len: 2 };
        let set = CompiledSet {
            path_rules: vec![(key, PathRule::empty())],
            path_names: vec![(key, "/a".to_owned())],
            ..CompiledSet::default()
        };
        let held = SlotContents::of(&set, |name| name.len() as u64 + 40);
        assert_eq!(held.path_rules[0].1.check, 42);
    }
}
