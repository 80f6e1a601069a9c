//! The LSM hooks' program time next to empty LSM programs of the same hooks,
//! and a managed `open()` next to Landlock enforcing an equivalent rule, in one VM run.

use std::time::Instant;

use anyhow::Context as _;
use enforcer_tests::{
    Agent, TestCgroup,
    bpf_stats::{self, EmptyProgram, Sample},
    exec_errno, open_errno, run_in, tool,
    worker::Worker,
};

fn report(label: &str, value: &str, target: &str, met: bool) {
    println!("[emulated] {label}: {value} (target {target}: {})", if met { "met" } else { "MISSED" });
}

fn status(agent: &Agent) -> anyhow::Result<serde_json::Value> {
    let (_, out, _) = agent.cli(&["--output", "json", "status"]);
    serde_json::from_str(&out).context("status as JSON")
}

fn program_id(agent: &Agent, name: &str) -> anyhow::Result<u32> {
    status(agent)?["programs"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name).and_then(|p| p["id"].as_u64()))
        .and_then(|n| u32::try_from(n).ok())
        .with_context(|| format!("status names no id for program {name}"))
}

fn counter(agent: &Agent, name: &str) -> anyhow::Result<u64> {
    status(agent)?["counters"][name].as_u64().with_context(|| format!("status shows no counter {name}"))
}

/// Pins the calling process, and the children it forks from now on, to `cpu`: every
/// round then runs the same way. Left to the scheduler, an exec's child runs on one CPU
/// or the other and may move at the exec itself, and the empty program's time per exec
/// measured anywhere from 0.8 to 2.1 µs between runs. A refusal leaves it unpinned.
fn pin_to(cpu: usize) {
    let _ = enforcer_tests::pin_to_cpu(cpu);
}

/// The CPU the measured loops run on (the guest has two).
const BENCH_CPU: usize = 1;

fn open_loop(count: u32) -> i32 {
    for _ in 0..count {
        open_errno("/tmp/bench/plain", libc::O_RDONLY);
    }
    0
}

