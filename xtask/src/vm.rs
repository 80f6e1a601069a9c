//! The VM test runner: an initramfs with busybox, the agent and the integration tests,
//! booted under QEMU (TCG) on each test kernel; results are read from the serial console.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build::{self, exec, workspace_root},
    image,
    kernels::{self, Kernel},
};

#[derive(clap::Args)]
pub struct Options {
    /// Run only on this kernel series (6.1 or 6.12).
    #[arg(long)]
    kernel: Option<String>,
    /// Seconds a VM may run before it counts as hung.
    #[arg(long, default_value_t = TIMEOUT_SECONDS)]
    timeout: u64,
    /// Run only the tests whose name contains this string, or all tests of the test file
    /// of that name (e.g. `integrity`).
    filter: Option<String>,
}

/// How long one guest may run all the tests (about 25 minutes on 6.1 and 35 on 6.12
/// under TCG, both guests at once on a 2-CPU host: each agent start verifies every
/// program, and 6.12's verifier explores `file_open` more than twice as far as 6.1's).
const TIMEOUT_SECONDS: u64 = 3000;

/// Marker the guest prints before its own status lines.
const MARK: &str = "ENFORCER-VM";

pub fn run_all(filter: Option<&str>) -> anyhow::Result<()> {
    run(&Options { kernel: None, timeout: TIMEOUT_SECONDS, filter: filter.map(str::to_owned) })
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if let Some(filter) = &options.filter
        && (filter.is_empty() || filter.contains(char::is_whitespace))
    {
        bail!("the test filter must be one word without spaces, got {filter:?}");
    }
    let kernels = match &options.kernel {
        Some(name) => vec![kernels::by_name(name)?],
        None => kernels::all()?,
    };
    let agent = build::agent()?;
    let tests = build::integration_tests()?;
    let image = image::build(&agent, &workspace_root().join("target/vm/image"), image::DEFAULT_TAG)?;
    let initrd = initramfs(&agent, &tests, &image)?;

    // The kernels boot side by side: an emulated guest keeps about one host CPU busy
    // (its verifier and most tests run on one CPU at a time), so two guests take little
    // longer than the slower one alone. Each has its own log. In a whole run of both,
    // the slower kernel's `LATER` files run in a guest of their own once the faster
    // kernel's guest is done, so both host CPUs stay busy to the end.
    let later = options.filter.is_none() && kernels.len() == 2;
    let summaries = std::thread::scope(|scope| {
        let running: Vec<_> = kernels
            .iter()
            .enumerate()
            .map(|(i, kernel)| {
                let (files, then) = match (later, i) {
                    (false, _) => (Files::All, None),
                    (true, 0) => (Files::All, kernels.last().map(|slower| (slower, Files::Only(&LATER)))),
                    (true, _) => (Files::AllBut(&LATER), None),
                };
                let initrd = &initrd;
                scope.spawn(move || -> anyhow::Result<Vec<Summary>> {
                    let mut summaries = vec![boot(kernel, initrd, options, &files)?];
                    if let Some((kernel, files)) = then {
                        summaries.push(boot(kernel, initrd, options, &files)?);
                    }
                    Ok(summaries)
                })
            })
            .collect();
        running
            .into_iter()
            .map(|guest| guest.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a VM runner thread panicked"))))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let summaries = by_kernel(summaries.into_iter().flatten());
    println!();
    let (mut passed, mut failed) = (0, 0);
    let mut problems = Vec::new();
    for s in &summaries {
        println!("{}", s.line());
        passed += s.passed.len();
        failed += s.failed.len();
        problems.extend(s.problems.iter().map(|p| format!("kernel {}: {p}", s.series)));
    }
    for s in &summaries {
        for cause in &s.causes {
            println!("failed on {}: {cause}", s.series);
        }
    }
    for problem in &problems {
        println!("error: {problem}");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 || !problems.is_empty() {
        bail!("VM tests did not pass");
    }
    Ok(())
}

#[derive(Default)]
#[expect(clippy::struct_excessive_bools, reason = "independent findings about one guest run")]
struct Summary {
    series: &'static str,
    release: Option<String>,
    passed: Vec<String>,
    failed: Vec<String>,
    skipped: Vec<String>,
    problems: Vec<String>,
    /// `NAME: where it panicked: the message`, for each failed test: repeated at the very
    /// end of the run, where a log's tail shows it.
    causes: Vec<String>,
    /// Seconds each finished test took, as the test binary reported it.
    seconds: Vec<(String, f64)>,
    /// The guest kernel panicked before any test binary started (worth one more boot).
    early_panic: bool,
    /// The guest hung while booting (worth one more boot).
    stalled: bool,
    /// The guest kernel trapped on a breakpoint of its own text patching (`Oops: int3`):
    /// multi-threaded TCG can run a half-patched instruction on one CPU while another
    /// patches it (the page allocator's static keys, flipped by cgroup and container
    /// set-up). An emulator fault, not a result of the code under test: worth one more
    /// boot, wherever it happened.
    patch_trap: bool,
    /// The guest's kernel reported a CPU stuck for [`WEDGED`] or longer (see
    /// [`Ending::Wedged`]): worth one more boot, wherever it happened.
    wedged: bool,
    /// The guest printed its last marker (`ENFORCER-VM done`).
    finished: bool,
    /// Test files whose binary ran to its end with every test passed, and nothing amiss.
    completed: Vec<Completed>,
    /// Test files started but not completed (a failure, a problem, or cut short).
    unclean: usize,
}

/// A test file whose binary passed in full: its results stand if the guest is booted again.
struct Completed {
    /// The file's name (`open_cache` for `/tests/open_cache-0123…`).
    file: String,
    passed: Vec<String>,
    seconds: Vec<(String, f64)>,
}

/// Test files the slower kernel runs in a guest of its own after the faster kernel's
/// guest (see [`run`]): about a sixth of its time, which evens out the two host CPUs'
/// shares (on 6.12 the whole run took 2,661 s against 1,848 s on 6.1).
const LATER: [&str; 1] = ["live"];

/// Which test files a guest runs, by file name (`live` for `/tests/live-0123…`).
enum Files {
    All,
    Only(&'static [&'static str]),
    AllBut(&'static [&'static str]),
}

impl Files {
    /// The word for the guest's command line, if any, and a label for its log's name.
    fn word(&self) -> (Option<String>, &'static str) {
        match self {
            Self::All => (None, ""),
            Self::Only(files) => (Some(format!("enforcer.only={}", files.join(","))), ".later"),
            Self::AllBut(files) => (Some(format!("enforcer.skip={}", files.join(","))), ""),
        }
    }
}

/// One summary per kernel, the guests of the same kernel merged, in the order first seen.
fn by_kernel(summaries: impl IntoIterator<Item = Summary>) -> Vec<Summary> {
    let mut merged: Vec<Summary> = Vec::new();
    for summary in summaries {
        match merged.iter_mut().find(|m| m.series == summary.series) {
            Some(into) => into.merge(summary),
            None => merged.push(summary),
        }
    }
    merged
}

impl Summary {
    /// Takes in the results of another guest of the same kernel that ran other files.
    fn merge(&mut self, other: Summary) {
        if self.release.is_none() {
            self.release = other.release;
        }
        self.passed.extend(other.passed);
        self.failed.extend(other.failed);
        self.skipped.extend(other.skipped);
        self.problems.extend(other.problems);
        self.causes.extend(other.causes);
        self.seconds.extend(other.seconds);
    }

    /// Adds the results of test files completed in earlier boots of the same kernel.
    fn absorb(&mut self, earlier: impl IntoIterator<Item = Completed>) {
        for completed in earlier {
            self.passed.extend(completed.passed);
            self.seconds.extend(completed.seconds);
        }
    }
}

/// How a guest run ended.
pub enum Ending {
    /// The guest powered off (or QEMU exited).
    Exited,
    /// The deadline passed and QEMU was killed.
    TimedOut,
    /// The guest's init printed nothing within [`BOOT_STALL`] (the kernel hung while
    /// booting) and QEMU was killed.
    Stalled,
    /// The guest's kernel reported a CPU stuck in the kernel (a soft lockup) for
    /// [`WEDGED`] or longer, and QEMU was killed. Under multi-threaded TCG on a busy host
    /// a vCPU can stop taking its timer interrupts for minutes (the kernel then also
    /// reports RCU's timer wakeups not happening on that CPU), and a CPU waiting for it
    /// (a text-patching sync, a cross-CPU call) is stuck meanwhile; one such stall
    /// outlasted the guest's whole budget.
    Wedged,
}

/// How long a CPU may be reported stuck before the guest counts as wedged: the kernel
/// reports a soft lockup from 20 s on, and a report of minutes is no passing hiccup.
const WEDGED: Duration = Duration::from_secs(420);

/// The seconds in a kernel's `watchdog: BUG: soft lockup - CPU#1 stuck for 630s!`.
fn stuck_seconds(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("soft lockup - CPU#")?;
    let (_, rest) = rest.split_once(" stuck for ")?;
    rest.split_once("s!")?.0.parse().ok()
}

/// How long a guest may take to reach its init: under TCG a kernel boots in well under a
/// minute, even on a busy host; one that says nothing for this long hung while booting.
const BOOT_STALL: Duration = Duration::from_mins(5);

/// Boots `kernel` with `initrd` under QEMU (TCG), copying the serial console to `log_path`
/// and handing each line to `on_line`, until the guest powers off or `timeout` passes.
pub fn qemu(
    kernel: &Kernel,
    initrd: &Path,
    append: &str,
    timeout: Duration,
    log_path: &Path,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<Ending> {
    let mut log = fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new("qemu-system-x86_64")
        // One host thread runs both vCPUs in turn (`thread=single`). With a thread per
        // vCPU, two guests on a two-CPU host have four busy threads: a descheduled vCPU
        // stops taking its timer interrupts for minutes (soft lockups on the other one,
        // waiting for it), and one vCPU can run an instruction another is half-way
        // through patching (`Oops: int3`). Neither can happen with one thread, and a
        // guest spends little time running two CPUs at once anyway.
        .args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-m",
            "1G",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console=ttyS0 quiet panic=-1 oops=panic {append}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (is qemu-system-x86 installed?)")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let boot_deadline = Instant::now() + BOOT_STALL.min(timeout);
    let mut booted = false;
    let ending = loop {
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            break Ending::TimedOut;
        }
        if !booted && now >= boot_deadline {
            let _ = child.kill();
            break Ending::Stalled;
        }
        let wait = if booted { deadline - now } else { boot_deadline - now };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                booted |= line.contains(MARK);
                on_line(&line);
                if stuck_seconds(&line).is_some_and(|s| s >= WEDGED.as_secs()) {
                    let _ = child.kill();
                    break Ending::Wedged;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ending::Exited,
        }
    };
    let _ = child.wait();
    Ok(ending)
}

/// Boots the `series` kernel with an initramfs named `name` whose /init runs
/// [`INIT_PREAMBLE`] then `init_body` (which must print `ENFORCER-VM done` at the end),
/// echoing the guest's own output (not the kernel's) and returning it.
pub fn guest(
    name: &str,
    agent: &Path,
    init_body: &str,
    extra: &[(PathBuf, String)],
    series: &str,
) -> anyhow::Result<Vec<String>> {
    let initrd = build_initramfs(name, agent, &format!("{INIT_PREAMBLE}{init_body}"), extra)?;
    let kernel = kernels::by_name(series)?;
    eprintln!("{name}: booting Linux {} under QEMU", kernel.package);
    let log = workspace_root().join(format!("target/vm/{name}.log"));
    let (mut lines, mut started, mut finished) = (Vec::new(), false, false);
    let ending = qemu(&kernel, &initrd, "", Duration::from_mins(15), &log, |line| {
        if let Some(at) = line.find(MARK) {
            started = true;
            let rest = line[at + MARK.len()..].trim();
            if let Some(release) = rest.strip_prefix("kernel=") {
                println!("guest kernel {release}");
            }
            finished |= rest == "done";
            return;
        }
        if started && !kernel_message(line) {
            println!("{line}");
            lines.push(line.to_owned());
        }
    })?;
    match ending {
        Ending::TimedOut => bail!("the {name} VM did not finish within 15 minutes (see {})", log.display()),
        Ending::Stalled => bail!("the {name} VM hung while booting (see {})", log.display()),
        Ending::Wedged => bail!("the {name} VM had a CPU stuck for minutes (see {})", log.display()),
        Ending::Exited => {}
    }
    if !finished {
        bail!("the {name} VM stopped early (see {})", log.display());
    }
    Ok(lines)
}

impl Summary {
    /// `kernel 6.1 (6.1.0-56-cloud-amd64): 12 passed, 0 failed, 0 skipped`
    fn line(&self) -> String {
        format!(
            "kernel {} ({}): {} passed, {} failed, {} skipped",
            self.series,
            self.release.as_deref().unwrap_or("did not boot"),
            self.passed.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }

    /// `kernel 6.1: tests took 1372 s; slowest: 61 s a_test, …`: where the guest's time went.
    fn slowest(&self, count: usize) -> String {
        let mut times = self.seconds.clone();
        times.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = times.iter().map(|t| t.1).sum();
        let named: Vec<_> = times.iter().take(count).map(|(name, s)| format!("{s:.0} s {name}")).collect();
        format!("kernel {}: tests took {total:.0} s; slowest: {}", self.series, named.join(", "))
    }
}

/// The seconds in libtest's `<12.345s>`.
fn seconds_reported(word: &str) -> Option<f64> {
    word.strip_prefix('<')?.strip_suffix("s>")?.parse().ok()
}

/// How many more boots a guest gets after emulator faults.
const REBOOTS: usize = 2;

fn boot(kernel: &Kernel, initrd: &Path, options: &Options, files: &Files) -> anyhow::Result<Summary> {
    let mut carried: Vec<Completed> = Vec::new();
    for attempt in 0.. {
        let mut summary = boot_once(kernel, initrd, options, files, attempt, &carried)?;
        let faulted = summary.early_panic || summary.stalled || summary.patch_trap || summary.wedged;
        let nothing_left = summary.finished && summary.unclean == 0;
        if !faulted || attempt == REBOOTS || nothing_left {
            summary.absorb(carried);
            return Ok(summary);
        }
        let finished_here = std::mem::take(&mut summary.completed);
        // TCG occasionally crashes or hangs a guest while it boots, traps on the kernel's
        // own text patching, or leaves a CPU stuck: that says nothing about the code under
        // test. The kernel is booted again, and runs the test files that did not finish
        // cleanly; those that did keep their results.
        carried.extend(finished_here);
        println!(
            "kernel {}: the guest panicked or hung before the first test, trapped on kernel text \
             patching, or had a CPU stuck for {} s or more (emulator faults); booting it again \
             for the test files that did not finish ({} did: {})",
            kernel.series,
            WEDGED.as_secs(),
            carried.len(),
            carried.iter().map(|c| c.file.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    unreachable!("the loop returns by its last attempt")
}

fn boot_once(
    kernel: &Kernel,
    initrd: &Path,
    options: &Options,
    files: &Files,
    attempt: usize,
    done: &[Completed],
) -> anyhow::Result<Summary> {
    let (files_word, part) = files.word();
    let log_path = workspace_root().join(if attempt == 0 {
        format!("target/vm/{}{part}.log", kernel.series)
    } else {
        format!("target/vm/{}{part}.boot{}.log", kernel.series, attempt + 1)
    });
    eprintln!(
        "vm-test: booting {} ({}){}",
        kernel.series,
        kernel.package,
        files_word.as_deref().map(|w| format!(" with {w}")).unwrap_or_default()
    );
    let mut words: Vec<String> = options.filter.iter().map(|f| format!("enforcer.filter={f}")).collect();
    words.extend(files_word);
    if !done.is_empty() {
        let files: Vec<&str> = done.iter().map(|c| c.file.as_str()).collect();
        words.push(format!("enforcer.done={}", files.join(",")));
    }
    let append = words.join(" ");
    let mut console =
        Console { summary: Summary { series: kernel.series, ..Summary::default() }, ..Console::default() };
    let verbose = std::env::var_os("ENFORCER_VM_VERBOSE").is_some();
    let ending = qemu(kernel, initrd, &append, Duration::from_secs(options.timeout), &log_path, |line| {
        if verbose {
            println!("[{}] {line}", kernel.series);
        }
        console.feed(line);
    })?;
    match ending {
        Ending::TimedOut => console.summary.problems.push(format!(
            "timed out after {} s (see {})",
            options.timeout,
            log_path.display()
        )),
        Ending::Stalled => {
            console.summary.stalled = true;
            console.summary.problems.push(format!(
                "hung while booting: no output from init within {} s (see {})",
                BOOT_STALL.as_secs(),
                log_path.display()
            ));
        }
        Ending::Wedged => {
            console.summary.wedged = true;
            console.summary.problems.push(format!(
                "a CPU was stuck in the guest's kernel for {} s or more (see {})",
                WEDGED.as_secs(),
                log_path.display()
            ));
        }
        Ending::Exited => {}
    }
    let (summary, failure_text) = console.finish(&log_path.display().to_string());
    println!("{}", summary.line());
    if !summary.seconds.is_empty() {
        println!("{}", summary.slowest(8));
    }
    if !summary.failed.is_empty() {
        println!("failed on {}: {}\n{failure_text}", kernel.series, summary.failed.join(", "));
    }
    Ok(summary)
}

/// Reads the guest's serial console line by line.
#[derive(Default)]
struct Console {
    summary: Summary,
    lsm_ok: Option<bool>,
    finished: bool,
    in_test_output: bool,
    test_output: String,
    /// Every test binary the guest started, in order.
    binaries: Vec<Binary>,
}

/// What one test binary said about itself.
#[derive(Default)]
struct Binary {
    name: String,
    /// `running N tests`.
    announced: Option<usize>,
    /// Outcome lines seen (`test NAME ... ok|FAILED|ignored`).
    reported: usize,
    /// `test NAME ... ` lines with no outcome: the binary died inside that test.
    unfinished: Vec<String>,
    /// The `test result:` line was printed.
    summarised: bool,
    /// Exit status reported by /init.
    status: Option<i32>,
    /// Tests that passed, with their times where reported.
    passed: Vec<String>,
    seconds: Vec<(String, f64)>,
    /// A test failed or was skipped.
    bad: bool,
}

impl Console {
    fn feed(&mut self, line: &str) {
        if let Some(rest) = line.find(MARK).map(|at| &line[at + MARK.len()..]) {
            self.marker(rest.trim());
            return;
        }
        if line.starts_with("running ") {
            self.in_test_output = true;
            if let Some(binary) = self.binaries.last_mut() {
                binary.announced =
                    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).or(binary.announced);
            }
        } else if line.starts_with("test result:") {
            self.in_test_output = false;
            if let Some(binary) = self.binaries.last_mut() {
                binary.summarised = true;
            }
        }
        // Kernel messages start with a timestamp in brackets.
        if self.in_test_output && !line.starts_with('[') {
            self.test_output.push_str(line);
            self.test_output.push('\n');
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, outcome)) = rest.rsplit_once(" ...")
        {
            let name = name.to_owned();
            let summary = &mut self.summary;
            // `ok <12.345s>`: the outcome, then the time the test took (`--report-time`).
            let mut words = outcome.split_whitespace();
            let verdict = words.next().unwrap_or_default();
            if let Some(took) = words.next().and_then(seconds_reported) {
                summary.seconds.push((name.clone(), took));
            }
            let known = match verdict {
                "ok" => {
                    summary.passed.push(name.clone());
                    true
                }
                "FAILED" => {
                    summary.failed.push(name.clone());
                    true
                }
                v if v.starts_with("ignored") => {
                    summary.skipped.push(name.clone());
                    true
                }
                _ => false,
            };
            if let Some(binary) = self.binaries.last_mut() {
                if known {
                    binary.reported += 1;
                    if verdict == "ok" {
                        binary.passed.push(name.clone());
                        binary.seconds.extend(summary.seconds.last().filter(|(n, _)| *n == name).cloned());
                    } else {
                        binary.bad = true;
                    }
                } else {
                    binary.unfinished.push(name);
                }
            }
        }
        if line.contains("Oops: int3") {
            self.summary.patch_trap = true;
        }
        if line.contains("Kernel panic") {
            self.summary.problems.push("kernel panic".to_owned());
            if self.binaries.is_empty() {
                self.summary.early_panic = true;
            }
        }
    }

    /// `ENFORCER-VM …` lines printed by /init.
    fn marker(&mut self, rest: &str) {
        if let Some(release) = rest.strip_prefix("kernel=") {
            self.summary.release = Some(release.to_owned());
        } else if let Some(lsms) = rest.strip_prefix("lsm=") {
            self.lsm_ok = Some(lsms.split(',').any(|l| l == "bpf"));
        } else if let Some(path) = rest.strip_prefix("running ") {
            let name = path.rsplit('/').next().unwrap_or(path).to_owned();
            self.binaries.push(Binary { name, ..Binary::default() });
            self.in_test_output = false;
        } else if let Some(status) = rest.strip_prefix("exit ") {
            if let Some(binary) = self.binaries.last_mut() {
                binary.status = Some(status.trim().parse().unwrap_or(-1));
            }
        } else if rest == "done" {
            self.finished = true;
        }
    }

    /// The summary with every reason the run does not count, and the tests' output.
    fn finish(mut self, log: &str) -> (Summary, String) {
        let summary = &mut self.summary;
        if !self.finished && summary.problems.is_empty() {
            summary.problems.push(format!("the VM stopped before the tests finished (see {log})"));
        }
        match self.lsm_ok {
            Some(true) => {}
            Some(false) => summary.problems.push("BPF LSM is not active in the guest".to_owned()),
            None => summary.problems.push("the guest never reported its LSM list".to_owned()),
        }
        if !summary.skipped.is_empty() {
            summary.problems.push(format!("skipped tests are not allowed: {}", summary.skipped.join(", ")));
        }
        if self.finished && summary.passed.is_empty() && summary.failed.is_empty() {
            summary.problems.push("no test ran (does the filter match any test?)".to_owned());
        }
        summary.finished = self.finished;
        for binary in self.binaries {
            let problems = binary.problems();
            if problems.is_empty() && !binary.bad {
                let file =
                    binary.name.rsplit_once('-').map_or(binary.name.as_str(), |(file, _)| file).to_owned();
                summary.completed.push(Completed { file, passed: binary.passed, seconds: binary.seconds });
            } else {
                summary.unclean += 1;
            }
            summary.problems.extend(problems);
        }
        summary.causes = summary.failed.iter().map(|name| failure_cause(&self.test_output, name)).collect();
        (self.summary, self.test_output)
    }
}

/// `NAME: tests/x.rs:12:5: the message` from libtest's `thread 'NAME' (123) panicked at
/// tests/x.rs:12:5:` (the thread id only in newer toolchains) and the line after it, or
/// just `NAME` without such a line.
fn failure_cause(output: &str, name: &str) -> String {
    const PANICKED: &str = " panicked at ";
    let thread = format!("thread '{name}'");
    let mut lines = output.lines().skip_while(|line| !(line.starts_with(&thread) && line.contains(PANICKED)));
    let Some(header) = lines.next() else { return name.to_owned() };
    let at = header.split_once(PANICKED).map_or("", |(_, at)| at);
    let message = lines.next().unwrap_or_default();
    format!("{name}: {at} {message}")
}

impl Binary {
    /// Every way this binary's run does not add up.
    fn problems(&self) -> Vec<String> {
        let name = &self.name;
        let mut problems = Vec::new();
        match self.status {
            None => problems.push(format!("test binary {name} never finished")),
            Some(0) => {}
            Some(status) => problems.push(format!("test binary {name} exited with status {status}")),
        }
        for test in &self.unfinished {
            problems.push(format!("test {test} in {name} started and never reported a result"));
        }
        match self.announced {
            None => problems.push(format!("test binary {name} never announced its tests")),
            Some(announced) if announced != self.reported => problems.push(format!(
                "test binary {name} announced {announced} tests and reported {}",
                self.reported
            )),
            Some(_) => {}
        }
        if !self.summarised {
            problems.push(format!("test binary {name} printed no test result line"));
        }
        problems
    }
}

/// Mounts and network set-up shared by every guest's /init.
pub const INIT_PREAMBLE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /dev /proc /sys /tmp /run /var/lib
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t securityfs security /sys/kernel/security
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
echo "ENFORCER-VM kernel=$(uname -r)"
echo "ENFORCER-VM lsm=$(cat /sys/kernel/security/lsm)"
"#;

/// The test guest: runs every test binary, then powers off.
const INIT_TESTS: &str = r#"
filter=""
done=""
only=""
for word in $(cat /proc/cmdline); do
  case "$word" in
    enforcer.filter=*) filter="${word#enforcer.filter=}" ;;
    # Test files that passed in an earlier boot of this kernel (`a,b`), and those another
    # guest of this kernel runs: both left out here.
    enforcer.done=*) done="$done,${word#enforcer.done=}," ;;
    enforcer.skip=*) done="$done,${word#enforcer.skip=}," ;;
    # The only test files this guest runs (`a,b`).
    enforcer.only=*) only=",${word#enforcer.only=}," ;;
  esac
