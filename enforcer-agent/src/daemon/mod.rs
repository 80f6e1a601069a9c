//! The daemon: the agent's event loop, the commands it serves, the engine that keeps the
//! kernel maps in step with policies and workloads, live state, identities, records, the
//! verdict log, metrics and Kubernetes watches.

pub mod agent;
pub mod command;
pub mod config;
pub mod control;
pub mod engine;
pub mod file_identity;
pub mod identity;
pub mod kubernetes;
pub mod live;
pub mod live_check;
pub mod log_records;
pub mod memory;
pub mod metrics;
pub mod protect;
pub mod record;
pub mod reports;
pub mod state;
pub mod state_writer;
pub mod verdict_log;
