//! Figures measured on the build host's own kernel by `cargo xtask bench`: the network
//! hooks' program time next to an empty program of the same type (BPF statistics), policy
//! swaps, a flood of denials, the agent's memory and its API over one connection. The
//! host cannot load BPF LSM programs, so the agent runs with `--network-only`, attached
//! to a cgroup created for the run (never the host's cgroup root).

use std::{
    fmt::Write as _,
    net::UdpSocket,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use enforcer_tests::{
    Agent, AgentDirs, TestCgroup,
    bpf_stats::{self, EmptyProgram, Sample},
    worker::Worker,
};
use hyper::Method;

/// A figure with its target: printed as `[native] label: value (target …: met)`.
fn report(label: &str, value: &str, target: &str, met: bool) {
    println!("[native] {label}: {value} (target {target}: {})", if met { "met" } else { "MISSED" });
}

fn policy(name: &str, cgroup_path: &str, network: &str) -> String {
    format!(
        "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    cgroupPath: {cgroup_path}\n  defaults:\n    network: allow\n  network:\n{network}"
    )
}

/// `count` deny rules, one distinct /24 each, starting at the `first`th /24 of 10/8.
fn cidr_rules(first: usize, count: usize) -> String {
    let mut out = String::new();
    for i in first..first + count {
        let _ = writeln!(
            out,
            "    - cidr: 10.{}.{}.0/24\n      ports: 443\n      action: deny",
            i >> 8 & 255,
            i & 255
        );
    }
    out
}

/// `count` deny rules spread over policies of at most `per_policy` rules each.
fn big_set(prefix: &str, count: usize, per_policy: usize) -> String {
    let mut docs = Vec::new();
    let mut first = 0;
    while first < count {
        let n = per_policy.min(count - first);
        let name = format!("{prefix}-{}", docs.len());
        docs.push(policy(&name, &format!("/{name}"), &cidr_rules(first, n)));
        first += n;
    }
    docs.join("---\n")
}

/// `connect()` of one UDP socket `count` times: the number that failed with EPERM.
fn connect_loop(addr: &str, count: u32) -> i32 {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("binding a UDP socket");
    let mut denied = 0u32;
    for _ in 0..count {
        if let Err(e) = socket.connect(addr)
            && e.raw_os_error() == Some(libc::EPERM)
        {
            denied += 1;
        }
    }
    // The exit code carries the share denied, in percent.
    i32::try_from(u64::from(denied) * 100 / u64::from(count.max(1))).unwrap_or(255)
}

/// What a flood left behind: every call denied, counted by the kernel and logged.
struct Accounted {
    calls: u64,
    all_denied: bool,
    denials: u64,
    dropped: u64,
    logged: u64,
}

impl Accounted {
    fn complete(&self) -> bool {
        self.all_denied && self.denials == self.calls && self.logged == self.calls && self.dropped == 0
    }
}

impl std::fmt::Display for Accounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, kernel counted {} denials, verdict log accounts for {}, {} events dropped",
            if self.all_denied { "all EPERM" } else { "NOT all EPERM" },
            self.denials,
            self.logged,
            self.dropped
        )
    }
}

/// Runs `f` in `n` forked children placed in `cgroup`, released together once all are in
/// place: the wall time from release until the last exits, and each child's exit code.
fn run_together(cgroup: &TestCgroup, n: usize, f: impl Fn() -> i32) -> (Duration, Vec<i32>) {
    let mut gate = [0; 2];
    // SAFETY: a fresh pipe; the children block reading it until the parent closes its end.
    assert_eq!(unsafe { libc::pipe(gate.as_mut_ptr()) }, 0, "pipe failed");
    let procs = cgroup.path.join("cgroup.procs");
    let mut children = Vec::new();
    for _ in 0..n {
        // SAFETY: the child only moves itself, waits on the pipe, runs `f` and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: the child's copies of the descriptors; exit without unwinding.
            unsafe {
                libc::close(gate[1]);
                if std::fs::write(&procs, "0").is_err() {
                    libc::_exit(200);
                }
                let mut byte = 0u8;
                libc::read(gate[0], (&raw mut byte).cast(), 1);
                libc::_exit(f());
            }
        }
        children.push(pid);
    }
    // Every child is in the cgroup once its cgroup.procs write is done: wait for that by
    // polling the cgroup's member list.
    while std::fs::read_to_string(&procs).map_or(0, |s| s.lines().count()) < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    // SAFETY: closing our own descriptors releases the children at once.
    unsafe {
        libc::close(gate[1]);
        libc::close(gate[0]);
    }
    let codes = children
        .into_iter()
        .map(|pid| {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid, "waitpid failed");
            libc::WEXITSTATUS(status)
        })
        .collect();
    (start.elapsed(), codes)
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok())
        })
        .unwrap_or(0)
}

