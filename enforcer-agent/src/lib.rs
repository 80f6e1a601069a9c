//! The enforcer agent: loads the kernel programs, compiles policy into their maps and
//! turns their events into verdict records.

pub mod agent;
pub mod api;
pub mod btf;
pub mod cli;
pub mod containers;
pub mod control;
pub mod control_kubernetes;
pub mod engine;
pub mod events;
pub mod file_identity;
pub mod identity;
pub mod kernel_log;
pub mod kubepods;
pub mod kubernetes;
pub mod live;
pub mod live_check;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod path_key;
pub mod pins;
pub mod policy;
pub mod protect;
pub mod record;
pub mod state;
pub mod verdict_log;
