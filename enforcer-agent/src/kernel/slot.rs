//! What one policy slot of the kernel maps holds, and the least change that makes it hold
//! another set (pure: `maps` does the writing).
//!
//! The agent is the only writer of the policy maps and creates them empty at load, so it
//! can remember what it wrote into each slot instead of reading the maps back: rewriting
//! a slot then removes only the entries the new set lacks and writes only those it adds
//! or changes, and an LPM trie, which cannot be cleared in one call, is never walked.

use std::{collections::BTreeMap, sync::Arc};

use enforcer_common::{
    maps::{Binding, IdentityConfig, NetEntry, PathRule},
    rule_filter::{self, RuleFilter},
};

use crate::policy::compiled::{CompiledSet, InodeRuleKey, NetPrefix, PathRuleKey};

/// The entries one policy puts in a slot, all keyed by its identity number (but for its
/// rules by file identity, which follow what is on disk at each apply). Shared between
/// slots and applies while the policy is unchanged, so an unchanged policy costs nothing
/// to install again: [`SlotDelta::between`] skips a part both sides share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Part {
    pub identities: Vec<(u32, IdentityConfig)>,
    /// With their keyed proofs (`PathRule::check`) filled in.
    pub path_rules: Vec<(PathRuleKey, PathRule)>,
    /// The path of each entry of `path_rules`, in the same order.
    pub path_names: Vec<String>,
    pub net_rules: Vec<(NetPrefix, NetEntry)>,
    pub listen_rules: Vec<(u32, NetEntry)>,
}

impl Part {
    /// The entries of `set` (compiled from one policy; its bindings are not part of it);
    /// `check` gives the keyed proof of a path.
    pub fn of(set: &CompiledSet, check: impl Fn(&str) -> u64) -> Self {
        let names: std::collections::HashMap<PathRuleKey, &str> =
            set.path_names.iter().map(|(k, n)| (*k, n.as_str())).collect();
        let path_rules = sorted(
            set.path_rules
                .iter()
                .map(|(key, rule)| {
                    let mut rule = *rule;
                    rule.check = names.get(key).map_or(0, |name| check(name));
                    (*key, rule)
                })
                .collect(),
        );
        let path_names =
            path_rules.iter().map(|(k, _)| names.get(k).copied().unwrap_or("").to_owned()).collect();
        Self {
            identities: sorted(set.identities.clone()),
            path_rules,
            path_names,
            net_rules: sorted(set.net_rules.clone()),
            listen_rules: sorted(set.listen_rules.clone()),
        }
    }

    /// Each path rule with the path it names.
    pub fn named_path_rules(&self) -> impl Iterator<Item = (&PathRuleKey, &PathRule, &str)> {
        self.path_rules.iter().zip(&self.path_names).map(|((k, r), n)| (k, r, n.as_str()))
    }
}

/// What one slot holds: bindings and rules by file identity as lists sorted by key with
/// one entry per key, and the part of each identity (by number).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotContents {
    pub bindings: Vec<(u64, Binding)>,
    pub inode_rules: Vec<(InodeRuleKey, PathRule)>,
    pub parts: BTreeMap<u32, Arc<Part>>,
}

impl SlotContents {
    /// A slot's contents from unsorted bindings and rules by file identity.
    pub fn new(
        bindings: Vec<(u64, Binding)>,
        inode_rules: Vec<(InodeRuleKey, PathRule)>,
        parts: BTreeMap<u32, Arc<Part>>,
    ) -> Self {
        Self { bindings: sorted(bindings), inode_rules: sorted(inode_rules), parts }
    }

    /// The contents of a whole compiled set (several identities, bindings and rules by
    /// file identity included), split into one part per identity.
    pub fn of(set: &CompiledSet, check: impl Fn(&str) -> u64) -> Self {
        let mut by_identity: BTreeMap<u32, CompiledSet> = BTreeMap::new();
        for entry in &set.identities {
            by_identity.entry(entry.0).or_default().identities.push(*entry);
        }
        for entry in &set.path_rules {
            by_identity.entry(entry.0.identity).or_default().path_rules.push(*entry);
        }
        for entry in &set.path_names {
            by_identity.entry(entry.0.identity).or_default().path_names.push(entry.clone());
        }
        for entry in &set.net_rules {
            by_identity.entry(entry.0.identity).or_default().net_rules.push(*entry);
        }
        for entry in &set.listen_rules {
            by_identity.entry(entry.0).or_default().listen_rules.push(*entry);
        }
        let parts =
            by_identity.into_iter().map(|(id, part)| (id, Arc::new(Part::of(&part, &check)))).collect();
        Self::new(set.bindings.clone(), set.inode_rules.clone(), parts)
    }

