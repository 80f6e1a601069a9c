//! Policies: model (serde) → validate → compile (pure) → apply (maps); plus what-if
//! evaluation and diffs for the CLI.

pub mod compile;
pub mod compiled;
pub mod diff;
pub mod evaluate;
pub mod files;
pub mod model;
pub mod net;
pub mod paths;
pub mod pods;
pub mod resource;
pub mod selector;
pub mod validate;
pub mod yaml;

#[cfg(test)]
mod differential;
#[cfg(test)]
mod kernel_model;
#[cfg(test)]
mod tests;
