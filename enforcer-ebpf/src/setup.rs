//! Pod containers announced by the OCI hook: the container's init process finishes the
//! container's root (mounts, `pivot_root`, the runtime's own opens) unmanaged, until it
//! executes the entrypoint.

use enforcer_common::maps::word;

use crate::maps::{SETUP_TASKS, word_low};

/// Whether [`SETUP_TASKS`] may hold an entry: while no container is being set up, every
/// exec and open skips its lookup. Unreadable (never: index 0 of an array), it may.
#[inline(always)]
fn any() -> bool {
    word_low(word::SETUP_ANY) != Some(0)
}

/// Whether the current process is a container's init process still being set up by its
/// runtime in the cgroup `cgroup_id` (announced by the OCI hook; see
/// `enforcer_common::maps::SETUP_TASKS`).
#[inline(always)]
pub fn in_setup(cgroup_id: u64) -> bool {
    if !any() {
        return false;
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a plain value read from a hash map entry.
    unsafe { SETUP_TASKS.get(&tgid) }.is_some_and(|cgroup| *cgroup == cgroup_id)
}

/// Ends the set-up exemption of the current process (it executes its entrypoint).
#[inline(always)]
pub fn end_setup() {
    if !any() {
        return;
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    // Absent for every other exec: looked up first, without the lock a delete takes. A
    // delete fails only while another program on this CPU holds the bucket's lock; the
    // exemption then lasts until the process exits (fail-open, for this one process).
    // SAFETY: a plain value read from a hash map entry.
    if unsafe { SETUP_TASKS.get(&tgid) }.is_some() {
        let _ = SETUP_TASKS.remove(&tgid);
    }
}
