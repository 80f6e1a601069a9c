//! The verdict log: one JSON object per line, appended to a file that rotates by size,
//! optionally echoed to stdout, and fanned out to API followers.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;
use tokio::sync::broadcast;

pub struct Rotation {
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`verdicts.jsonl.1` … `.N`).
    pub keep: usize,
}

pub struct VerdictLog {
    file: io::BufWriter<fs::File>,
    path: PathBuf,
    size: u64,
    rotation: Rotation,
    stdout: bool,
    followers: broadcast::Sender<Arc<Line>>,
}

/// `path.N`
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl VerdictLog {
    pub fn open(
        path: &Path,
        rotation: Rotation,
        stdout: bool,
        followers: broadcast::Sender<Arc<Line>>,
    ) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { file: io::BufWriter::new(file), path: path.to_owned(), size, rotation, stdout, followers })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and hands it to followers. Errors are reported to the caller,
    /// which logs them; a full disk must not stop enforcement.
    pub fn write(&mut self, record: &impl LogRecord) -> io::Result<()> {
        // Serialised once; the fields followers filter on come from the record itself,
        // and are copied only when someone follows.
        let line = serde_json::to_string(record).map_err(io::Error::other)?;
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.rotation.max_bytes {
            self.rotate()?;
        }
        writeln!(self.file, "{line}")?;
        self.size += len;
        if self.stdout {
            println!("{line}");
        }
        if self.followers.receiver_count() > 0 {
            // A follower that left meanwhile is not an error.
            let _ = self.followers.send(Arc::new(Line::of(record, line)));
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// `verdicts.jsonl` → `.1` → `.2` …, dropping the oldest beyond `keep`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.rotation.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(rotated(&self.path, self.rotation.keep));
            for n in (1..self.rotation.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.file = io::BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

/// Every line of the log and its rotated files, oldest first.
pub fn history(path: &Path, keep: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for n in (1..=keep).rev() {
        if let Ok(text) = fs::read_to_string(rotated(path, n)) {
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    if let Ok(text) = fs::read_to_string(path) {
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}

/// A record of the verdict log. It is serialised once; the fields followers filter on are
/// read from the record, not from its text.
pub trait LogRecord: Serialize {
    /// The record's `type`.
    fn kind(&self) -> &str;
    /// The record's `time` (RFC 3339).
    fn time(&self) -> &str;
    /// Verdict records: identity, policy, decision and hook.
    fn verdict(&self) -> Option<VerdictFields<'_>> {
        None
    }
}

/// identity, policy, decision, hook.
pub type VerdictFields<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Records built as JSON values carry their own `type` and `time`.
impl LogRecord for serde_json::Value {
    fn kind(&self) -> &str {
        self["type"].as_str().unwrap_or_default()
    }
    fn time(&self) -> &str {
        self["time"].as_str().unwrap_or_default()
    }
}

/// Implements [`LogRecord`] for record structs with `kind` and `time` fields.
#[macro_export]
macro_rules! log_record {
    ($($record:ty),+) => {$(
        impl $crate::daemon::verdict_log::LogRecord for $record {
            fn kind(&self) -> &str {
                self.kind
            }
            fn time(&self) -> &str {
                &self.time
            }
        }
    )+};
}

/// One record of the verdict stream, with the fields followers filter on.
#[derive(Debug, Clone)]
pub struct Line {
    pub json: String,
    pub kind: String,
    pub time: String,
    /// `time` as an instant: compared as times, never as strings ("…00Z" sorts after
    /// "…00.1Z" as text).
    pub at: Option<jiff::Timestamp>,
    pub identity: Option<String>,
    pub policy: Option<String>,
    pub decision: Option<String>,
    pub hook: Option<String>,
}

impl Line {
    /// A line read back from the log (history).
    pub fn from_json(json: String) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(&json).ok()?;
        Some(Self { json, ..Self::fields(&value) })
    }

    /// A record being written, serialised as `json`.
    fn of(record: &impl LogRecord, json: String) -> Self {
        let (identity, policy, decision, hook) = record.verdict().unwrap_or_default();
        let own = |s: Option<&str>| s.map(str::to_owned);
        Self {
            kind: record.kind().to_owned(),
            time: record.time().to_owned(),
            at: record.time().parse().ok(),
            identity: own(identity),
            policy: own(policy),
            decision: own(decision),
            hook: own(hook),
            json,
        }
    }

    fn fields(v: &serde_json::Value) -> Self {
        let field = |name: &str| v[name].as_str().map(str::to_owned);
        Self {
            kind: field("type").unwrap_or_default(),
            time: field("time").unwrap_or_default(),
            at: field("time").and_then(|t| t.parse().ok()),
            identity: field("identity"),
            policy: field("policy"),
            decision: field("decision"),
            hook: field("hook"),
            json: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_history_in_order() {
        let dir = std::env::temp_dir().join(format!("enforcer-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("verdicts.jsonl");
        let (tx, mut rx) = broadcast::channel(64);
        let mut log = VerdictLog::open(&path, Rotation { max_bytes: 100, keep: 2 }, false, tx).unwrap();
        for i in 0..12 {
            log.write(&serde_json::json!({"type": "verdict", "n": i, "time": format!("t{i:02}")})).unwrap();
        }
        log.flush().unwrap();
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "only two rotated files are kept");
        let numbers: Vec<u64> = history(&path, 2)
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_u64().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "in order: {numbers:?}");
        assert_eq!(numbers.last(), Some(&11));
        // Followers saw every record, rotation or not.
        let mut seen = 0;
        while rx.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 12);
        fs::remove_dir_all(&dir).unwrap();
    }
}
