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

pub mod bpf_stats;
pub mod worker;

use enforcer_agent::kernel::events;
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
    run_in_dir(cgroup.map(|c| c.path.as_path()), f)
}

/// Held while this process forks or spawns a child. A command's pipes are close-on-exec,
/// but a child forked by [`run_in`] never execs: forked while another thread spawned a
/// command, it would keep that command's pipe ends open, and whoever waits for the
/// command's output (the end of the pipes) would wait for that child to exit too.
static FORKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn forking() -> std::sync::MutexGuard<'static, ()> {
    FORKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns `command` under [`FORKING`].
pub fn spawn(command: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let _forking = forking();
    command.spawn()
}

/// `command.output()`, spawned under [`FORKING`].
pub fn output(command: &mut std::process::Command) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    spawn(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?.wait_with_output()
}

/// [`run_in`] for a cgroup given by its directory.
pub fn run_in_dir(cgroup: Option<&Path>, f: impl FnOnce() -> i32) -> i32 {
    wait_child(fork_in_dir(cgroup, f))
}

/// Forks a child placed in `cgroup` (or left where it is when `None`) that runs `f` and
/// exits with its result; returns the child's pid, for [`wait_child`].
pub fn fork_in_dir(cgroup: Option<&Path>, f: impl FnOnce() -> i32) -> libc::pid_t {
    let forking = forking();
    // SAFETY: the child only writes a file, runs `f` and exits; other threads of the test
    // may run meanwhile, but none is spawning (see `FORKING`).
    let pid = unsafe { libc::fork() };
    // In the child too: its copy of the lock, released by its only thread.
    drop(forking);
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        if let Some(cgroup) = cgroup
            && let Err(e) = fs::write(cgroup.join("cgroup.procs"), "0")
        {
            // Why, on stderr, written directly: the standard error's lock may have been
            // held by another thread when the process forked.
            let why = format!("moving into {}: {e}\n", cgroup.display());
            // SAFETY: writing our own buffer to the inherited stderr, then exiting the
            // child without unwinding.
            unsafe {
                libc::write(2, why.as_ptr().cast(), why.len());
                libc::_exit(200)
            };
        }
        let code = f();
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for a child of [`fork_in_dir`]: its exit code (it must exit normally, and must
/// have entered its cgroup).
pub fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(waited, pid, "waitpid failed");
    assert!(libc::WIFEXITED(status), "child did not exit normally: status {status}");
    let code = libc::WEXITSTATUS(status);
    assert_ne!(code, 200, "could not move the child {pid} into its cgroup");
    code
}

/// Pins the calling thread, and the children it forks from now on, to CPU `cpu`; false
/// if the kernel refused.
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: a zeroed CPU set with one bit set, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &raw const set) == 0
    }
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

/// Descends (creating as needed) 17 levels of 250-byte names below the current directory:
/// past `PATH_MAX` (4096), reachable only with relative paths. 0 on success.
pub fn descend_long_path() -> i32 {
    let name = "d".repeat(250);
    for _ in 0..17 {
        let _ = fs::create_dir(&name);
        if std::env::set_current_dir(&name).is_err() {
            return 100;
        }
    }
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

/// `execv(path, [path])` in the calling (child) process: returns the errno if the exec
/// fails; on success the process becomes `path` and exits with its status.
pub fn exec_errno(path: &str) -> i32 {
    let c = CString::new(path).expect("path without NUL");
    let argv = [c.as_ptr(), std::ptr::null()];
    // SAFETY: NUL-terminated argv of valid C strings.
    unsafe { libc::execv(c.as_ptr(), argv.as_ptr()) };
    std::io::Error::last_os_error().raw_os_error().unwrap_or(255)
}

/// `mmap` of `path` with `prot`, then (if `then` is not 0) `mprotect` to `then`: 0 or the
/// errno of the first call that fails.
pub fn map_errno(path: &str, prot: i32, then: i32) -> i32 {
    let Ok(file) = fs::File::open(path) else { return 255 };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: a private read-only mapping of one page, unmapped below.
    let at = unsafe { libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE, fd, 0) };
    if at == libc::MAP_FAILED {
        return std::io::Error::last_os_error().raw_os_error().unwrap_or(255);
    }
    // SAFETY: our own mapping.
    let result = if then != 0 && unsafe { libc::mprotect(at, 4096, then) } < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(255)
    } else {
        0
    };
    // SAFETY: as above.
    unsafe { libc::munmap(at, 4096) };
    result
}

