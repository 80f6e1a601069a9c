//! Kernel diagnostics (`enforcer agent --kernel-log`): off by default, when the programs
//! emit nothing at all, and on request routed into the agent's log under
//! `enforcer::kernel`, naming the hook and the failure.
//!
//! The failure provoked is a path too long for `bpf_d_path` to resolve: the one error
//! path of the programs a workload can reach at will (it is refused as `path-too-long`).

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::{
    maps::MapInfo,
    programs::{
        ProgramInfo,
        links::{FdLink, PinnedLink},
        loaded_programs,
    },
};
use enforcer_tests::{Agent, AgentDirs, TestCgroup, descend_long_path, field, open_errno, policy, run_in};
use libc::{EPERM, O_RDONLY};

/// Creates `/tmp/longpath/d…/…/file`, past `PATH_MAX`.
fn deep_file() {
    fs::create_dir_all("/tmp/longpath").unwrap();
    std::env::set_current_dir("/tmp/longpath").unwrap();
    let made =
        run_in(
            None,
            || if descend_long_path() == 0 { i32::from(fs::write("file", "x").is_err()) } else { 100 },
        );
    std::env::set_current_dir("/").unwrap();
    assert_eq!(made, 0, "creating the deep file");
}

/// Opens the deep file from `cgroup`: its errno.
fn open_deep_file(cgroup: &TestCgroup) -> i32 {
    std::env::set_current_dir("/tmp/longpath").unwrap();
    let errno =
        run_in(Some(cgroup), || if descend_long_path() == 0 { open_errno("file", O_RDONLY) } else { 100 });
    std::env::set_current_dir("/").unwrap();
    errno
}

fn kernel_policy(cgroup: &TestCgroup) -> String {
    policy("kernlog-policy", cgroup, "  file:\n    - dir: /tmp/unrelated\n      action: deny\n")
}

/// The `file_open` program this agent attached (through its pinned link).
fn file_open_program(bpffs: &Path) -> ProgramInfo {
    let instance = fs::read_dir(bpffs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent-")))
        .unwrap_or_else(|| panic!("no agent instance under {}", bpffs.display()));
    let pin: PathBuf = instance.join("links/file_open");
    let link = FdLink::from(PinnedLink::from_pin(&pin).expect("opening the pinned file_open link"));
    let id = link.info().expect("link info").program_id();
    loaded_programs().filter_map(Result::ok).find(|p| p.id() == id).expect("the file_open program")
}

/// Collects aya-log records.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn off_by_default_the_programs_emit_nothing() {
    deep_file();
    let cgroup = TestCgroup::new("kernlog-off");
    let dirs = AgentDirs::new("kernlog-off", &kernel_policy(&cgroup));
    let agent = Agent::start(&dirs, "detach");
    let program = file_open_program(&dirs.bpffs);
    let ring = program
        .map_ids()
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| MapInfo::from_id(id).ok())
        .find(|m| m.name_as_str() == Some("AYA_LOGS"))
        .expect("file_open uses the log ring buffer");
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
    assert_eq!(ring.max_entries(), page, "with logging off the log ring buffer is one page");
    // Read the ring buffer the programs would write to: nothing may arrive.
    let records = Collect::default();
    let mut reader = aya_log::EbpfLogger::init_from_id_with_logger(program.id(), records.clone())
        .expect("opening the programs' log ring buffer");

    assert_eq!(open_deep_file(&cgroup), EPERM, "a managed open of a path too long to judge is denied");
    let r = agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "hook") == "file_open");
    assert_eq!(r["reason"], "path-too-long");
    reader.flush();
    assert_eq!(*records.0.lock().unwrap(), Vec::<String>::new(), "kernel log records with logging off");
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("enforcer::kernel") && !stderr.contains("kernel diagnostics on"),
        "kernel diagnostics in the agent's output with logging off:\n{stderr}"
    );
}

#[test]
fn on_request_a_kernel_failure_is_logged_with_its_hook() {
    deep_file();
    let cgroup = TestCgroup::new("kernlog-on");
    let dirs = AgentDirs::new("kernlog-on", &kernel_policy(&cgroup));
    let agent = Agent::start_with(&dirs, "detach", &["--kernel-log", "warn"]);
    assert!(
        agent.stderr().contains("kernel diagnostics on"),
        "the agent reads kernel diagnostics:\n{}",
        agent.stderr()
    );

    assert_eq!(open_deep_file(&cgroup), EPERM, "a managed open of a path too long to judge is denied");
    let r = agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "hook") == "file_open");
    assert_eq!(r["reason"], "path-too-long");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stderr = agent.stderr();
        let line = stderr.lines().find(|l| l.contains("enforcer::kernel") && l.contains("path-too-long"));
        if let Some(line) = line {
            assert!(line.contains("WARN"), "logged as a warning: {line}");
            assert!(line.contains("file_open"), "the line names the hook: {line}");
            assert!(line.contains("ENAMETOOLONG"), "the line names the failure: {line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no kernel diagnostic for the path too long within 30 s:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
