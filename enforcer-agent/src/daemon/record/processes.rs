//! Parent pid and executable of the processes named in verdicts, cached briefly.

/// Parent pid and executable of recent callers: a burst of verdicts from one process
/// reads /proc once, not once per event.
#[derive(Default)]
pub struct Processes {
    seen: std::collections::HashMap<u32, (std::time::Instant, Option<u32>, Option<String>)>,
}

impl Processes {
    /// How long a process's details are reused (a pid can be recycled after it exits).
    const FRESH: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX: usize = 4096;

    pub fn get(&mut self, pid: u32) -> (Option<u32>, Option<String>) {
        let now = std::time::Instant::now();
        if let Some((at, cached_ppid, cached_exe)) = self.seen.get(&pid)
            && now.duration_since(*at) < Self::FRESH
        {
            return (*cached_ppid, cached_exe.clone());
        }
        if self.seen.len() >= Self::MAX {
            self.seen.retain(|_, (at, _, _)| now.duration_since(*at) < Self::FRESH);
            if self.seen.len() >= Self::MAX {
                self.seen.clear();
            }
        }
        let process = i32::try_from(pid).ok().and_then(|pid| procfs::process::Process::new(pid).ok());
        let parent = process.as_ref().and_then(parent_of);
        let exe = process.and_then(|p| p.exe().ok()).map(|p| p.to_string_lossy().into_owned());
        self.seen.insert(pid, (now, parent, exe.clone()));
        (parent, exe)
    }
}

fn parent_of(process: &procfs::process::Process) -> Option<u32> {
    u32::try_from(process.stat().ok()?.ppid).ok()
}
