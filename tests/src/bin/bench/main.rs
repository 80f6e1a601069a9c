//! Real-time decisioning figures, measured inside a test VM by `cargo xtask bench`:
//! signal-to-enforcement latency of a quarantine, API call time, grant expiry precision,
//! and the cost of managed `open()`, `mkdir()`/`rmdir()` and executable `mmap()` next to
//! unmanaged ones. Figures taken under
//! emulation are only comparable with each other (ratios), not with a native kernel.

mod lsm_costs;

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    os::fd::FromRawFd as _,
    time::{Duration, Instant},
};

use enforcer_agent::{api::client::Client, daemon::record::clock::Clock};
use enforcer_tests::{
    Agent, AgentDirs, TestCgroup, connect_errno, open_errno, policy, run_in, run_in_dir, write_file,
};
use hyper::Method;

/// A child in `cgroup` that runs `action` in a loop for `seconds`, reporting
/// `unix_ns errno` lines (the time each call started) through a pipe.
fn probe(cgroup: &TestCgroup, seconds: u64, action: fn() -> i32) -> std::thread::JoinHandle<Vec<(i64, i32)>> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read_end, write_end) = (fds[0], fds[1]);
    let path = cgroup.path.clone();
    std::thread::spawn(move || {
        std::thread::spawn(move || {
            run_in_dir(Some(&path), move || {
                let end = Instant::now() + Duration::from_secs(seconds);
                while Instant::now() < end {
                    // Stamped before the call: the kernel judges it at or after this instant.
                    let started = Clock::unix_now_ns();
                    let errno = action();
                    let line = format!("{started} {errno}\n");
                    // SAFETY: writing our own buffer to the inherited pipe.
                    unsafe { libc::write(write_end, line.as_ptr().cast(), line.len()) };
                }
                0
            })
        });
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: closing the parent's copy of the write end once the child has it.
        unsafe { libc::close(write_end) };
        // SAFETY: the read end is ours.
        let reader = BufReader::new(unsafe { std::fs::File::from_raw_fd(read_end) });
        reader
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                let (ts, errno) = l.split_once(' ')?;
                Some((ts.parse().ok()?, errno.parse().ok()?))
            })
            .collect()
    })
}

fn call(
    rt: &tokio::runtime::Runtime,
    socket: &std::path::Path,
    method: Method,
    path: &str,
    body: &str,
) -> (Duration, serde_json::Value) {
    let start = Instant::now();
    let value: serde_json::Value =
        rt.block_on(Client::new(socket).call(method, path, Some(body.to_owned()))).expect("API call");
    (start.elapsed(), value)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Cgroup creation to binding: a container's cgroup selected by its id, with the periodic
/// rescan effectively off, so only the creation event can bind it.
fn cgroup_binding_delay() {
    let id = "3f2a9c1d0b7e4a5f8c6d2e1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
    let parent = TestCgroup::new("bench-containers");
    let cdirs = AgentDirs::new(
        "bench-containers",
        &format!(
            "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: container\nspec:\n  selector:\n    containerId: {id}\n  file:\n    - path: /tmp/bench/secret\n      action: deny\n"
        ),
    );
    let cagent = Agent::start_with(&cdirs, "detach", &["--rescan-ms", "60000"]);
    let (mut delays, mut slipped) = (Vec::new(), 0);
    for _ in 0..10 {
        let dir = parent.path.join(format!("docker-{id}.scope"));
        let stamp = "/tmp/bench/bound-at";
        let _ = std::fs::remove_file(stamp);
        let created = Clock::unix_now_ns();
        std::fs::create_dir(&dir).expect("creating the container cgroup");
        // The child's opens start as soon as it is in the cgroup; it notes the first denial.
        let allowed = run_in_dir(Some(&dir), || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut allowed = 0;
            while Instant::now() < deadline {
                if open_errno("/tmp/bench/secret", libc::O_RDONLY) == libc::EPERM {
                    let _ = std::fs::write("/tmp/bench/bound-at", Clock::unix_now_ns().to_string());
                    return allowed.min(250);
                }
                allowed += 1;
            }
            255
        });
        slipped += allowed;
        if let Some(at) = std::fs::read_to_string(stamp).ok().and_then(|t| t.parse::<i64>().ok()) {
            delays.push(Duration::from_nanos(u64::try_from(at - created).unwrap_or(0)));
        }
        let _ = std::fs::remove_dir(&dir);
    }
    delays.sort();
    if delays.is_empty() {
        println!("[emulated] cgroup creation to binding: NEVER BOUND");
    } else {
        println!(
            "[emulated] cgroup creation to binding (containerId, rescan off): median {:.1} ms, max {:.1} ms over {}; {} opens allowed before the binding (first ones, while unbound)",
            percentile(&delays, 50).as_secs_f64() * 1e3,
            delays[delays.len() - 1].as_secs_f64() * 1e3,
            delays.len(),
            slipped
        );
    }
    drop(cagent);
}

