//! Helpers for the integration tests that run inside the test VMs: test cgroups, child
//! processes placed in them, and the loaded programs.

use std::{
    ffi::CString,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use enforcer_agent::events;
use enforcer_common::event::VerdictEvent;

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` in the VM, `/sys/fs/cgroup/unified` on
/// hybrid hosts).
pub fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(dir))
        })
        .expect("cgroup2 must be mounted for these tests")
}

/// A cgroup created for one test and removed when dropped.
pub struct TestCgroup {
    pub path: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        Self::under(&cgroup2_root(), name)
    }

    pub fn under(parent: &Path, name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("enforcer-test-{name}-{}-{n}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        Self { path }
    }

    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        Self::under(&self.path, name)
    }

    /// The cgroup id the kernel programs see (the directory's inode number).
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path).expect("cgroup exists").ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Children of this cgroup are dropped first (they are declared later); a cgroup
        // with live processes cannot be removed, which only leaks an empty directory.
        let _ = fs::remove_dir(&self.path);
    }
}

/// Runs `f` in a forked child placed in `cgroup` (or left where it is when `None`) and
/// returns its exit code.
pub fn run_in(cgroup: Option<&TestCgroup>, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the tests run single-threaded (--test-threads=1 in the VM); the child only
    // writes a file, runs `f` and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        if let Some(cgroup) = cgroup
            && fs::write(cgroup.path.join("cgroup.procs"), "0").is_err()
        {
            // SAFETY: exiting the child without unwinding.
            unsafe { libc::_exit(200) };
        }
        let code = f();
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(waited, pid, "waitpid failed");
    assert!(libc::WIFEXITED(status), "child did not exit normally: status {status}");
    let code = libc::WEXITSTATUS(status);
    assert_ne!(code, 200, "could not move the child into {:?}", cgroup.map(|c| &c.path));
    code
}

/// `open(path, flags)` in the calling process: 0 on success, else the errno.
pub fn open_errno(path: &str, flags: i32) -> i32 {
    let c = CString::new(path).expect("path without NUL");
    // SAFETY: valid C string; the descriptor is closed at once.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error().unwrap_or(255);
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    0
}

/// Reads verdict events from the ring buffer until `want` matches one or `timeout` passes.
pub fn wait_for_event(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    timeout: Duration,
    want: impl Fn(&VerdictEvent) -> bool,
) -> Option<VerdictEvent> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        while let Some(item) = ring.next() {
            if let Ok(event) = events::decode(&item)
                && want(&event)
            {
                return Some(event);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Writes a file, creating its directory.
pub fn write_file(path: &str, contents: &str) {
    let p = Path::new(path);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).expect("creating test directory");
    }
    fs::write(p, contents).expect("writing test file");
}