fn status(agent: &Agent) -> anyhow::Result<serde_json::Value> {
    let (code, out, err) = agent.cli(&["--output", "json", "status"]);
    if code != 0 {
        bail!("status failed: {err}");
    }
    Ok(serde_json::from_str(&out)?)
}

/// Wall time of `enforcer policy apply -f FILE` with `text` in FILE; fails on a refusal.
fn apply(agent: &Agent, file: &Path, text: &str) -> anyhow::Result<Duration> {
    std::fs::write(file, text)?;
    let start = Instant::now();
    let out = Command::new(std::env::var("ENFORCER_BIN").unwrap_or_else(|_| "enforcer".to_owned()))
        .arg("--socket")
        .arg(&agent.socket)
        .args(["policy", "apply", "-f"])
        .arg(file)
        .output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(took)
}

/// Time from sending the policies of YAML `text` as JSON on `conn` to the agent's answer
/// (the YAML is read before the clock starts); fails on a refusal.
async fn apply_json(
    conn: &mut enforcer_agent::api::client::Connection,
    text: &str,
) -> anyhow::Result<Duration> {
    let policies = enforcer_agent::policy::validate::parse("bench set", text)
        .map_err(|e| anyhow::anyhow!("bench policies do not parse: {e}"))?;
    let start = Instant::now();
    let _: serde_json::Value = conn.call_json(Method::POST, "/v1/policies", &policies).await?;
    Ok(start.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The agent under measurement and the cgroups it judges.
/// Fields drop in order: the agent first, the cgroups' root last.
struct Bench {
    agent: Agent,
    /// Where the policy files applied through the CLI are written.
    file: std::path::PathBuf,
    unmanaged: TestCgroup,
    one: TestCgroup,
    wide: TestCgroup,
    root: TestCgroup,
}

/// Batches the connect figures are measured in (10,000 calls each).
const BATCHES: u32 = 20;

const ONE_RULE: &str = "    - cidr: 10.255.255.0/24\n      action: deny\n";

impl Bench {
    fn relative(&self, c: &TestCgroup) -> String {
        format!("/{}", c.path.strip_prefix(&self.root.path).expect("child").display())
    }

    fn program_id(&self, name: &str) -> anyhow::Result<u32> {
        let s = status(&self.agent)?;
        s["programs"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).and_then(|p| p["id"].as_u64()))
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("status names no id for program {name}"))
    }

    /// Program time per connect, next to an empty connect4 program on the same cgroup,
    /// both run at every call: each program's median over batches of calls made by one
    /// process in the subject's cgroup (see `worker`), so that a batch held up on the
    /// host while a program ran does not decide the figure.
    fn hook_costs(&self) -> anyhow::Result<()> {
        let connect4 = self.program_id("connect4")?;
        let switch = self.program_id("sched_switch")?;
        let _stats = bpf_stats::enable()?;
        let empty = EmptyProgram::connect4(&self.root.path)?;
        let calls = 200_000;
        for (label, cgroup, target) in [
            ("unmanaged", &self.unmanaged, 1.5),
            ("managed, 1 rule", &self.one, 3.0),
            ("managed, 1k CIDRs", &self.wide, 3.0),
        ] {
            let work = |count| connect_loop("127.0.0.1:9", count);
            let mut worker = Worker::start(Some(cgroup.path.as_path()), &work)?;
            // Warm the identity cache and the CPU's, then measure.
            worker.batch(1000)?;
            let (mut ours, mut floor, mut runs) = (Vec::new(), Vec::new(), 0);
            for _ in 0..BATCHES {
                let before = Sample::take(&[connect4, empty.id])?;
                worker.batch(calls / BATCHES)?;
                let after = Sample::take(&[connect4, empty.id])?;
                let (ns, count) = before.per_run(&after, connect4);
                ours.push(ns);
                runs += count;
                floor.push(before.per_run(&after, empty.id).0);
            }
            let (ns, floor) = (bpf_stats::median(&ours), bpf_stats::median(&floor));
            let ratio = ns / floor.max(0.1);
            report(
                &format!("connect prog time, {label}"),
                &format!(
                    "{ns:.0} ns vs empty program {floor:.0} ns = {ratio:.2}x, median batches of {BATCHES} over {runs} runs"
                ),
                &format!("<= {target}x"),
                ratio <= target,
            );
        }
        // What the hooks' record of each CPU's task costs where it is kept: at every
        // context switch of the machine, whoever runs. Two threads handing a token back
        // and forth switch at every hand-over.
        let first = Sample::take(&[switch])?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(0);
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<u32>(0);
        let partner = std::thread::spawn(move || {
            while let Ok(n) = rx.recv() {
                if back_tx.send(n).is_err() {
                    break;
                }
            }
        });
        for n in 0..20_000 {
            tx.send(n)?;
            back_rx.recv()?;
        }
        drop(tx);
        let _ = partner.join();
        let (ns, runs) = first.per_run(&Sample::take(&[switch])?, switch);
        println!(
            "[native] context-switch record (sched_switch program), paid at every switch of the machine: \
             {ns:.0} ns per switch over {runs} switches of a thread ping-pong (no target)"
        );
        Ok(())
    }

    /// Floods of denials: from one tight loop, then from one loop per CPU at once (one
    /// loop cannot issue 1M calls a second here); every denial must be accounted for.
    fn flood(&self) -> anyhow::Result<()> {
        let count = 100_000;
        let (took, accounted) = self.flood_from(1, count, "10.255.255.1")?;
        report(
            "flood of 100k denied connects, one loop",
            &format!(
                "{:.0} ms ({:.2} M/s), {accounted}",
                ms(took),
                f64::from(count) / took.as_secs_f64() / 1e6
            ),
            "0 dropped, all logged",
            accounted.complete(),
        );
        let loops = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (took, accounted) = self.flood_from(loops, count, "10.255.255.2")?;
        let total = f64::from(count) * f64::from(u32::try_from(loops).unwrap_or(u32::MAX));
        let rate = total / took.as_secs_f64();
        report(
            &format!("denials absorbed, {loops} loops at once (one per CPU)"),
            &format!("{total:.0} in {:.0} ms = {:.2} M/s, {accounted}", ms(took), rate / 1e6),
            ">= 1M/s, 0 dropped, all logged",
            accounted.complete() && rate >= 1e6,
        );
        Ok(())
    }

    /// `loops` processes in the one-rule workload, each connecting `count` times to the
    /// denied `addr` (port 443), started together; the wall time and what was accounted.
    fn flood_from(&self, loops: usize, count: u32, addr: &str) -> anyhow::Result<(Duration, Accounted)> {
        let before = status(&self.agent)?;
        let target = format!("{addr}:443");
        let (took, codes) = run_together(&self.one, loops, || connect_loop(&target, count));
        std::thread::sleep(Duration::from_secs(3));
        let after = status(&self.agent)?;
        let counter = |s: &serde_json::Value, k: &str| s["counters"][k].as_u64().unwrap_or(0);
        let needle = format!("\"{addr}\"");
        Ok((
            took,
            Accounted {
                calls: u64::from(count) * loops as u64,
                all_denied: codes.iter().all(|c| *c == 100),
                denials: counter(&after, "deny") - counter(&before, "deny"),
                dropped: counter(&after, "events_dropped") - counter(&before, "events_dropped"),
                logged: self
                    .agent
                    .records()
                    .iter()
                    .filter(|r| r.to_string().contains(&needle))
                    .map(|r| r["count"].as_u64().unwrap_or(1))
                    .sum(),
            },
        ))
    }

    /// Memory idle and with 10k rules; policy swaps: the whole 10k set, again (a second
    /// generation), one rule; then the widest set. Swaps are timed over the API (JSON on
    /// one open connection, as a controller sends them), and once more with the CLI.
    fn memory_and_swaps(&self) -> anyhow::Result<()> {
        let idle = rss_kib(self.agent.pid());
        let ten_k = big_set("bench-big", 10_000, 3_334);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut conn = rt.block_on(enforcer_agent::api::client::Client::new(&self.agent.socket).connect())?;
        let mut post = |text: &str| rt.block_on(apply_json(&mut conn, text));
        let swap = post(&ten_k);
        // The agent gives its apply buffers back once it has been quiet for a second.
        std::thread::sleep(Duration::from_millis(1_500));
        let loaded = rss_kib(self.agent.pid());
        report("agent RSS idle", &format!("{:.1} MiB", mib(idle)), "<= 25 MiB", idle <= 25 * 1024);
        report(
            "agent RSS with 10k rules",
            &format!("{:.1} MiB", mib(loaded)),
            "<= 40 MiB",
            swap.is_ok() && loaded <= 40 * 1024,
        );
        let first = match swap {
            Ok(first) => first,
            Err(e) => {
                report("replace 10k network rules", &format!("refused: {e}"), "<= 50 ms", false);
                return Ok(());
            }
        };
        let again = post(&ten_k.replace("ports: 443", "ports: 444"))?;
        report(
            "replace 10k network rules via the API",
            &format!("{:.1} ms first, {:.1} ms all changed", ms(first), ms(again)),
            "<= 50 ms",
            ms(first.max(again)) <= 50.0,
        );
        let one_rule = |port: u16| {
            policy("bench-one", &self.relative(&self.one), &format!("{ONE_RULE}      ports: {port}\n"))
        };
        let mut times = Vec::new();
        for port in 1..=5 {
            times.push(post(&one_rule(port))?);
        }
        let one_change = median(times);
        report(
            "change 1 rule with 10k in force via the API",
            &format!("{:.2} ms median of 5", ms(one_change)),
            "<= 1 ms",
            ms(one_change) <= 1.0,
        );
        // The same through the CLI: a process start, reading YAML, a connection.
        let cli_all = apply(&self.agent, &self.file, &ten_k.replace("ports: 443", "ports: 445"))?;
        let mut times = Vec::new();
        for port in 6..=10 {
            times.push(apply(&self.agent, &self.file, &one_rule(port))?);
        }
        println!(
            "[native] the same with the CLI (process start, YAML read, connection): 10k changed {:.1} ms, 1 rule {:.2} ms median of 5 (no target)",
            ms(cli_all),
            ms(median(times))
        );
        // Replacing the 10k policies: with the 1,001 CIDRs of the two base policies, the
        // set in force then holds exactly 65,536.
        let (value, met) = match post(&big_set("bench-big", 65_536 - 1_001, 4_096)) {
            Ok(took) => (format!("accepted in {:.1} ms", ms(took)), true),
            Err(e) => (format!("refused: {e}"), false),
        };
        report("a set of 65,536 CIDR rules", &value, "accepted", met);
        Ok(())
    }

    /// Live-state API over one connection: quarantine and release.
    fn api(&self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut calls = rt.block_on(async {
            let mut conn = enforcer_agent::api::client::Client::new(&self.agent.socket).connect().await?;
            let body = r#"{"identity":"bench-one","reason":"bench"}"#;
            let mut calls = Vec::new();
            for i in 0..220 {
                let start = Instant::now();
                let _: serde_json::Value = if i % 2 == 0 {
                    conn.call(Method::POST, "/v1/quarantine", Some(body.to_owned())).await?
                } else {
                    conn.call(Method::DELETE, "/v1/quarantine/bench-one", None).await?
                };
                // The first calls pay one-off costs.
                if i >= 20 {
                    calls.push(start.elapsed());
                }
            }
            anyhow::Ok(calls)
        })?;
        calls.sort();
        let (p50, p99) = (calls[calls.len() / 2], calls[calls.len() * 99 / 100]);
        report(
            "live-state API over one connection",
            &format!(
                "median {:.0} µs, p99 {:.0} µs over {}",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                calls.len()
            ),
            "median <= 200 µs, p99 <= 1 ms",
            p50 <= Duration::from_micros(200) && p99 <= Duration::from_millis(1),
        );
        Ok(())
    }
}