/// Copies busybox to `dir/name` as a real file (not a symlink), so exec rules see that
/// path; run with no arguments it acts as the applet `name` (e.g. `true`).
pub fn tool(dir: &str, name: &str) -> String {
    fs::create_dir_all(dir).expect("creating tool directory");
    let path = format!("{dir}/{name}");
    let busybox =
        ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).expect("busybox");
    fs::copy(busybox, &path).expect("copying busybox");
    path
}

/// A running `enforcer agent`, stopped (SIGTERM) when dropped.
pub struct Agent {
    child: Option<std::process::Child>,
    pub log_file: PathBuf,
    pub policy_dir: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Files and directories of one agent under test.
pub struct AgentDirs {
    pub socket: PathBuf,
    pub policy_dir: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub log_file: PathBuf,
}

impl AgentDirs {
    /// Fresh directories named after the test, with `policy` as the only policy file.
    pub fn new(name: &str, policy: &str) -> Self {
        let base = PathBuf::from(format!("/tmp/enforcer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dirs = Self {
            socket: base.join("api.sock"),
            policy_dir: base.join("policies"),
            state_dir: base.join("state"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/enforcer-{name}")),
            log_file: base.join("verdicts.jsonl"),
        };
        fs::create_dir_all(&dirs.policy_dir).expect("creating policy dir");
        dirs.set_policy(policy);
        dirs
    }

    pub fn set_policy(&self, policy: &str) {
        fs::write(self.policy_dir.join("policy.yaml"), policy).expect("writing policy");
    }
}

fn agent_binary() -> String {
    std::env::var("ENFORCER_BIN").unwrap_or_else(|_| "/bin/enforcer".to_owned())
}

/// How long an agent may take to say it is ready. Under emulation the kernel's verifier
/// makes a start take 12-25 s with the machine to itself, twice that on a busy one, and
/// on a host slower again (its own loops at 40% of their usual speed) a second agent's
/// programs took 111 s to load while the first one's stayed attached.
pub const READY_WITHIN: Duration = Duration::from_secs(300);

impl Agent {
    /// Starts an agent and waits until it says it is ready (panics with its output if it
    /// exits or takes longer than [`READY_WITHIN`]).
    pub fn start(dirs: &AgentDirs, on_exit: &str) -> Self {
        Self::start_with(dirs, on_exit, &[])
    }

    /// [`Agent::start`] with extra command-line arguments.
    pub fn start_with(dirs: &AgentDirs, on_exit: &str, extra: &[&str]) -> Self {
        let mut args =
            vec!["--policy-dir", dirs.policy_dir.to_str().expect("UTF-8 path"), "--on-exit", on_exit];
        args.extend_from_slice(extra);
        Self::spawn(dirs, &args)
    }

    /// An agent without a policy directory (its set comes from the state directory and
    /// the API), detaching on exit.
    pub fn start_with_dirs_only(dirs: &AgentDirs, extra: &[&str]) -> Self {
        let mut args = vec!["--on-exit", "detach"];
        args.extend_from_slice(extra);
        Self::spawn(dirs, &args)
    }

    fn spawn(dirs: &AgentDirs, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut command = std::process::Command::new(agent_binary());
        command
            .arg("agent")
            .arg("--state-dir")
            .arg(&dirs.state_dir)
            .arg("--bpffs")
            .arg(&dirs.bpffs)
            .arg("--log-file")
            .arg(&dirs.log_file)
            .args(if args.contains(&"--cgroup-root") {
                Vec::new()
            } else {
                vec!["--cgroup-root".into(), cgroup2_root().into_os_string()]
            })
            .arg("--socket")
            .arg(&dirs.socket)
            .args(if args.contains(&"--rescan-ms") { &[][..] } else { &["--rescan-ms", "100"][..] })
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = spawn(&mut command).expect("starting the enforcer agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = std::sync::Arc::clone(&text);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let ready = line.contains("enforcer agent ready");
                {
                    let mut t = sink.lock().expect("stderr lock");
                    t.push_str(&line);
                    t.push('\n');
                }
                // Only once the line is in the buffer, so callers can read it.
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut agent = Self {
            child: Some(child),
            log_file: dirs.log_file.clone(),
            policy_dir: dirs.policy_dir.clone(),
            state_dir: dirs.state_dir.clone(),
            bpffs: dirs.bpffs.clone(),
            socket: dirs.socket.clone(),
            stderr: text,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return agent;
            }
            if let Some(status) = agent.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the agent exited ({status}) before it was ready:\n{}", agent.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "the agent was not ready within {} s:\n{}",
                READY_WITHIN.as_secs(),
                agent.stderr()
            );
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).expect("pid fits")
    }

    /// Asks the agent to reload its policy directory.
    pub fn reload(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGHUP) };
    }