    /// The slot's rule filters (`enforcer_common::rule_filter`): the bit of every path
    /// rule key and of every rule key by file identity it holds.
    pub fn rule_filters(&self) -> (Box<RuleFilter>, Box<RuleFilter>) {
        let (mut paths, mut inodes) = (Box::new(RuleFilter::EMPTY), Box::new(RuleFilter::EMPTY));
        for part in self.parts.values() {
            for (k, _) in &part.path_rules {
                paths.set(rule_filter::path_bit(k.hash, k.len, k.identity, k.kind));
            }
        }
        for (k, _) in &self.inode_rules {
            inodes.set(rule_filter::inode_bit(k.ino, k.dev, k.identity, k.kind));
        }
        (paths, inodes)
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

/// How a slot changes, list by list.
#[derive(Debug, PartialEq)]
pub struct SlotDelta {
    pub bindings: Delta<u64, Binding>,
    pub identities: Delta<u32, IdentityConfig>,
    pub path_rules: Delta<PathRuleKey, PathRule>,
    pub inode_rules: Delta<InodeRuleKey, PathRule>,
    pub net_rules: Delta<NetPrefix, NetEntry>,
    pub listen_rules: Delta<u32, NetEntry>,
}

impl SlotDelta {
    /// The change from `held` to `wanted`. Parts are compared identity by identity (their
    /// keys never overlap), and a part both share is skipped without looking inside.
    pub fn between(held: &SlotContents, wanted: &SlotContents) -> Self {
        let mut out = Self {
            bindings: delta(&held.bindings, &wanted.bindings),
            identities: Delta::default(),
            path_rules: Delta::default(),
            inode_rules: delta(&held.inode_rules, &wanted.inode_rules),
            net_rules: Delta::default(),
            listen_rules: Delta::default(),
        };
        let empty = Part::default();
        let mut ids: Vec<u32> = held.parts.keys().chain(wanted.parts.keys()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let (old, new) = (held.parts.get(&id), wanted.parts.get(&id));
            if let (Some(old), Some(new)) = (old, new)
                && Arc::ptr_eq(old, new)
            {
                continue;
            }
            let (old, new) = (old.map_or(&empty, |p| &**p), new.map_or(&empty, |p| &**p));
            out.identities.extend(delta(&old.identities, &new.identities));
            out.path_rules.extend(delta(&old.path_rules, &new.path_rules));
            out.net_rules.extend(delta(&old.net_rules, &new.net_rules));
            out.listen_rules.extend(delta(&old.listen_rules, &new.listen_rules));
        }
        out
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

impl<K, V> Default for Delta<K, V> {
    fn default() -> Self {
        Self { removed: Vec::new(), written: Vec::new() }
    }
}

impl<K, V> Delta<K, V> {
    fn extend(&mut self, other: Self) {
        self.removed.extend(other.removed);
        self.written.extend(other.written);
    }
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
    fn a_shared_part_is_skipped_and_a_changed_one_compared() {
        let config = IdentityConfig {
            mode: 0,
            exec_default: 0,
            file_default: 0,
            net_default: 0,
            listen_default: 0,
            pad: [0; 3],
            flags: 0,
        };
        let part = |identity: u32, port: u16| {
            let mut entry = NetEntry {
                count: 1,
                pad: 0,
                rules: [enforcer_common::maps::NetRule::default(); enforcer_common::MAX_NET_RULES_PER_PREFIX],
            };
            entry.rules[0].port_lo = port;
            Arc::new(Part {
                identities: vec![(identity, config)],
                net_rules: vec![(NetPrefix { identity, addr: [0; 16], prefix_len: 8 }, entry)],
                ..Part::default()
            })
        };
        let (a, b) = (part(1, 80), part(2, 80));
        let held = SlotContents::new(vec![], vec![], [(1, Arc::clone(&a)), (2, Arc::clone(&b))].into());
        // The same part: nothing to do. A changed part: only its changed entry. A part
        // gone: all its entries removed.
        assert_eq!(SlotDelta::between(&held, &held.clone()).net_rules, Delta::default());
        let changed = SlotContents::new(vec![], vec![], [(1, Arc::clone(&a)), (2, part(2, 443))].into());
        let d = SlotDelta::between(&held, &changed);
        assert_eq!(
            (d.net_rules.removed.len(), d.net_rules.written.len(), d.identities.written.len()),
            (0, 1, 0)
        );
        let gone = SlotContents::new(vec![], vec![], [(1, a)].into());
        let d = SlotDelta::between(&held, &gone);
        assert_eq!((d.net_rules.removed.len(), d.identities.removed), (1, vec![2]));
    }

    /// Compiling policy by policy (as the agent does, to reuse unchanged ones) gives the
    /// slot what compiling the whole set gives it.
    #[test]
    fn parts_compiled_one_by_one_make_the_whole_set() {
        use crate::policy::{compile, validate};
        let doc = |name: &str, extra: &str| {
            format!(
                "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    cgroupPath: /{name}\n  exec:\n    - path: /usr/bin/{name}\n      action: deny\n  file:\n    - dir: /etc/{name}\n      access: [read]\n      action: allow\n  network:\n    - cidr: 10.0.0.0/8\n      ports: 443\n      action: allow\n    - cidr: 10.1.0.0/16\n      action: deny\n{extra}"
            )
        };
        let text =
            [doc("a", ""), doc("b", "  listen:\n    - ports: 8080\n      action: allow\n"), doc("c", "")]
                .join("---\n");
        let valid = validate::validate_set(&validate::parse("t", &text).expect("parses")).expect("valid");
        let ids: std::collections::BTreeMap<String, u32> =
            valid.iter().zip(1..).map(|(v, id)| (v.identity.clone(), id)).collect();
        let bindings = [compile::ResolvedBinding { identity: "b".into(), cgroup_id: 7, subtree: true }];
        let check = |path: &str| path.len() as u64;
        let whole = compile::compile(&valid, &ids, &bindings, 1).expect("compiles");
        let parts = valid
            .iter()
            .map(|v| {
                let one = compile::compile(std::slice::from_ref(v), &ids, &[], 1).expect("compiles");
                (ids[&v.identity], Arc::new(Part::of(&one, check)))
            })
            .collect();
        let by_parts = SlotContents::new(compile::kernel_bindings(&bindings, &ids), vec![], parts);
        assert_eq!(SlotContents::of(&whole, check), by_parts);
        assert_eq!(by_parts.parts.len(), 3);
        assert_eq!(by_parts.parts[&2].listen_rules.len(), 1);
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
        let part = Part::of(&set, |name| name.len() as u64 + 40);
        assert_eq!(part.path_rules[0].1.check, 42);
        assert_eq!(part.named_path_rules().next().map(|(_, _, name)| name), Some("/a"));
    }

    #[test]
    fn the_rule_filters_have_the_bit_of_every_key_the_slot_holds() {
        let rule = PathRule {
            check: 0,
            read_action: 1,
            write_action: 1,
            pad: 0,
            read_rule: 0,
            write_rule: 0,
            pad2: 0,
        };
        let paths: Vec<_> = (0..500u64)
            .map(|n| {
                (
                    PathRuleKey { identity: 7, kind: 4, hash: n.wrapping_mul(0x1234_5678_9abc_def1), len: 9 },
                    rule,
                )
            })
            .collect();
        let inodes: Vec<_> = (0..500u64)
            .map(|ino| (InodeRuleKey { identity: 7, kind: 3, dev: 0x80_0001, ino }, rule))
            .collect();
        let part = Part { path_rules: paths.clone(), ..Part::default() };
        let contents = SlotContents::new(vec![], inodes.clone(), BTreeMap::from([(7, Arc::new(part))]));
        let (path_filter, inode_filter) = contents.rule_filters();
        for (k, _) in &paths {
            assert!(path_filter.has(rule_filter::path_bit(k.hash, k.len, k.identity, k.kind)));
        }
        for (k, _) in &inodes {
            assert!(inode_filter.has(rule_filter::inode_bit(k.ino, k.dev, k.identity, k.kind)));
        }
        // Another identity's keys are mostly absent.
        let absent =
            (0..500u64).filter(|ino| inode_filter.has(rule_filter::inode_bit(*ino, 0x80_0001, 8, 3))).count();
        assert!(absent < 50, "{absent} of 500 keys of another identity look present");
    }
}
