//! Kernel-facing code: loading and attaching the programs, BTF offsets, the maps (the only
//! user of `aya::maps`), pins, the ring buffer of events and the path keys.

pub mod batch;
pub mod btf;
pub mod events;
pub mod kallsyms;
pub mod loader;
pub mod log;
pub mod maps;
pub mod path_key;
pub mod pins;
pub mod slot;
