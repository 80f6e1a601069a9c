//! Policies: model (serde) → validate → compile (pure) → apply (maps).

pub mod compiled;