fn exec_loop(program: &str, count: u32) -> i32 {
    pin_to(BENCH_CPU);
    for _ in 0..count {
        // SAFETY: the child only execs (or exits); the parent reaps it.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                exec_errno(program);
                libc::_exit(127);
            }
            if pid > 0 {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
    0
}

/// Rounds each program-time figure is measured in: a round's ratio is ours over the
/// empty program's in that round, and the median round is reported. Under emulation a
/// single stretch swings by a third (the empty program itself measured 440 and 760 ns in
/// one run), and a median of interleaved rounds keeps one slow stretch from deciding.
const ROUNDS: usize = 5;

/// Batches a stretch of a round is made in, the counters read between them: a round's
/// figure for each program is its median batch. Under emulation a batch now and then
/// takes several times the others (most likely the emulator's thread held up on the
/// host while a program ran: one batch of 50 execs measured 60 µs per call where the rest of its
/// stretch measured 1.8 to 2.3 µs), and a mean over a stretch let one such batch decide
/// a round.
const BATCHES: u32 = 10;

/// `file_open` and `bprm_check_security` program time, unmanaged and managed, against
/// empty LSM programs on the same hooks.
///
/// Each program is measured where it runs first on its hook, as ours does where it runs
/// alone: a round runs its calls with the empty program attached for half of them (the
/// kernel runs the last attached first, so it is the empty program's time that counts)
/// and detached for the other half (ours first). Where an exec's hook runs, the first
/// program pays for the trampoline code that calls them all, cold after the exec's switch
/// of address space: the same empty program measured about 1.4 µs run first and 0.7 µs
/// run second in the same rounds. Comparing ours second with an empty program first would
/// leave that out of ours and count it in the floor.
///
/// A round's calls are made by one process in the subject's cgroup, set going before
/// the counters are first read ([`Worker`]), in batches with the counters read between
/// them; each program's figure in a round is its median batch ([`BATCHES`]).
pub fn program_times(agent: &Agent, cgroup: &TestCgroup) -> anyhow::Result<()> {
    let true_tool = tool("/tmp/bench/bin", "true");
    let _stats = bpf_stats::enable()?;
    for (hook, work, calls, cache_hits) in [
        (
            "file_open",
            &(|count| {
                pin_to(BENCH_CPU);
                open_loop(count)
            }) as &dyn Fn(u32) -> i32,
            4_000,
            "open_cache_hits",
        ),
        // An exec costs some thousand times an open: fewer calls per round, but enough
        // that the interrupts a round's calls happen to absorb (the program time counts
        // them) average out; with 200, single rounds swung from 0.8 to 4.8 times.
        ("bprm_check_security", &|count| exec_loop(&true_tool, count), 1_000, "exec_cache_hits"),
    ] {
        // The exec counter also counts the executable mappings judged from the cache: the
        // loader maps each program it runs, so a cached exec counts twice.
        let counted =
            if hook == "file_open" { "" } else { ", with the program's executable mapping at each exec" };
        let ours = program_id(agent, hook)?;
        let mut empty = EmptyProgram::lsm(hook)?;
        println!(
            "[emulated] {hook}: the empty program's code page holds {}; ours holds {}",
            code_page(empty.id)?,
            code_page(ours)?
        );
        let subjects = [("unmanaged", None, 1.5), ("managed", Some(cgroup), 5.0)];
        let mut rounds: [Vec<Round>; 2] = Default::default();
        let hits_before = counter(agent, cache_hits)?;
        let mut managed_runs = 0;
        // Interleaved, so a slow stretch of the machine falls on both subjects alike.
        for _ in 0..ROUNDS {
            for ((_, cg, _), rounds) in subjects.iter().zip(&mut rounds) {
                let mut worker = Worker::start(cg.map(|c| c.path.as_path()), work)?;
                // A round's calls in four stretches, the empty program attached in the
                // first and last: the two programs' stretches then lie around the same
                // middle, and a machine speeding up or slowing down through the round
                // falls on both alike.
                let mut round = Round::default();
                for attached in [true, false, false, true] {
                    empty.attach_lsm(attached)?;
                    // The program run first: the empty one if attached (the kernel runs
                    // the last attached first), else ours.
                    let first = if attached { empty.id } else { ours };
                    for _ in 0..BATCHES {
                        let before = Sample::take(&[ours, empty.id])?;
                        worker.batch(calls / 2 / BATCHES)?;
                        let after = Sample::take(&[ours, empty.id])?;
                        round.add(attached, before.per_run(&after, first));
                        if cg.is_some() {
                            managed_runs += before.per_run(&after, ours).1;
                        }
                    }
                }
                rounds.push(round);
            }
        }
        // The managed calls repeat one open or exec: all but the first on each CPU (whose
        // identity line is written then) should be decided from the open cache.
        println!(
            "[emulated] {hook}, managed: {} of {managed_runs} calls decided from the open cache ({cache_hits}{counted})",
            counter(agent, cache_hits)? - hits_before
        );
        for ((label, _, target), mut rounds) in subjects.into_iter().zip(rounds) {
            rounds.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
            let mid = &rounds[ROUNDS / 2];
            let (mid_ours, mid_floor) = mid.medians();
            let runs: u64 = rounds.iter().map(|r| r.runs).sum();
            let (low, high) = (rounds[0].ratio(), rounds[ROUNDS - 1].ratio());
            report(
                &format!("{hook} prog time, {label}"),
                &format!(
                    "{mid_ours:.0} ns vs empty program {mid_floor:.0} ns = {:.2}x, each first on the hook, median batches, median of {ROUNDS} rounds ({low:.2}-{high:.2}x) over {runs} runs",
                    mid.ratio()
                ),
                &format!("<= {target}x"),
                mid.ratio() <= target,
            );
        }
    }
    Ok(())
}

/// What else starts on the page of the code of program `id` (nothing, or how many other
/// BPF symbols, naming the trampolines among them: code run just before a program on its
/// hook), and where on it the program's main function lies: one that runs into the next
/// page runs on two pages.
fn code_page(id: u32) -> anyhow::Result<String> {
    let Some((at, length)) = bpf_stats::code_span_of(id)? else {
        return Ok("(code addresses hidden)".to_owned());
    };
    let others = bpf_stats::page_neighbours(at, at)?;
    let trampolines: Vec<&str> =
        others.iter().filter(|n| n.starts_with("bpf_trampoline_")).map(String::as_str).collect();
    let neighbours = match (others.len(), trampolines.len()) {
        (0, _) => "no other code".to_owned(),
        (n, 0) => format!("{n} other BPF symbols, no trampoline"),
        (n, _) => format!("{n} other BPF symbols, among them {}", trampolines.join(", ")),
    };
    let (start, end) = (at % 4096, at % 4096 + u64::from(length));
    let pages = if end > 4096 { ", into the next page" } else { "" };
    Ok(format!("{neighbours}, its main function at bytes {start}-{end}{pages}"))
}

/// One round of a program-time figure: ours and the empty program's time per run in
/// each batch, each measured first on the hook.
#[derive(Default)]
struct Round {
    ours: Vec<f64>,
    floor: Vec<f64>,
    runs: u64,
}

impl Round {
    /// Adds a batch's time per call and calls of the program run first, the empty one if
    /// `empty` holds, else ours.
    fn add(&mut self, empty: bool, (ns, runs): (f64, u64)) {
        if runs == 0 {
            return;
        }
        if empty {
            self.floor.push(ns);
        } else {
            self.ours.push(ns);
            self.runs += runs;
        }
    }

    /// Ours and the empty program's median batch, in ns per call.
    fn medians(&self) -> (f64, f64) {
        (bpf_stats::median(&self.ours), bpf_stats::median(&self.floor))
    }

    fn ratio(&self) -> f64 {
        let (ours, floor) = self.medians();
        ours / floor.max(0.1)
    }
}

/// Restricts the calling process with Landlock to the equivalent of the bench policy's
/// file rule: every file readable except `/tmp/bench/secret` (read access allowed beneath
/// every entry of `/` but `/tmp`, every entry of `/tmp` but `/tmp/bench`, and
/// `/tmp/bench/plain`).
fn landlock_like_the_policy() -> anyhow::Result<()> {
    use landlock::{
        AccessFs, Ruleset, RulesetAttr as _, RulesetCreatedAttr as _, RulesetStatus, path_beneath_rules,
    };
    let entries = |dir: &str, but: &str| -> anyhow::Result<Vec<std::path::PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p != std::path::Path::new(but))
            .collect())
    };
    let mut allowed = entries("/", "/tmp")?;
    allowed.extend(entries("/tmp", "/tmp/bench")?);
    allowed.push("/tmp/bench/plain".into());
    let read = AccessFs::ReadFile;
    let status = Ruleset::default()
        .handle_access(read)?
        .create()?
        .add_rules(path_beneath_rules(&allowed, read))?
        .restrict_self()?;
    anyhow::ensure!(status.ruleset == RulesetStatus::FullyEnforced, "Landlock not enforcing: {status:?}");
    Ok(())
}