done
export ENFORCER_BIN=/bin/enforcer RUST_BACKTRACE=1
# One cgroup with the cpuset controller, alive for the whole boot: the kernel's cpuset
# static keys then stay on, and the container runtime's cgroups do not flip them. Each
# flip patches kernel text on every CPU, and multi-threaded TCG has crashed the guest
# ("Oops: int3" in the page allocator) when another CPU ran a patched site meanwhile.
echo +cpuset > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/vm-cpuset-pin
for t in /tests/*; do
  file="$(basename "$t")"
  case "$done" in *",${file%-*},"*) continue ;; esac
  if [ -n "$only" ]; then
    case "$only" in *",${file%-*},"*) ;; *) continue ;; esac
  fi
  echo "ENFORCER-VM running $t"
  # A filter naming a test file (e.g. `integrity`) runs all of that file's tests.
  case "$(basename "$t")" in "$filter"-*) names="" ;; *) names="$filter" ;; esac
  # Each test's time after its result (`ok <12.3s>`), read by the runner: libtest's
  # option is unstable, and RUSTC_BOOTSTRAP admits it on this stable toolchain.
  RUSTC_BOOTSTRAP=1 "$t" --test-threads=1 -Z unstable-options --report-time $names
  echo "ENFORCER-VM exit $?"
done
echo "ENFORCER-VM done"
poweroff -f
"#;

/// Builds the test initramfs (gzip'd newc cpio) and returns its path. It carries the
/// host's `runc` (Debian's package) for the container runtime tests, and the agent's
/// image as an OCI layout at /image/enforcer-oci for the test that runs it.
fn initramfs(agent: &Path, tests: &[PathBuf], image: &image::Image) -> anyhow::Result<PathBuf> {
    let mut extra: Vec<(PathBuf, String)> = tests
        .iter()
        .map(|t| (t.clone(), format!("tests/{}", t.file_name().unwrap_or_default().to_string_lossy())))
        .collect();
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("runc not found (apt-get install runc; scripts/bootstrap.sh does)")?;
    extra.push((runc, "bin/runc".to_owned()));
    extra.extend(image.files.iter().map(|f| (image.layout.join(f), format!("image/enforcer-oci/{f}"))));
    build_initramfs("tests", agent, &format!("{INIT_PREAMBLE}{INIT_TESTS}"), &extra)
}

/// An initramfs named `name` with busybox, the agent at /bin/enforcer, `init` as /init
/// and `extra` files (source, destination relative to the root) with the shared
/// libraries every binary among them needs.
pub fn build_initramfs(
    name: &str,
    agent: &Path,
    init: &str,
    extra: &[(PathBuf, String)],
) -> anyhow::Result<PathBuf> {
    let root = workspace_root().join(format!("target/vm/initramfs-{name}"));
    let _ = fs::remove_dir_all(&root);
    for dir in ["bin", "tests", "dev", "proc", "sys", "tmp", "run", "etc"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("busybox not found (apt-get install busybox-static)")?;
    fs::copy(busybox, root.join("bin/busybox"))?;
    fs::write(root.join("init"), init)?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;

    let mut files = vec![(agent.to_path_buf(), root.join("bin/enforcer"))];
    for (from, to) in extra {
        files.push((from.clone(), root.join(to)));
    }
    let mut libraries = BTreeSet::new();
    for (from, to) in &files {
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        if crate::elf::is_elf(from) {
            libraries.extend(crate::elf::shared_libraries(from)?);
        }
    }
    for lib in &libraries {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(lib));
        fs::create_dir_all(dest.parent().expect("absolute path has a parent"))?;
        fs::copy(lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    let out = workspace_root().join(format!("target/vm/initramfs-{name}.cpio.gz"));
    exec(
        Command::new("sh")
            .current_dir(&root)
            .arg("-c")
            .arg(format!("find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > '{}'", out.display())),
    )?;
    Ok(out)
}

/// Kernel messages on the console start with a bracketed timestamp (`[   12.345678] …`).
fn kernel_message(line: &str) -> bool {
    line.strip_prefix('[').and_then(|rest| rest.split_once(']')).is_some_and(|(stamp, _)| {
        !stamp.is_empty() && stamp.chars().all(|c| c == ' ' || c == '.' || c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&str]) -> Summary {
        let mut console = Console::default();
        for line in lines {
            console.feed(line);
        }
        console.finish("log").0
    }

    #[test]
    fn a_soft_lockup_line_gives_its_seconds() {
        let line = "[ 1872.689323] watchdog: BUG: soft lockup - CPU#1 stuck for 630s! [enforcer:1330]";
        assert_eq!(stuck_seconds(line), Some(630));
        assert_eq!(stuck_seconds("[ 1217.8] rcu: INFO: rcu_preempt self-detected stall on CPU"), None);
    }

    #[test]
    fn a_failed_test_names_where_it_panicked() {
        let s = read(&[
            "ENFORCER-VM lsm=bpf",
            "ENFORCER-VM running /tests/agent-0123",
            "running 2 tests",
            "test a ... ok",
            "test b ... FAILED",
            "failures:",
            "---- b stdout ----",
            "thread 'b' panicked at tests/tests/x.rs:12:5:",
            "assertion `left == right` failed: the second open",
            "test result: FAILED. 1 passed; 1 failed",
            "ENFORCER-VM exit 101",
            "ENFORCER-VM done",
        ]);
        assert_eq!(s.causes, ["b: tests/tests/x.rs:12:5: assertion `left == right` failed: the second open"]);
        assert_eq!(failure_cause("", "c"), "c");
        let output = "thread 'c' (172) panicked at tests/tests/y.rs:3:9:\nround 2\n";
        assert_eq!(failure_cause(output, "c"), "c: tests/tests/y.rs:3:9: round 2");
    }

    #[test]
    fn a_test_file_that_passed_in_full_keeps_its_results_for_another_boot() {
        let mut s = read(&[
            "ENFORCER-VM lsm=bpf",
            "ENFORCER-VM running /tests/agent-0123",
            "running 2 tests",
            "test a ... ok <1.5s>",
            "test b ... ok <2.0s>",
            "test result: ok. 2 passed; 0 failed",
            "ENFORCER-VM exit 0",
            "ENFORCER-VM running /tests/open_cache-4567",
            "running 2 tests",
            "test c ... ok <3.0s>",
            "test d ... ",
            "[ 900.1] Oops: int3",
        ]);
        assert!(s.patch_trap && !s.finished);
        assert_eq!(s.unclean, 1);
        let completed = std::mem::take(&mut s.completed);
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].file, "agent");
        assert_eq!(completed[0].passed, ["a", "b"]);
        assert_eq!(completed[0].seconds, [("a".to_owned(), 1.5), ("b".to_owned(), 2.0)]);
        // The next boot runs only open_cache; its summary takes in agent's results.
        let mut next = read(&[
            "ENFORCER-VM lsm=bpf",
            "ENFORCER-VM running /tests/open_cache-4567",
            "running 2 tests",
            "test c ... ok <3.0s>",
            "test d ... ok <1.0s>",
            "test result: ok. 2 passed; 0 failed",
            "ENFORCER-VM exit 0",
            "ENFORCER-VM done",
        ]);
        assert!(next.problems.is_empty(), "{:?}", next.problems);
        next.absorb(completed);
        assert_eq!(next.passed, ["c", "d", "a", "b"]);
        assert_eq!(next.seconds.len(), 4);
    }

    #[test]
    fn a_clean_run_has_no_problems() {
        let s = read(&[
            "\u{1b}[2JENFORCER-VM kernel=6.1.0-1-cloud-amd64",
            "ENFORCER-VM lsm=lockdown,capability,bpf",
            "ENFORCER-VM running /tests/agent-0123",
            "running 2 tests",
            "test a ... ok",
            "test b ... ok",
            "test result: ok. 2 passed; 0 failed",
            "ENFORCER-VM exit 0",
            "ENFORCER-VM done",
        ]);
        assert_eq!(s.release.as_deref(), Some("6.1.0-1-cloud-amd64"));
        assert_eq!(s.passed, ["a", "b"]);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }

    #[test]
    fn guests_of_one_kernel_add_up_to_one_summary() {
        let guest = |series, release: Option<&str>, passed: &[&str], failed: &[&str]| Summary {
            series,
            release: release.map(str::to_owned),
            passed: passed.iter().map(|&p| p.to_owned()).collect(),
            failed: failed.iter().map(|&f| f.to_owned()).collect(),
            problems: failed.iter().map(|f| format!("{f} failed")).collect(),
            ..Summary::default()
        };
        let merged = by_kernel([
            guest("6.1", Some("6.1.0-1"), &["a", "b"], &[]),
            guest("6.12", None, &["c"], &["d"]),
            guest("6.12", Some("6.12.1"), &["e"], &[]),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].passed, ["a", "b"]);
        let later = &merged[1];
        assert_eq!((later.series, later.release.as_deref()), ("6.12", Some("6.12.1")));
        assert_eq!(
            (later.passed.as_slice(), later.failed.as_slice()),
            (&["c".to_owned(), "e".to_owned()][..], &["d".to_owned()][..])
        );
        assert_eq!(later.problems, ["d failed"]);
        assert_eq!(Files::Only(&["live"]).word(), (Some("enforcer.only=live".to_owned()), ".later"));
        assert_eq!(Files::AllBut(&["live", "x"]).word(), (Some("enforcer.skip=live,x".to_owned()), ""));
        assert_eq!(Files::All.word(), (None, ""));
    }

    #[test]
    fn results_with_their_times_count_and_the_slowest_are_named() {
        let s = read(&[
            "ENFORCER-VM lsm=bpf",
            "ENFORCER-VM running /tests/agent-1",
            "running 3 tests",
            "test fast ... ok <1.250s>",
            "test slow ... ok <61.000s>",
            "test broken ... FAILED <3.000s>",
            "test result: FAILED. 2 passed; 1 failed",
            "ENFORCER-VM exit 101",
            "ENFORCER-VM done",
        ]);
        assert_eq!(s.passed, ["fast", "slow"]);
        assert_eq!(s.failed, ["broken"]);
        assert_eq!(s.slowest(2), "kernel : tests took 65 s; slowest: 61 s slow, 3 s broken");
    }

    #[test]
    fn skips_missing_lsm_and_unfinished_runs_are_problems() {
        let s = read(&["ENFORCER-VM lsm=lockdown,capability", "test a ... ignored", "test b ... FAILED"]);
        assert_eq!(s.failed, ["b"]);
        let all = s.problems.join("; ");
        assert!(all.contains("skipped tests are not allowed: a"), "{all}");
        assert!(all.contains("BPF LSM is not active"), "{all}");
        assert!(all.contains("stopped before the tests finished"), "{all}");
    }

    #[test]
    fn a_run_where_nothing_ran_is_a_problem() {
        let s = read(&["ENFORCER-VM lsm=bpf", "running 0 tests", "ENFORCER-VM done"]);
        assert!(s.problems.iter().any(|p| p.contains("no test ran")));
    }

    #[test]
    fn a_binary_that_dies_inside_a_test_fails_the_run() {
        let s = read(&[
            "ENFORCER-VM lsm=bpf",
            "ENFORCER-VM running /tests/agent-1",
            "running 3 tests",
            "test a ... ok",
            "test b ... ",
            "memory allocation of 99999999 bytes failed",
            "ENFORCER-VM exit 134",
            "ENFORCER-VM running /tests/live-2",
            "running 1 tests",
            "test c ... ok",
            "test result: ok. 1 passed; 0 failed",
            "ENFORCER-VM exit 0",
            "ENFORCER-VM done",
        ]);
        assert_eq!(s.passed, ["a", "c"]);
        let all = s.problems.join("; ");
        assert!(all.contains("agent-1 exited with status 134"), "{all}");
        assert!(all.contains("test b in agent-1 started and never reported"), "{all}");
        assert!(all.contains("agent-1 announced 3 tests and reported 1"), "{all}");
        assert!(all.contains("agent-1 printed no test result line"), "{all}");
        assert!(!all.contains("live-2"), "{all}");
    }

    #[test]
    fn a_binary_that_never_reports_back_fails_the_run() {
        let s = read(&[
            "ENFORCER-VM lsm=bpf",
            "ENFORCER-VM running /tests/agent-1",
            "ENFORCER-VM exit 101",
            "ENFORCER-VM running /tests/live-2",
            "running 1 tests",
            "test c ... ok",
            "test result: ok. 1 passed; 0 failed",
            "ENFORCER-VM done",
        ]);
        let all = s.problems.join("; ");
        assert!(all.contains("agent-1 exited with status 101"), "{all}");
        assert!(all.contains("agent-1 never announced its tests"), "{all}");
        assert!(all.contains("live-2 never finished"), "{all}");
    }

    #[test]
    fn a_panic_before_the_first_test_asks_for_another_boot() {
        let early = read(&["ENFORCER-VM lsm=bpf", "[    1.3] Kernel panic - not syncing: Fatal exception"]);
        assert!(early.early_panic);
        let late = read(&["ENFORCER-VM running /tests/a", "Kernel panic - not syncing"]);
        assert!(!late.early_panic);
        assert!(!late.patch_trap);
    }

    #[test]
    fn a_trap_on_kernel_text_patching_asks_for_another_boot_even_mid_test() {
        let trapped = read(&[
            "ENFORCER-VM running /tests/image",
            "test the_image_runs ... [  573.5] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
            "[  573.6] Kernel panic - not syncing: Fatal exception in interrupt",
        ]);
        assert!(trapped.patch_trap);
        assert!(!trapped.early_panic);
    }
}