static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A closed port: an allowed connect fails at once with ECONNREFUSED (no backlog to
    // fill), a denied one with EPERM.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    PORT.store(closed, std::sync::atomic::Ordering::Relaxed);
    write_file("/tmp/bench/secret", "s");
    write_file("/tmp/bench/plain", "p");
    let cgroup = TestCgroup::new("bench");
    let dirs = AgentDirs::new(
        "bench",
        &policy("bench-policy", &cgroup, "  file:\n    - path: /tmp/bench/secret\n      action: deny\n"),
    );
    let agent = Agent::start(&dirs, "detach");

    // 1. Quarantine: syscalls after the API call returned that were still allowed.
    let worker = probe(&cgroup, 3, || {
        connect_errno(&format!("127.0.0.1:{}", PORT.load(std::sync::atomic::Ordering::Relaxed)))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let body = r#"{"identity":"bench-policy","reason":"bench"}"#;
    let (took, _) = call(&rt, &dirs.socket, Method::POST, "/v1/quarantine", body);
    let returned = Clock::unix_now_ns();
    let samples = worker.join().unwrap();
    let after: Vec<_> = samples.iter().filter(|(ts, _)| *ts > returned).collect();
    let allowed_after = after.iter().filter(|(_, e)| *e != libc::EPERM).count();
    let first_denied = after.iter().find(|(_, e)| *e == libc::EPERM).map(|(ts, _)| ts - returned);
    println!(
        "[emulated] quarantine: API call {:.3} ms; {} connects after it returned, {} of them allowed; first denial {} µs after the return",
        took.as_secs_f64() * 1e3,
        after.len(),
        allowed_after,
        first_denied.map_or(-1, |ns| ns / 1000)
    );
    println!(
        "  signal-to-enforcement: {}",
        if allowed_after == 0 { "the very next syscall" } else { "LATE" }
    );

    // 2. API call time for live-state changes (quarantine/release pairs).
    let mut calls = Vec::new();
    for _ in 0..50 {
        calls.push(call(&rt, &dirs.socket, Method::DELETE, "/v1/quarantine/bench-policy", "").0);
        calls.push(call(&rt, &dirs.socket, Method::POST, "/v1/quarantine", body).0);
    }
    call(&rt, &dirs.socket, Method::DELETE, "/v1/quarantine/bench-policy", "");
    calls.sort();
    println!(
        "[emulated] live-state API calls: median {:.3} ms, p99 {:.3} ms over {}",
        percentile(&calls, 50).as_secs_f64() * 1e3,
        percentile(&calls, 99).as_secs_f64() * 1e3,
        calls.len()
    );

    // 3. Grant expiry precision, with the agent running.
    let grant = r#"{"identity":"bench-policy","target":{"kind":"file","path":"/tmp/bench/secret","access":["read"]},"ttl":"2s","reason":"bench"}"#;
    let (_, granted) = call(&rt, &dirs.socket, Method::POST, "/v1/grants", grant);
    let expires = granted["expiresUnixNs"].as_i64().unwrap();
    let samples = probe(&cgroup, 4, || open_errno("/tmp/bench/secret", libc::O_RDONLY)).join().unwrap();
    let allowed_late = samples.iter().filter(|(ts, e)| *e == 0 && *ts > expires).count();
    let last_allowed = samples.iter().filter(|(_, e)| *e == 0).map(|(ts, _)| *ts).max();
    let first_denied =
        samples.iter().filter(|(ts, e)| *e == libc::EPERM && *ts >= expires).map(|(ts, _)| *ts).min();
    println!(
        "[emulated] grant expiry: {} opens, last allowed {} µs before the instant, first denial {} µs after it, {} allowed after it",
        samples.len(),
        last_allowed.map_or(-1, |t| (expires - t) / 1000),
        first_denied.map_or(-1, |t| (t - expires) / 1000),
        allowed_late
    );
    println!("  precision: {}", if allowed_late == 0 { "no allow after the instant" } else { "LATE" });

    // 4. Cgroup creation to binding.
    cgroup_binding_delay();

    // 5. Hook costs, managed next to unmanaged in the same run: program time against
    // empty programs, whole calls against Landlock, then whole calls as before.
    if let Err(e) = lsm_costs::program_times(&agent, &cgroup) {
        println!("[emulated] LSM program time: not measured: {e:#}");
    }
    lsm_costs::against_landlock(&cgroup);
    hook_costs(&cgroup);

    // 6. Verifier cost of the programs (load time grows with it, on emulated CPUs most).
    let (_, out, _) = agent.cli(&["--output", "json", "status"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let programs = status["programs"].as_array().cloned().unwrap_or_default();
    let insns = |name: &str| {
        programs.iter().find(|p| p["name"] == name).and_then(|p| p["verified_insns"].as_u64()).unwrap_or(0)
    };
    let total: u64 = programs.iter().filter_map(|p| p["verified_insns"].as_u64()).sum();
    println!(
        "[emulated] verifier: file_open {} insns, bprm_check_security {}, mmap_file {}, {} programs {} in all",
        insns("file_open"),
        insns("bprm_check_security"),
        insns("mmap_file"),
        programs.len(),
        total
    );
    drop(agent);
}

/// The cost of hooked syscalls for a managed task next to an unmanaged one, same run:
/// the write-class and mapping hooks (mkdir+rmdir: two inode hooks judged by file
/// identity; an executable mapping: `mmap_file`), then `open()` (printed last: `cargo
/// xtask bench` checks for that line).
fn hook_costs(cgroup: &TestCgroup) {
    let change_loop = |cg: Option<&TestCgroup>| {
        let start = Instant::now();
        run_in(cg, || {
            let dir = c"/tmp/bench/made";
            for _ in 0..5_000 {
                // SAFETY: plain syscalls on a constant path.
                unsafe {
                    libc::mkdir(dir.as_ptr(), 0o755);
                    libc::rmdir(dir.as_ptr());
                }
            }
            0
        });
        start.elapsed()
    };
    let map_loop = |cg: Option<&TestCgroup>| {
        let start = Instant::now();
        run_in(cg, || {
            let file = std::fs::File::open("/tmp/bench/plain").expect("bench file");
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            for _ in 0..5_000 {
                // SAFETY: a private one-page mapping of our own file, unmapped at once.
                unsafe {
                    let at = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE,
                        fd,
                        0,
                    );
                    if at != libc::MAP_FAILED {
                        libc::munmap(at, 4096);
                    }
                }
            }
            0
        });
        start.elapsed()
    };
    // Every fork and exit passes the runtime tracepoints (and a managed fork `task_alloc`).
    let fork_loop = |cg: Option<&TestCgroup>| {
        let start = Instant::now();
        run_in(cg, || {
            for _ in 0..2_000 {
                // SAFETY: the child only exits; the parent reaps it.
                unsafe {
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::_exit(0);
                    }
                    if pid > 0 {
                        libc::waitpid(pid, std::ptr::null_mut(), 0);
                    }
                }
            }
            0
        });
        start.elapsed()
    };
    for (what, run) in [
        ("mkdir()+rmdir() x5000", &change_loop as &dyn Fn(_) -> _),
        ("mmap(PROT_EXEC) x5000", &map_loop),
        ("fork()+exit+wait() x2000", &fork_loop),
    ] {
        let (unmanaged, managed) = (run(None), run(Some(cgroup)));
        println!(
            "[emulated] {what}: unmanaged {:.1} ms, managed {:.1} ms, ratio {:.2}",
            unmanaged.as_secs_f64() * 1e3,
            managed.as_secs_f64() * 1e3,
            managed.as_secs_f64() / unmanaged.as_secs_f64()
        );
    }

    let open_loop = |cg: Option<&TestCgroup>| {
        let start = Instant::now();
        run_in(cg, || {
            for _ in 0..20_000 {
                open_errno("/tmp/bench/plain", libc::O_RDONLY);
            }
            0
        });
        start.elapsed()
    };
    let (unmanaged, managed) = (open_loop(None), open_loop(Some(cgroup)));
    println!(
        "[emulated] open()+close() x20000: unmanaged {:.1} ms, managed {:.1} ms, ratio {:.2}",
        unmanaged.as_secs_f64() * 1e3,
        managed.as_secs_f64() * 1e3,
        managed.as_secs_f64() / unmanaged.as_secs_f64()
    );
}
