//! The names behind the numbers in kernel events: identities and policies by generation,
//! cgroups and pods. The engine keeps it current; event decoding reads it.

use std::collections::BTreeMap;

use crate::daemon::identity::kubepods::Pods;

/// Names behind the numbers in kernel events.
#[derive(Debug, Default)]
pub struct Directory {
    /// generation → identity number → (identity, policy).
    pub generations: BTreeMap<u64, BTreeMap<u32, (String, String)>>,
    /// cgroup id → path relative to the cgroup root.
    pub cgroups: BTreeMap<u64, String>,
    /// Bound cgroup id → whether the binding covers its subtree (what the kernel holds).
    pub bindings: BTreeMap<u64, bool>,
    /// The pods on this node (Kubernetes mode), for naming pods in verdicts.
    pub pods: Pods,
}

impl Directory {
    pub fn names(&self, generation: u64, identity: u32) -> Option<&(String, String)> {
        self.generations.get(&generation).and_then(|g| g.get(&identity))
    }
}
