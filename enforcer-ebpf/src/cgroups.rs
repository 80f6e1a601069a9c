//! Cgroup creation: tells the agent about every new cgroup at once, so a cgroup that a
//! selector picks by name (a container, a systemd unit) is bound within milliseconds
//! instead of at the next rescan.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use enforcer_common::{
    ABI_VERSION,
    event::{CgroupEvent, EVENT_CGROUP_MKDIR},
    verdict::stat,
};

use crate::{
    diag,
    maps::{EVENTS, count},
    offsets::{OFF_CGROUP_KN, OFF_KERNFS_ID, read},
};

/// `cgroup:cgroup_mkdir(cgrp, path)`. Observes only: a lost event is counted as dropped
/// and the cgroup is still found by the next rescan.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    let cgrp: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let Some(id) = read::<*const u8>(cgrp, &OFF_CGROUP_KN).and_then(|kn| read::<u64>(kn, &OFF_KERNFS_ID))
    else {
        // Observing only: the next rescan finds a cgroup whose id could not be read.
        diag::error!("cgroup_mkdir: cgroup id unreadable: the cgroup is left to the next rescan");
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<CgroupEvent>(0) else {
        count(stat::EVENTS_DROPPED);
        diag::warning!("cgroup_mkdir: EVENTS full: cgroup {} is left to the next rescan", cgroup: u64 = id);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; plain data only.
    unsafe {
        (*ev).abi = ABI_VERSION;
        (*ev).kind = EVENT_CGROUP_MKDIR;
        (*ev).cgroup_id = id;
        (*ev).path_len = 0;
        if let Ok(bytes) = bpf_probe_read_kernel_str_bytes(path, &mut (*ev).path) {
            #[expect(clippy::cast_possible_truncation, reason = "at most MAX_PATH")]
            {
                (*ev).path_len = bytes.len() as u32;
            }
        }
    }
    entry.submit(0);
    0
}
