//! Identity integrity and self-protection, attempted as root inside a managed workload:
//! every way out of the identity, and every way at the enforcer itself, is refused with a
//! verdict naming the reason, and the workload's own rules still apply afterwards.

use std::{
    ffi::CString,
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use enforcer_tests::{
    Agent, AgentDirs, TestCgroup, cgroup2_root, connect_errno, field, open_errno, policy, run_in, write_file,
};
use libc::{EACCES, EPERM, O_RDONLY, O_WRONLY};
use serde_json::Value;

const SECRET: &str = "/tmp/integrity/secret";

fn deny_secret(name: &str, cgroup: &TestCgroup, extra: &str) -> String {
    policy(name, cgroup, &format!("{extra}  file:\n    - path: {SECRET}\n      action: deny\n"))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(255)
}

/// Writes this process's pid into `dir/file`: 0 or the errno (of the open or the write).
fn move_self(dir: &Path, file: &str) -> i32 {
    match fs::OpenOptions::new().write(true).open(dir.join(file)) {
        Ok(mut f) => match std::io::Write::write_all(&mut f, b"0") {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(255),
        },
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

/// `clone3(CLONE_INTO_CGROUP)` into the cgroup at `dir`: 0 if a child was born there
/// (it exits at once), else the errno.
fn clone_into(dir: &Path) -> i32 {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let Ok(cgroup) = fs::File::open(dir) else { return 255 };
    let args = CloneArgs {
        flags: 0x2_0000_0000, // CLONE_INTO_CGROUP
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::try_from(cgroup.as_raw_fd()).expect("fd"),
    };
    // SAFETY: a fork-like clone3 (no shared memory); the child exits at once.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &raw const args, size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: leaving the child without unwinding.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return errno();
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(i32::try_from(pid).expect("pid"), &raw mut status, 0) };
    0
}

/// `bpf(cmd, attr)`: the returned value (a descriptor is closed) or minus the errno.
fn bpf(cmd: i32, attr: &mut [u64; 4]) -> i64 {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix of 32 bytes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 32usize) };
    if rc < 0 {
        return -i64::from(errno());
    }
    rc
}

/// `BPF_OBJ_GET` of a pinned path: 0 if a descriptor came back, else the errno.
fn obj_get(path: &Path) -> i32 {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let mut attr = [c.as_ptr() as u64, 0, 0, 0];
    let rc = bpf(7, &mut attr);
    if rc >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(i32::try_from(rc).expect("fd")) };
        return 0;
    }
    i32::try_from(-rc).expect("errno")
}

/// `BPF_MAP_GET_FD_BY_ID` of the first map id: 0 if a descriptor came back, else the errno.
fn map_by_id() -> i32 {
    let mut attr = [0u64; 4];
    // BPF_MAP_GET_NEXT_ID from 0: the lowest map id.
    if bpf(12, &mut attr) < 0 {
        return 255;
    }
    let id = attr[0] >> 32;
    let mut attr = [id, 0, 0, 0];
    let rc = bpf(14, &mut attr);
    if rc >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(i32::try_from(rc).expect("fd")) };
        return 0;
    }
    i32::try_from(-rc).expect("errno")
}

/// `ptrace(PTRACE_ATTACH)` then detach: 0 or the errno.
fn ptrace_attach(pid: i32) -> i32 {
    // SAFETY: attaching to a process by id; detached again below.
    if unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) } < 0 {
        return errno();
    }
    let mut status = 0;
    // SAFETY: waiting for the tracee to stop, then letting it go.
    unsafe {
        libc::waitpid(pid, &raw mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    0
}

/// `pidfd_getfd(pidfd_open(pid), 0)`: 0 if a descriptor came back, else the errno.
fn steal_fd(pid: i32) -> i32 {
    // SAFETY: plain syscalls with scalar arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return 255;
    }
    // SAFETY: as above.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, 0, 0) };
    let result = if fd < 0 { errno() } else { 0 };
    // SAFETY: our own descriptors.
    unsafe {
        if fd >= 0 {
            libc::close(i32::try_from(fd).expect("fd"));
        }
        libc::close(i32::try_from(pidfd).expect("fd"));
    }
    result
}

