//! Kernel programs of enforcer: LSM hooks for exec and file opens, cgroup socket hooks
//! for connect and unconnected sends. Each judges the calling workload's identity
//! against the policy set held in maps and reports deny/audit verdicts.
#![no_std]
#![no_main]
// Atomic adds and compare-and-swap on map values (`readers.rs`, `aggregate.rs`): the BPF
// target's `core` has no atomic RMW.
#![feature(core_intrinsics)]
// The fast path's checked read of its CPU's record (`fast_path::read`), in registers the
// compiler would not keep to.
#![feature(asm_experimental_arch)]
#![allow(internal_features, reason = "atomic_xadd is the only atomic add on this target")]
#![expect(
    clippy::inline_always,
    reason = "BPF-to-BPF calls cost verifier state; helpers are inlined on purpose"
)]
#![expect(clippy::needless_pass_by_value, reason = "program signatures are fixed by the aya macros")]
#![expect(clippy::cast_ptr_alignment, reason = "kernel struct members read at their BTF offsets are aligned")]

mod aggregate;
mod cgroups;
mod cpu_tasks;
mod diag;
mod emit;
mod fast_path;
mod guard;
mod identity;
mod inodes;
mod lines;
mod lsm;
mod maps;
mod offsets;
mod open_cache;
mod path;
mod policy;
mod publish;
mod readers;
mod renames;
mod restricted;
mod rule_filters;
mod runtime;
mod setup;
mod sock;
mod unix;
mod writes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists to satisfy rustc.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
