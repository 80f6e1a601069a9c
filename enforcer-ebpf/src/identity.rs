//! Which identity the current task belongs to, from its cgroup.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};
use enforcer_common::{
    MAX_CGROUP_DEPTH,
    maps::{BINDING_SUBTREE, CacheEntry, CgroupKey},
};

use crate::maps::{BIND_EPOCH, CGROUP_BINDINGS, CGROUP_CACHE};

/// The identity of the current task in `slot` (0 = none) and its cgroup id.
///
/// A cgroup seen before costs one cache lookup. Otherwise the ancestors are walked from
/// the root down and the deepest binding wins, so a cgroup created under a bound one is
/// covered from its first syscall, before the agent has seen it.
#[inline(always)]
pub fn current(slot: u32) -> (u32, u64) {
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let key = CgroupKey { cgroup_id, slot, pad: 0 };
    // Read before the walk: a binding added after this read bumps the epoch, so a
    // resolution that missed it is stamped stale. (0 if unreadable: entries stamped 0
    // are then trusted only until the agent's first bump, as before any binding change.)
    let epoch = BIND_EPOCH.get(0).copied().unwrap_or(0);
    // SAFETY: plain value read once.
    if let Some(entry) = unsafe { CGROUP_CACHE.get(&key) }
        && entry.epoch == epoch
    {
        return (entry.identity, cgroup_id);
    }
    let mut identity = 0;
    // Bounded for the verifier; deeper cgroups take the deepest binding among these levels.
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: helper with a scalar argument; returns 0 past the task's own level.
        #[expect(clippy::cast_possible_wrap, reason = "level < MAX_CGROUP_DEPTH")]
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 {
            break;
        }
        let akey = CgroupKey { cgroup_id: ancestor, slot, pad: 0 };
        // SAFETY: plain value read once.
        if let Some(binding) = unsafe { CGROUP_BINDINGS.get(&akey) }
            && (binding.flags & BINDING_SUBTREE != 0 || ancestor == cgroup_id)
        {
            identity = binding.identity;
        }
        if ancestor == cgroup_id {
            break;
        }
    }
    // Fail-open on cache insert failure: it only means the next call walks again.
    let _ = CGROUP_CACHE.insert(&key, &CacheEntry { epoch, identity, pad: 0 }, 0);
    (identity, cgroup_id)
}