/// Reads 8 bytes at the start of `pid`'s stack with `process_vm_readv`: EPERM if refused.
fn peek(pid: i32) -> i32 {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let start = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .unwrap_or(0x1000);
    let mut buf = [0u8; 8];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: 8 };
    let remote = libc::iovec { iov_base: start as *mut libc::c_void, iov_len: 8 };
    // SAFETY: one local buffer of 8 bytes; the remote side is checked by the kernel.
    if unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) } < 0 {
        return errno();
    }
    0
}

/// A process parked in `cgroup` (or left where it is) until the guard is dropped.
struct Sleeper {
    pid: i32,
}

impl Sleeper {
    fn start(cgroup: Option<&TestCgroup>) -> Self {
        // SAFETY: the test process is single-threaded here; the child only sleeps.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if let Some(c) = cgroup {
                let _ = fs::write(c.path.join("cgroup.procs"), "0");
            }
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // Let it reach its cgroup.
        std::thread::sleep(Duration::from_millis(300));
        Self { pid }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Creates a file when dropped (a stop flag for helper processes).
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = fs::write(&self.0, "");
    }
}

fn verdict(agent: &Agent, hook: &str, reason: &str) -> Value {
    // Waits for the first, then names every (hook, reason) seen if this one is missing.
    let _ = agent.wait_record(|r| field(r, "type") == "verdict");
    for _ in 0..300 {
        if let Some(r) = agent.records().into_iter().find(|r| {
            field(r, "type") == "verdict" && field(r, "hook") == hook && field(r, "reason") == reason
        }) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen: std::collections::BTreeSet<(String, String)> = agent
        .records()
        .iter()
        .map(|r| (field(r, "hook").to_owned(), field(r, "reason").to_owned()))
        .collect();
    panic!("no {hook}/{reason} verdict within 30 s; seen: {seen:?}");
}

/// A task that joins a workload is judged as the workload from its very next call, on
/// every CPU: no record of it as unmanaged (made when a CPU last switched to it, or when
/// its cgroup was last resolved) outlives the move. Each round warms those records as
/// unmanaged first, then moves and acts at once, with no sleep that would switch away.
#[test]
fn a_task_joining_a_workload_is_judged_by_it_at_once() {
    write_file(SECRET, "s");
    let workload = TestCgroup::new("integrity-join");
    let body = format!(
        "  file:\n    - path: {SECRET}\n      action: deny\n  network:\n    - cidr: 127.0.0.9/32\n      action: deny\n"
    );
    let dirs = AgentDirs::new("integrity-join", &policy("join-policy", &workload, &body));
    let agent = Agent::start(&dirs, "detach");
    for round in 0..40 {
        let outcome = run_in(None, || {
            let mut warm = [0; 2];
            for _ in 0..20 {
                warm = [open_errno(SECRET, O_RDONLY), connect_errno("127.0.0.9:9")];
            }
            if move_self(&workload.path, "cgroup.procs") != 0 {
                return 1;
            }
            let joined = [open_errno(SECRET, O_RDONLY), connect_errno("127.0.0.9:9")];
            if warm != [0, libc::ECONNREFUSED] {
                return 2;
            }
            if joined != [EPERM, EPERM] {
                return 3;
            }
            0
        });
        assert_eq!(
            outcome, 0,
            "round {round}: 1 = could not join, 2 = denied before joining, 3 = allowed after"
        );
    }
    for hook in ["file_open", "connect4"] {
        let r = agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "hook") == hook);
        assert_eq!(field(&r, "decision"), "deny", "{r}");
        assert_eq!(field(&r, "identity"), "join-policy", "{r}");
    }
}

