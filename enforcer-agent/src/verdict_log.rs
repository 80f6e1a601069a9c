//! The verdict log: one JSON object per line, to a file and optionally stdout.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::Serialize;

pub struct VerdictLog {
    file: io::BufWriter<fs::File>,
    path: PathBuf,
    stdout: bool,
}

impl VerdictLog {
    pub fn open(path: &Path, stdout: bool) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: io::BufWriter::new(file), path: path.to_owned(), stdout })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record. Errors are reported to the caller, which logs them; a full
    /// disk must not stop enforcement.
    pub fn write(&mut self, record: &impl Serialize) -> io::Result<()> {
        let line = serde_json::to_string(record).map_err(io::Error::other)?;
        writeln!(self.file, "{line}")?;
        if self.stdout {
            println!("{line}");
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
