//! The agent's state directory: the policy set in force and its generation, live state
//! and pods, written atomically off the event loop, and a lock so only one agent runs at
//! a time.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::state_writer::Writer;

use crate::policy::model::Policy;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another agent holds {path}; stop it first")]
    Locked { path: PathBuf },
    #[error("{path}: saved policies are unreadable: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

pub struct State {
    dir: PathBuf,
    writer: Writer,
    _lock: fs::File,
}

const POLICIES: &str = "policies.yaml";
const LIVE: &str = "live.json";
const PODS: &str = "pods.json";
const GENERATION: &str = "generation";

impl State {
    /// Opens (creating) the directory and takes the agent lock.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("agent.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StateError::Locked { path: lock_path }),
            Err(fs::TryLockError::Error(source)) => return Err(StateError::Io { path: lock_path, source }),
        }
        Ok(Self { dir: dir.to_owned(), writer: Writer::start(), _lock: lock })
    }

    /// The saved policy set (empty when none was saved yet).
    pub fn policies(&self) -> Result<Vec<Policy>, StateError> {
        self.writer.flush();
        let path = self.dir.join(POLICIES);
        match fs::read_to_string(&path) {
            Ok(text) => crate::policy::validate::parse(&path.display().to_string(), &text)
                .map_err(|e| StateError::Corrupt { path, message: e.to_string() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    pub fn generation(&self) -> u64 {
        self.writer.flush();
        fs::read_to_string(self.dir.join(GENERATION)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Saves the set in force: serialised and written (temporary file, fsync, rename) on
    /// the writer's thread, so an apply does not wait for the disk.
    pub fn save(&self, policies: &[Policy], generation: u64) -> Result<(), StateError> {
        self.save_with(policies, generation, &mut crate::policy::diff::Texts::default())
    }

    /// [`Self::save`], with the texts of policies taken from (and kept in) `texts`; the
    /// text is put together here (cheap with the texts kept), written on the writer's thread.
    pub fn save_with(
        &self,
        policies: &[Policy],
        generation: u64,
        texts: &mut crate::policy::diff::Texts,
    ) -> Result<(), StateError> {
        let mut text = String::new();
        for policy in policies {
            text.push_str("---\n");
            text.push_str(texts.text(policy));
        }
        self.writer.write(self.dir.join(POLICIES), Box::new(move || text.into_bytes()));
        self.writer.write(self.dir.join(GENERATION), Box::new(move || generation.to_string().into_bytes()));
        Ok(())
    }

    /// Saves the validated set in force: its text is put together on the writer's thread
    /// too, with the texts of unchanged policies taken from `texts` (which then holds
    /// those of this set only).
    pub fn save_set(
        &self,
        set: Vec<std::sync::Arc<crate::policy::validate::Valid>>,
        generation: u64,
        texts: &std::sync::Arc<std::sync::Mutex<crate::policy::diff::Texts>>,
    ) {
        let texts = std::sync::Arc::clone(texts);
        self.writer.write(
            self.dir.join(POLICIES),
            Box::new(move || {
                let mut texts = texts.lock().expect("texts lock");
                let mut text = String::new();
                for policy in &set {
                    text.push_str("---\n");
                    text.push_str(texts.text(&policy.source));
                }
                texts.keep(set.iter().map(|p| p.name.as_str()));
                text.into_bytes()
            }),
        );
        self.writer.write(self.dir.join(GENERATION), Box::new(move || generation.to_string().into_bytes()));
    }

    /// Waits until every save handed over so far is on disk.
    pub fn flush(&self) {
        self.writer.flush();
    }
}

impl State {
    /// Quarantines and revocations in force (empty when none were saved).
    pub fn live(&self) -> Result<crate::daemon::live::LiveState, StateError> {
        self.writer.flush();
        let path = self.dir.join(LIVE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| StateError::Corrupt { path, message: e.to_string() })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(crate::daemon::live::LiveState::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Saves quarantines, grants, revocations and approval requests (on the writer's
    /// thread: the kernel maps are what enforces; this file restores them at start).
    pub fn save_live(&self, live: &crate::daemon::live::LiveState) -> Result<(), StateError> {
        let text = serde_json::to_vec(live).expect("live state serialises");
        self.writer.write(self.dir.join(LIVE), Box::new(move || text));
        Ok(())
    }
}

impl State {
    /// The pods of this node as last seen (Kubernetes mode), so a restarted agent binds
    /// pod containers before its watch has listed again.
    pub fn pods(&self) -> Vec<crate::daemon::identity::kubepods::PodInfo> {
        self.writer.flush();
        fs::read_to_string(self.dir.join(PODS))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn save_pods(&self, pods: &[crate::daemon::identity::kubepods::PodInfo]) -> Result<(), StateError> {
        let text = serde_json::to_vec(pods).expect("pods serialise");
        self.writer.write(self.dir.join(PODS), Box::new(move || text));
        Ok(())
    }
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    use io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(data).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_reloads_and_locks() {
        let dir = std::env::temp_dir().join(format!("enforcer-state-{}", std::process::id()));
        let state = State::open(&dir).unwrap();
        assert!(matches!(State::open(&dir), Err(StateError::Locked { .. })));
        let text = "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: p\nspec:\n  selector:\n    cgroupPath: /a\n";
        let policies = crate::policy::validate::parse("t", text).unwrap();
        state.save(&policies, 4).unwrap();
        assert_eq!(state.policies().unwrap(), policies);
        assert_eq!(state.generation(), 4);
        drop(state);
        fs::remove_dir_all(&dir).unwrap();
    }
}