#[test]
fn a_managed_task_cannot_leave_its_identity() {
    write_file(SECRET, "s");
    let workload = TestCgroup::new("integrity-workload");
    let elsewhere = TestCgroup::new("integrity-elsewhere");
    let dirs = AgentDirs::new("integrity-escape", &deny_secret("escape-policy", &workload, ""));
    let agent = Agent::start(&dirs, "detach");
    let root = cgroup2_root();
    let (other, inner) = (elsewhere.path.clone(), workload.path.join("inner"));
    let outcome = run_in(Some(&workload), || {
        let to_root = move_self(&root, "cgroup.procs");
        let to_other = move_self(&other, "cgroup.procs");
        let made = fs::create_dir(root.join(format!("integrity-made-{}", std::process::id())));
        let to_made = move_self(&root.join(format!("integrity-made-{}", std::process::id())), "cgroup.procs");
        let _ = made.map(|()| fs::remove_dir(root.join(format!("integrity-made-{}", std::process::id()))));
        let threads = move_self(&other, "cgroup.threads");
        let clone = clone_into(&root);
        let renamed =
            fs::rename(&other, other.with_extension("renamed")).err().and_then(|e| e.raw_os_error());
        // Within its own subtree a task may move.
        let _ = fs::create_dir(&inner);
        let inside = move_self(&inner, "cgroup.procs");
        let secret = open_errno(SECRET, O_RDONLY);
        let expected = [EPERM, EPERM, EPERM, EPERM, EPERM, 0, EPERM];
        let got = [to_root, to_other, to_made, threads, clone, inside, secret];
        if renamed != Some(EPERM) {
            return 100;
        }
        got.iter().zip(expected).position(|(g, e)| *g != e).map_or(0, |i| 10 + i32::try_from(i).unwrap())
    });
    let _ = fs::remove_dir(workload.path.join("inner"));
    assert_eq!(
        outcome, 0,
        "step {outcome}: order root, other, made, threads, clone, inside(allowed), secret(denied); 100 = rename"
    );
    let r = verdict(&agent, "file_open", "identity-escape");
    assert_eq!(field(&r, "decision"), "deny");
    assert_eq!(field(&r, "identity"), "escape-policy");
    assert!(field(&r["target"], "path").ends_with("/cgroup.procs"), "{r}");
    verdict(&agent, "clone", "identity-escape");
    verdict(&agent, "rename", "identity-escape");
    // The workload's rule held after every attempt.
    agent.wait_record(|r| field(r, "reason") == "rule" && field(&r["target"], "path") == SECRET);
}

#[test]
fn escape_refusals_hold_in_audit_mode_too() {
    let workload = TestCgroup::new("integrity-audit");
    let dirs = AgentDirs::new("integrity-audit", &deny_secret("audit-policy", &workload, "  mode: audit\n"));
    let agent = Agent::start(&dirs, "detach");
    let root = cgroup2_root();
    let moved = run_in(Some(&workload), || move_self(&root, "cgroup.procs"));
    assert_eq!(moved, EPERM, "audit mode must not let a task leave its identity");
    let r = verdict(&agent, "file_open", "identity-escape");
    assert_eq!(field(&r, "decision"), "deny");
}

#[test]
fn a_supervisor_allowed_by_policy_moves_processes() {
    let supervisor = TestCgroup::new("integrity-supervisor");
    let target = TestCgroup::new("integrity-placed");
    let dirs = AgentDirs::new(
        "integrity-supervisor",
        &deny_secret("supervisor-policy", &supervisor, "  allowCgroupMoves: true\n"),
    );
    let _agent = Agent::start(&dirs, "detach");
    let to = target.path.clone();
    let moved = run_in(Some(&supervisor), || {
        // It places a worker (itself, forked) into another cgroup, as a runtime would.
        run_in(None, || move_self(&to, "cgroup.procs"))
    });
    assert_eq!(moved, 0, "allowCgroupMoves lets the identity move processes");
}

