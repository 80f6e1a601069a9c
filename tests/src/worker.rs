//! A process that makes a hook's calls in batches on command, from inside a subject's
//! cgroup: the bench reads the programs' counters between two batches, while it waits,
//! and takes a figure from the median batch (`bpf_stats::median`).

use std::{
    io::{PipeReader, PipeWriter, Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::Path,
};

use crate::{fork_in_dir, wait_child};
use anyhow::{Context as _, bail};

/// Calls a worker makes before its first batch, uncounted: the first call of a process
/// just moved into a cgroup finds its CPU's record out of date (a task changed cgroup)
/// and is judged in full, a one-off cost that is not what a figure measures.
const WARM_UP: u32 = 8;

/// A running worker; told to exit and waited for when dropped.
pub struct Worker {
    pid: libc::pid_t,
    commands: Option<PipeWriter>,
    done: PipeReader,
}

impl Worker {
    /// Forks a worker into `cgroup` (or where the bench runs, if `None`) that makes
    /// `work(count)` calls for each batch asked of it.
    pub fn start(cgroup: Option<&Path>, work: &dyn Fn(u32) -> i32) -> anyhow::Result<Self> {
        let (mut command_in, commands) = std::io::pipe().context("a pipe to the worker")?;
        let (done, mut done_out) = std::io::pipe().context("a pipe from the worker")?;
        let keep = [command_in.as_raw_fd(), done_out.as_raw_fd()];
        let pid = fork_in_dir(cgroup, || {
            close_all_but(keep);
            work(WARM_UP);
            let mut count = [0u8; 4];
            // A batch per count read; 0, or the bench gone, ends the worker.
            while command_in.read_exact(&mut count).is_ok() {
                let count = u32::from_ne_bytes(count);
                if count == 0 {
                    return 0;
                }
                work(count);
                if done_out.write_all(&[1]).is_err() {
                    return 1;
                }
            }
            0
        });
        Ok(Self { pid, commands: Some(commands), done })
    }

    /// Has the worker make `count` calls (at least one), and returns once it has.
    pub fn batch(&mut self, count: u32) -> anyhow::Result<()> {
        let commands = self.commands.as_mut().context("the worker was told to exit")?;
        commands.write_all(&count.max(1).to_ne_bytes()).context("asking the worker for a batch")?;
        let mut done = [0u8; 1];
        if self.done.read_exact(&mut done).is_err() {
            bail!("the worker exited during a batch");
        }
        Ok(())
    }
}

/// Closes every descriptor above the standard three but `keep`. A worker outlives the
/// bench's attaching and detaching of programs between batches, and a link it inherited
/// would keep a detached program attached; the bench's ends of the pipes, closed, make
/// the bench gone an end of file here.
fn close_all_but(keep: [i32; 2]) {
    let [low, high] = if keep[0] < keep[1] { keep } else { [keep[1], keep[0]] };
    let below = |fd: i32| u32::try_from(fd - 1).unwrap_or(0);
    let above = |fd: i32| u32::try_from(fd + 1).unwrap_or(u32::MAX);
    for (first, last) in [(3, below(low)), (above(low), below(high)), (above(high), u32::MAX)] {
        if first <= last {
            // SAFETY: closes descriptors of this process only, none of which it uses.
            unsafe { libc::close_range(first, last, 0) };
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut commands) = self.commands.take() {
            // A worker that already exited has closed its end: nothing to tell.
            let _ = commands.write_all(&0u32.to_ne_bytes());
        }
        wait_child(self.pid);
    }
}