/// Rounds of the Landlock comparison: each times the unenforced, the managed and the
/// Landlock-restricted loop one after the other, and the figures are the medians of the
/// rounds' differences, so a slow stretch of the machine falls on all three alike.
const LANDLOCK_ROUNDS: usize = 7;

/// Whole-call cost of `open()+close()` added by the enforcer (managed) and by Landlock,
/// over the same loop without either. Each loop is timed by the child that runs it,
/// pinned to the measured CPU, from its first call to its last: the fork, the move into
/// the cgroup and Landlock's set-up are left out for both.
pub fn against_landlock(cgroup: &TestCgroup) {
    const CALLS: u32 = 20_000;
    let timed = |cg: Option<&TestCgroup>, landlock: bool| {
        let took = SharedWord::new();
        let code = run_in(cg, || {
            pin_to(BENCH_CPU);
            if landlock {
                if landlock_like_the_policy().is_err() {
                    return 101;
                }
                if open_errno("/tmp/bench/secret", libc::O_RDONLY) != libc::EACCES {
                    return 102;
                }
            }
            let start = Instant::now();
            let code = open_loop(CALLS);
            took.set(start.elapsed().as_secs_f64().to_bits());
            code
        });
        (f64::from_bits(took.get()) * 1e9 / f64::from(CALLS), code)
    };
    let (mut ours, mut theirs, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..LANDLOCK_ROUNDS {
        let (plain, _) = timed(None, false);
        let (managed, _) = timed(Some(cgroup), false);
        let (landlocked, code) = timed(None, true);
        if code != 0 {
            println!("[emulated] Landlock comparison: Landlock could not enforce the rule (code {code})");
            return;
        }
        ours.push(managed - plain);
        theirs.push(landlocked - plain);
        base.push(plain);
    }
    let won = ours.iter().zip(&theirs).filter(|(o, t)| o < t).count();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours, theirs, base) = (median(ours), median(theirs), median(base));
    report(
        "open()+close() cost added, managed vs Landlock with an equivalent rule",
        &format!(
            "enforcer +{ours:.0} ns/call, Landlock +{theirs:.0} ns/call over {base:.0} ns unenforced, \
             medians of {LANDLOCK_ROUNDS} rounds (below in {won} of them)"
        ),
        "below Landlock's",
        ours < theirs,
    );
}

/// A word shared with the children forked after it is made (an anonymous shared
/// mapping): a child's loop reports its time through it (an `f64`'s bits).
struct SharedWord(*mut u64);

impl SharedWord {
    fn new() -> Self {
        // SAFETY: a fresh anonymous mapping of one page, checked below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(at != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Self(at.cast())
    }

    fn set(&self, value: u64) {
        // SAFETY: our own mapping, aligned, written by one process at a time.
        unsafe { self.0.write_volatile(value) }
    }

    fn get(&self) -> u64 {
        // SAFETY: as in `set`; read after the child that wrote it was reaped.
        unsafe { self.0.read_volatile() }
    }
}

impl Drop for SharedWord {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}