#[test]
fn the_enforcer_is_out_of_reach_of_managed_tasks() {
    let workload = TestCgroup::new("integrity-self");
    let dirs = AgentDirs::new("integrity-self", &deny_secret("self-policy", &workload, ""));
    let agent = Agent::start(&dirs, "detach");
    let pin_dir = fs::read_dir(&dirs.bpffs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent-")))
        .expect("the agent's pin directory");
    let pin: PathBuf = pin_dir.join("maps/CGROUP_BINDINGS");
    assert!(pin.exists(), "{} missing", pin.display());
    let agent_pid = agent.pid();
    let state_file = fs::read_dir(&dirs.state_dir).unwrap().flatten().next().expect("a state file").path();
    let (log, state_dir) = (dirs.log_file.clone(), dirs.state_dir.clone());
    let (pin_c, pin_dir_c) = (pin.clone(), pin_dir.clone());
    let results = run_in(Some(&workload), move || {
        let steps = [
            (obj_get(&pin_c), EPERM),
            (map_by_id(), EPERM),
            (fs::remove_file(&pin_c).err().and_then(|e| e.raw_os_error()).unwrap_or(0), EPERM),
            (fs::remove_dir_all(&pin_dir_c).err().and_then(|e| e.raw_os_error()).unwrap_or(0), EPERM),
            // (bpffs itself refuses names with dots: the new name has none.)
            (
                fs::rename(&pin_c, pin_c.with_file_name("MOVED"))
                    .err()
                    .and_then(|e| e.raw_os_error())
                    .unwrap_or(0),
                EPERM,
            ),
            // SAFETY: signals by pid.
            (if unsafe { libc::kill(agent_pid, libc::SIGKILL) } < 0 { errno() } else { 0 }, EPERM),
            (if unsafe { libc::kill(agent_pid, 0) } < 0 { errno() } else { 0 }, 0),
            (ptrace_attach(agent_pid), EPERM),
            (steal_fd(agent_pid), EPERM),
            (open_errno(&format!("/proc/{agent_pid}/mem"), O_RDONLY), EACCES),
            (open_errno(state_file.to_str().unwrap(), O_WRONLY), EPERM),
            (open_errno(state_dir.join("planted.yaml").to_str().unwrap(), O_WRONLY | libc::O_CREAT), EPERM),
            (open_errno(log.to_str().unwrap(), O_WRONLY | libc::O_TRUNC), EPERM),
            (fs::remove_file(&log).err().and_then(|e| e.raw_os_error()).unwrap_or(0), EPERM),
            (fs::remove_file(&state_file).err().and_then(|e| e.raw_os_error()).unwrap_or(0), EPERM),
        ];
        steps.iter().position(|(got, want)| got != want).map_or(0, |i| 10 + i32::try_from(i).unwrap())
    });
    assert_eq!(
        results,
        0,
        "step {} of the self-protection sequence was not refused as expected",
        results - 10
    );
    for (hook, reason) in [
        ("bpf", "self-protection"),
        ("unlink", "self-protection"),
        ("rename", "self-protection"),
        ("task_kill", "self-protection"),
        ("ptrace", "self-protection"),
        ("file_open", "self-protection"),
    ] {
        let r = verdict(&agent, hook, reason);
        assert_eq!(field(&r, "decision"), "deny", "{r}");
        assert_eq!(field(&r, "rule"), "self-protection", "{r}");
    }
    // Nor can it use the API (a workload could lift its own quarantine).
    let socket = agent.socket.clone();
    let api = run_in(Some(&workload), move || {
        let out = std::process::Command::new(
            std::env::var("ENFORCER_BIN").unwrap_or_else(|_| "/bin/enforcer".into()),
        )
        .arg("--socket")
        .arg(&socket)
        .args(["quarantine", "self-policy", "--reason", "from inside"])
        .output()
        .expect("running the CLI");
        let refused = String::from_utf8_lossy(&out.stderr).contains("managed identity");
        if refused { out.status.code().unwrap_or(255) } else { 100 }
    });
    assert_eq!(api, 4, "a managed caller must be refused by the API with exit code 4 (100: other error)");
    let kill = verdict(&agent, "task_kill", "self-protection");
    assert_eq!(kill["target"]["process"], agent_pid, "{kill}");
    // The agent is alive and its pins intact; unmanaged root keeps full control.
    assert!(pin.exists());
    assert_eq!(obj_get(&pin), 0, "unmanaged root may still open the pins");
    let (code, _, err) = agent.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn acting_through_a_task_of_another_identity_is_refused() {
    let workload = TestCgroup::new("integrity-borrower");
    let other = TestCgroup::new("integrity-lender");
    let dirs = AgentDirs::new("integrity-borrow", &deny_secret("borrow-policy", &workload, ""));
    let agent = Agent::start(&dirs, "detach");
    let outside = Sleeper::start(Some(&other));
    let sibling = Sleeper::start(Some(&workload));
    let (outside_pid, sibling_pid) = (outside.pid, sibling.pid);
    let results = run_in(Some(&workload), move || {
        let steps = [
            (ptrace_attach(outside_pid), EPERM),
            (steal_fd(outside_pid), EPERM),
            (peek(outside_pid), EPERM),
            (open_errno(&format!("/proc/{outside_pid}/mem"), O_RDONLY), EACCES),
            // The same identity may debug its own processes.
            (ptrace_attach(sibling_pid), 0),
            (peek(sibling_pid), 0),
        ];
        steps.iter().position(|(got, want)| got != want).map_or(0, |i| 10 + i32::try_from(i).unwrap())
    });
    assert_eq!(results, 0, "step {} of the borrowing sequence", results - 10);
    let r = verdict(&agent, "ptrace", "cross-identity");
    assert_eq!(field(&r, "decision"), "deny");
    assert_eq!(r["target"]["process"], outside_pid, "{r}");
}

#[test]
fn no_allow_after_a_bind_returned_under_churn() {
    write_file(SECRET, "s");
    let workload = TestCgroup::new("integrity-churn");
    let decoy = TestCgroup::new("integrity-decoy");
    let dirs = AgentDirs::new("integrity-churn", &deny_secret("churn-policy", &decoy, ""));
    let agent = Agent::start(&dirs, "detach");
    let bound = dirs.policy_dir.join("bound.yaml");
    let unbound = dirs.policy_dir.join("unbound.yaml");
    fs::write(&bound, deny_secret("churn-policy", &workload, "")).unwrap();
    fs::write(&unbound, deny_secret("churn-policy", &decoy, "")).unwrap();
    // Noise: a process of the workload opening the file all along, filling the cache
    // with resolutions made while the binding comes and goes.
    let noise_flag = PathBuf::from(format!("/tmp/integrity/churn-stop-{}", std::process::id()));
    let flag = noise_flag.clone();
    let path = workload.path.clone();
    let noise = std::thread::spawn(move || {
        enforcer_tests::run_in_dir(Some(&path), move || {
            // Bounded, so a failed test never leaves it running for the next ones.
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            while !flag.exists() && std::time::Instant::now() < deadline {
                let _ = open_errno(SECRET, O_RDONLY);
            }
            0
        })
    });
    // Stops the noise however this test ends.
    let stop = Stop(noise_flag.clone());
    for round in 0..15 {
        let (code, _, err) = agent.cli(&["policy", "apply", "-f", unbound.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(run_in(Some(&workload), || open_errno(SECRET, O_RDONLY)), 0, "round {round}: unbound");
        let (code, _, err) = agent.cli(&["policy", "apply", "-f", bound.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            run_in(Some(&workload), || open_errno(SECRET, O_RDONLY)),
            EPERM,
            "round {round}: an open after the bind returned was allowed"
        );
    }
    drop(stop);
    assert_eq!(noise.join().unwrap(), 0);
    let _ = fs::remove_file(&noise_flag);
}

#[test]
fn look_alike_cgroups_never_get_another_identity() {
    write_file(SECRET, "s");
    let root = cgroup2_root();
    let unit = format!("lookalike-{}.service", std::process::id());
    let id = format!("{:064x}", u128::from(std::process::id()) * 7_919);
    let real_unit = root.join("system.slice").join(&unit);
    let fake_unit = root.join("user.slice/user-1000.slice/user@1000.service/app.slice").join(&unit);
    let fake_container = root.join("user.slice/user-1000.slice").join(format!("docker-{id}.scope"));
    let prefix_container = root.join("system.slice").join(format!("docker-{}.scope", &id[..12]));
    for dir in [&real_unit, &fake_unit, &fake_container, &prefix_container] {
        fs::create_dir_all(dir).unwrap();
    }
    let text = format!(
        "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: by-unit\nspec:\n  selector:\n    systemdUnit: {unit}\n  file:\n    - path: {SECRET}\n      action: deny\n---\napiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: by-container\nspec:\n  selector:\n    containerId: {id}\n  file:\n    - path: {SECRET}\n      action: deny\n"
    );
    let dirs = AgentDirs::new("integrity-lookalike", &text);
    let agent = Agent::start(&dirs, "detach");
    let opens: Vec<i32> = [&real_unit, &fake_unit, &fake_container, &prefix_container]
        .into_iter()
        .map(|dir| enforcer_tests::run_in_dir(Some(dir), || open_errno(SECRET, O_RDONLY)))
        .collect();
    let (_, identities, _) = agent.cli(&["--output", "json", "identities"]);
    drop(agent);
    for dir in [&real_unit, &fake_unit, &fake_container, &prefix_container] {
        let _ = fs::remove_dir(dir);
    }
    assert_eq!(
        opens,
        [EPERM, 0, 0, 0],
        "only the unit under system.slice is the identity; look-alikes in a user's tree and an id prefix are not"
    );
    assert!(!identities.contains("user.slice"), "a look-alike was bound: {identities}");
}