    /// Stops the agent (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(i32::try_from(child.id()).expect("pid fits"), libc::SIGTERM) };
            let status = child.wait().expect("waiting for the agent");
            assert!(status.success(), "the agent exited with {status}:\n{}", self.stderr());
        }
    }

    /// Runs `enforcer --socket <this agent's> ARGS…`: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        cli_as(&self.socket, None, args)
    }

    /// Every JSON record in the verdict log so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits up to 30 s (the VMs run under emulation) for a record matching `want`.
    pub fn wait_record(&self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.records().into_iter().find(|r| want(r)) {
                return r;
            }
            if Instant::now() >= deadline {
                let log = fs::read_to_string(&self.log_file).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                panic!(
                    "no matching verdict record within 30 s; last log lines (newest first):\n{}\nagent stderr:\n{}",
                    tail.join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(i32::try_from(child.id()).expect("pid fits"), libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// The path of a test cgroup relative to the cgroup root, as policies name it.
pub fn relative(cgroup: &TestCgroup) -> String {
    let root = cgroup2_root();
    format!("/{}", cgroup.path.strip_prefix(&root).expect("under the root").display())
}

/// A policy document for `cgroup` with the given spec body (indented two spaces).
pub fn policy(name: &str, cgroup: &TestCgroup, body: &str) -> String {
    format!(
        "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    cgroupPath: {}\n{body}",
        relative(cgroup)
    )
}

/// `connect()` over TCP: 0 on success, else the errno.
pub fn connect_errno(addr: &str) -> i32 {
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

/// One UDP datagram sent with `sendto()` (no `connect()`): 0 on success, else the errno.
pub fn udp_send_errno(addr: &str) -> i32 {
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    let bind = if addr.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
    let socket = std::net::UdpSocket::bind(bind).expect("binding a UDP socket");
    match socket.send_to(b"ping", addr) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

/// A record field as a string ("" if absent).
pub fn field<'a>(record: &'a serde_json::Value, name: &str) -> &'a str {
    record[name].as_str().unwrap_or_default()
}

/// Runs `enforcer --socket SOCKET ARGS…`, as `uid` when given: (exit code, stdout, stderr).
pub fn cli_as(socket: &Path, uid: Option<u32>, args: &[&str]) -> (i32, String, String) {
    use std::os::unix::process::CommandExt as _;
    let mut command = std::process::Command::new(agent_binary());
    command.arg("--socket").arg(socket).args(args);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let output = output(&mut command).expect("running the enforcer CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Debian's `runc`, which the test VMs carry.
pub fn runc() -> &'static str {
    ["/bin/runc", "/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("runc (the test VM carries the host's)")
}
