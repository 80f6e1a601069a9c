//! The operator verbs of the `enforcer` command, one module each.

pub mod verdicts;

/// Output format of a verb.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}