#[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn mount_bpffs() -> anyhow::Result<()> {
    if std::fs::read_to_string("/proc/mounts")?.contains(" /sys/fs/bpf bpf ") {
        return Ok(());
    }
    if !Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status()?.success() {
        bail!("mounting bpffs on /sys/fs/bpf failed");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    mount_bpffs()?;
    let root = TestCgroup::new("bench-native");
    let (unmanaged, one, wide) = (root.child("unmanaged"), root.child("one"), root.child("wide"));
    let relative = |c: &TestCgroup| format!("/{}", c.path.strip_prefix(&root.path).expect("child").display());
    let base = format!(
        "{}---\n{}",
        policy("bench-one", &relative(&one), ONE_RULE),
        policy("bench-wide", &relative(&wide), &cidr_rules(0, 1000))
    );
    let dirs = AgentDirs::new("bench-native", &base);
    let root_arg = root.path.to_str().context("UTF-8 cgroup path")?.to_owned();
    let agent = Agent::start_with(&dirs, "detach", &["--network-only", "--cgroup-root", &root_arg]);
    let file = dirs.policy_dir.with_file_name("bench-set.yaml");
    let bench = Bench { agent, file, unmanaged, one, wide, root };
    bench.hook_costs()?;
    bench.flood()?;
    bench.memory_and_swaps()?;
    // The agent trims its heap once it has been a second without an apply (a few
    // milliseconds in which its allocations wait): the API is timed after that.
    std::thread::sleep(Duration::from_millis(1_500));
    bench.api()?;
    Ok(())
}
