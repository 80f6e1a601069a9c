//! Diagnostics of the kernel programs (aya-log records about their own failures), read
//! from their log ring buffer and routed into `tracing` under the target
//! [`TARGET`].
//!
//! Off by default, and then free: the level is a read-only global of the programs
//! (`KERNEL_LOG`, set at load), so with logging off the verifier drops every log call as
//! dead code, the log ring buffer is created at its smallest size, and no reader is
//! started.

use std::panic::AssertUnwindSafe;

use aya::Ebpf;
use serde::Serialize;
use tokio::io::{Interest, unix::AsyncFd};

use super::events::hook_name;

/// The `tracing` target of kernel diagnostics.
pub const TARGET: &str = "enforcer::kernel";

/// The programs' log ring buffer (aya-log's).
pub const MAP: &str = "AYA_LOGS";

/// The most verbose kernel diagnostics the programs emit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// None: the log calls are removed by the verifier.
    #[default]
    Off,
    /// A helper, map or kernel read failed and the hook fell back to its fail-open or
    /// fail-closed choice.
    Error,
    /// Also refusals that are not the rules' doing (path too long, path buffer reused,
    /// forged path) and verdict events lost to a full ring buffer.
    Warn,
    /// Also failures that change nothing but the cost of the next call.
    Info,
    /// Everything the programs can log (today the same as `info`).
    Debug,
}

impl Level {
    /// The value of the programs' `KERNEL_LOG` global (and aya-log's `AYA_LOG_LEVEL`):
    /// records at or above this severity are emitted (0: none).
    pub fn global(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Error => aya_log::Level::Error as u8,
            Self::Warn => aya_log::Level::Warn as u8,
            Self::Info => aya_log::Level::Info as u8,
            Self::Debug => aya_log::Level::Debug as u8,
        }
    }

    /// The `tracing` filter directive that lets this level's records through (`None`
    /// when off).
    pub fn directive(self) -> Option<String> {
        let level = match self {
            Self::Off => return None,
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        };
        Some(format!("{TARGET}={level}"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelLogError {
    #[error("opening the kernel log ring buffer {MAP}: {0}")]
    Open(#[from] aya_log::Error),
    #[error("watching the kernel log ring buffer {MAP}: {0}")]
    Watch(#[source] std::io::Error),
}

/// Starts reading the programs' diagnostics into `tracing` (takes the log ring buffer
/// out of `ebpf`) unless `level` is off. Must run inside the tokio runtime.
pub fn start(ebpf: &mut Ebpf, level: Level) -> Result<(), KernelLogError> {
    if level == Level::Off {
        return Ok(());
    }
    let logger = aya_log::EbpfLogger::init_with_logger(ebpf, Forward)?;
    // SAFETY: the logger owns its map descriptor and lives inside the AsyncFd, so the
    // descriptor stays open for as long as it is registered.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| KernelLogError::Watch(e.into_parts().1))?;
    tracing::info!(?level, "kernel diagnostics on, logged as {TARGET}");
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else { return };
            // aya-log panics on a record it cannot decode; diagnostics must never take the
            // agent down, so the reader stops instead.
            let flushed = std::panic::catch_unwind(AssertUnwindSafe(|| guard.get_inner_mut().flush()));
            if flushed.is_err() {
                tracing::error!(target: TARGET, "undecodable kernel log record: kernel diagnostics stopped");
                return;
            }
            guard.clear_ready();
        }
    });
    Ok(())
}

/// An aya-log record as a `tracing` event: the hook's name as a field, the program
/// source line as `at`.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        let (hook, message) = split_hook(&text);
        let at = format!("{}:{}", record.file().unwrap_or("?"), record.line().unwrap_or(0));
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, hook, at, "{message}"),
            log::Level::Warn => tracing::warn!(target: TARGET, hook, at, "{message}"),
            log::Level::Info => tracing::info!(target: TARGET, hook, at, "{message}"),
            log::Level::Debug => tracing::debug!(target: TARGET, hook, at, "{message}"),
            log::Level::Trace => tracing::trace!(target: TARGET, hook, at, "{message}"),
        }
    }

    fn flush(&self) {}
}

/// A kernel message about a hook starts with `hook <code>: `: the hook's name and the
/// rest of the message.
pub fn split_hook(text: &str) -> (Option<&'static str>, &str) {
    text.strip_prefix("hook ")
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(code, message)| Some((hook_name(code.parse().ok()?), message)))
        .map_or((None, text), |(hook, message)| (Some(hook), message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer_common::verdict::hook;

    #[test]
    fn a_hook_code_becomes_its_name() {
        let text = format!("hook {}: bpf_d_path failed (-22): refused as internal-error", hook::FILE_OPEN);
        assert_eq!(
            split_hook(&text),
            (Some("file_open"), "bpf_d_path failed (-22): refused as internal-error")
        );
    }

    #[test]
    fn other_messages_pass_unchanged() {
        for text in ["cgroup_mkdir: cgroup id unreadable", "hook x: y", "hook 2 without a colon", ""] {
            assert_eq!(split_hook(text), (None, text));
        }
    }

    #[test]
    fn levels_match_aya_log_and_off_emits_nothing() {
        assert_eq!(Level::Off.global(), 0);
        assert_eq!(Level::Error.global(), 1);
        assert_eq!(Level::Debug.global(), 4);
        assert!(Level::default() == Level::Off && Level::Off.directive().is_none());
        assert_eq!(Level::Warn.directive().as_deref(), Some("enforcer::kernel=warn"));
    }
}
