//! Policies: model (serde) → validate → compile (pure) → apply (maps).

pub mod compile;
pub mod compiled;
pub mod model;
pub mod validate;

#[cfg(test)]
mod tests;
