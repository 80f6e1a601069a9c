//! Writes state files on a thread of their own: a save costs the caller a channel send,
//! not a file write and an fsync (hundreds of microseconds on common disks). Saves of the
//! same file queued behind each other collapse into the newest; each file is written
//! atomically (temporary file, fsync, rename).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::mpsc::{self, Receiver, Sender},
    thread::JoinHandle,
};

/// Produces a file's contents; run on the writer's thread.
pub type Contents = Box<dyn FnOnce() -> Vec<u8> + Send>;

enum Job {
    Write(PathBuf, Contents),
    /// Answered once every job before it is done.
    Flush(Sender<()>),
}

pub struct Writer {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start() -> Self {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".to_owned())
            .spawn(move || run(&queue))
            .expect("spawning the state writer thread");
        Self { jobs: Some(jobs), thread: Some(thread) }
    }

    /// Queues a write of `path`.
    pub fn write(&self, path: PathBuf, contents: Contents) {
        let Some(jobs) = &self.jobs else { return };
        if jobs.send(Job::Write(path, contents)).is_err() {
            tracing::error!("state writer is gone: a state file was not saved");
        }
    }

    /// Waits until every write queued so far is on disk (or has failed and been logged).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(jobs) = &self.jobs
            && jobs.send(Job::Flush(done)).is_ok()
        {
            let _ = wait.recv();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the queue is written.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        // Everything queued now: the newest contents of each file, in first-queued order.
        let mut order: Vec<PathBuf> = Vec::new();
        let mut newest: HashMap<PathBuf, Contents> = HashMap::new();
        let mut flushes = Vec::new();
        for job in std::iter::once(first).chain(queue.try_iter()) {
            match job {
                Job::Write(path, contents) => {
                    if newest.insert(path.clone(), contents).is_none() {
                        order.push(path);
                    }
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        for path in order {
            if let Some(contents) = newest.remove(&path)
                && let Err(e) = super::state::write_atomic(&path, &contents())
            {
                tracing::error!(error = %e, "saving agent state");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_save_of_a_file_wins_and_flush_waits_for_it() {
        let dir = std::env::temp_dir().join(format!("enforcer-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let writer = Writer::start();
        for n in 0..100 {
            writer.write(dir.join("f"), Box::new(move || n.to_string().into_bytes()));
        }
        writer.flush();
        assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "99");
        writer.write(dir.join("g"), Box::new(|| b"last".to_vec()));
        drop(writer);
        assert_eq!(std::fs::read_to_string(dir.join("g")).unwrap(), "last");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
