//! The operator verbs of the `enforcer` command, one module each.
//!
//! Exit codes: 0 success; 1 failure (agent unreachable, internal error); 2 invalid input
//! (bad arguments, invalid policy, request refused as malformed); 3 not found; 4 the
//! caller may not use the API.

pub mod live;
pub mod policy;
pub mod status;
pub mod verdicts;

use std::process::ExitCode;

use crate::api::client::ClientError;

/// Output format of a verb.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A runtime for one CLI call.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// Prints the error and returns its exit code.
pub fn fail(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).expect("serialises"));
}
