//! The enforcer agent: loads the kernel programs, compiles policy into their maps and
//! turns their events into verdict records.

pub mod btf;
pub mod events;
pub mod loader;
pub mod maps;
pub mod policy;
