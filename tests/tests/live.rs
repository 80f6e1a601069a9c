//! Live state: a quarantine or a credential revocation changes what an identity may do
//! on its very next syscall, decided in the kernel, recorded, and kept across restarts.

use std::{fs, net::TcpListener, path::Path, time::Duration};

use enforcer_tests::{
    Agent, AgentDirs, TestCgroup, connect_errno, exec_errno, field, open_errno, policy, run_in, run_in_dir,
    tool, write_file,
};
use libc::{EPERM, O_RDONLY, O_WRONLY};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Waits up to 60 s for `path` to exist.
fn wait_for(path: &str) -> bool {
    for _ in 0..3000 {
        if Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn quarantine_stops_a_running_process_at_its_next_syscall_and_release_restores() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let true_tool = tool("/tmp/quarantine-tools", "true");
    write_file("/tmp/quarantine/data", "d");
    let dir = "/tmp/quarantine/steps";
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let cgroup = TestCgroup::new("quarantine");
    let dirs = AgentDirs::new("quarantine", &policy("quarantine-policy", &cgroup, ""));
    let agent = Agent::start(&dirs, "detach");
    // One process, started before the quarantine, acts at each step the test opens and
    // reports through a pipe (opening a file to report would itself be a write).
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read_end, write_end) = (fds[0], fds[1]);
    let path = cgroup.path.clone();
    let worker = std::thread::spawn(move || {
        run_in_dir(Some(&path), move || {
            for step in 0..3 {
                if !wait_for(&format!("{dir}/go-{step}")) {
                    return 1;
                }
                let connect = connect_errno(&format!("127.0.0.1:{port}"));
                let write = open_errno("/tmp/quarantine/data", O_WRONLY);
                let read = open_errno("/tmp/quarantine/data", O_RDONLY);
                let exec = run_in(None, || exec_errno(&true_tool));
                let line = format!("{connect} {write} {read} {exec}\n");
                // SAFETY: writing our own buffer to the inherited pipe.
                unsafe { libc::write(write_end, line.as_ptr().cast(), line.len()) };
            }
            0
        })
    });
    // SAFETY: the parent keeps only the read end.
    let reader = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(read_end) };
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(reader));
    let mut step = |n: usize| -> String {
        fs::write(format!("{dir}/go-{n}"), "").unwrap();
        lines.next().expect("a report from the worker").unwrap()
    };
    assert_eq!(step(0), "0 0 0 0", "before the quarantine: connect, write, read, exec allowed");
    let (code, out, err) =
        agent.cli(&["quarantine", "quarantine-policy", "--reason", "credential stuffing from this pod"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("quarantined"), "{out}");
    assert_eq!(
        step(1),
        format!("{EPERM} {EPERM} 0 {EPERM}"),
        "quarantined: no network, no writes, reads allowed, no exec"
    );
    let r = agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "reason") == "quarantined");
    assert_eq!(r["rule"], "quarantine");
    let change = agent.wait_record(|r| field(r, "type") == "live" && field(r, "action") == "quarantine");
    assert_eq!(change["identity"], "quarantine-policy");
    assert_eq!(change["reason"], "credential stuffing from this pod");
    assert_eq!(change["uid"], 0);
    let (_, out, _) = agent.cli(&["--output", "json", "quarantine", "--list"]);
    assert_eq!(json(&out)["quarantine-policy"]["reason"], "credential stuffing from this pod");
    let (code, _, err) = agent.cli(&["release", "quarantine-policy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(step(2), "0 0 0 0", "released: everything back");
    assert_eq!(worker.join().unwrap(), 0);
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(write_end) };
    agent.wait_record(|r| field(r, "type") == "live" && field(r, "action") == "release");
}

#[test]
fn a_revoked_credential_is_denied_to_every_identity_even_where_policy_allows() {
    write_file("/tmp/revoke/aws/credentials", "k");
    let allowed = TestCgroup::new("revoke-allowed");
    let audited = TestCgroup::new("revoke-audited");
    let text = format!(
        "{}---\n{}",
        policy(
            "revoke-allowed",
            &allowed,
            "  file:\n    - path: /tmp/revoke/aws/credentials\n      action: allow\n"
        ),
        policy("revoke-audited", &audited, "  mode: audit\n")
    );
    let dirs = AgentDirs::new("revoke", &text);
    let agent = Agent::start(&dirs, "detach");
    let open = |cg: &TestCgroup| run_in(Some(cg), || open_errno("/tmp/revoke/aws/credentials", O_RDONLY));
    assert_eq!((open(&allowed), open(&audited)), (0, 0));
    let (code, out, err) = agent.cli(&[
        "credentials",
        "revoke",
        "/tmp/revoke/aws/credentials",
        "--reason",
        "leaked in a build log",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked (credential[1]"), "{out}");
    assert_eq!(open(&allowed), EPERM, "denied although the policy allows it");
    assert_eq!(open(&audited), EPERM, "denied even in audit mode");
    assert_eq!(
        run_in(None, || open_errno("/tmp/revoke/aws/credentials", O_RDONLY)),
        0,
        "unmanaged processes are not identities"
    );
    let r =
        agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "reason") == "credential-revoked");
    assert_eq!(r["rule"], "credential[1]");
    assert_eq!(r["decision"], "deny");
    let (_, out, _) = agent.cli(&["--output", "json", "credentials", "list"]);
    assert_eq!(json(&out)["/tmp/revoke/aws/credentials"]["reason"], "leaked in a build log");
    let (code, _, err) = agent.cli(&["credentials", "unrevoke", "/tmp/revoke/aws/credentials"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((open(&allowed), open(&audited)), (0, 0));
    agent.wait_record(|r| field(r, "type") == "live" && field(r, "action") == "credential-unrevoke");
}

#[test]
fn live_state_and_its_records_survive_an_agent_restart() {
    write_file("/tmp/livepersist/file", "f");
    write_file("/tmp/livepersist/key", "k");
    let cgroup = TestCgroup::new("livepersist");
    let dirs = AgentDirs::new("livepersist", &policy("livepersist-policy", &cgroup, ""));
    let mut agent = Agent::start(&dirs, "detach");
    assert_eq!(agent.cli(&["quarantine", "livepersist-policy", "--reason", "incident 42"]).0, 0);
    assert_eq!(agent.cli(&["credentials", "revoke", "/tmp/livepersist/key", "--reason", "rotated"]).0, 0);
    agent.stop();
    let agent = Agent::start(&dirs, "detach");
    assert_eq!(
        run_in(Some(&cgroup), || open_errno("/tmp/livepersist/file", O_WRONLY)),
        EPERM,
        "still quarantined"
    );
    assert_eq!(
        run_in(Some(&cgroup), || open_errno("/tmp/livepersist/key", O_RDONLY)),
        EPERM,
        "still revoked"
    );
    let (_, out, _) = agent.cli(&["--output", "json", "quarantine", "--list"]);
    assert_eq!(json(&out)["livepersist-policy"]["reason"], "incident 42");
    let records = agent.records();
    assert!(records.iter().any(|r| field(r, "type") == "live" && field(r, "action") == "quarantine"));
    assert!(records.iter().any(|r| field(r, "type") == "live" && field(r, "action") == "credential-revoke"));
}

#[test]
fn bad_live_state_requests_are_refused_and_change_nothing() {
    let cgroup = TestCgroup::new("livebad");
    let dirs = AgentDirs::new("livebad", &policy("livebad-policy", &cgroup, ""));
    let agent = Agent::start(&dirs, "detach");
    let cases: [(&[&str], i32, &str); 6] = [
        (&["quarantine", "no-such-identity", "--reason", "x"], 3, "no policy governs identity"),
        (&["quarantine", "livebad-policy", "--reason", "  "], 2, "a reason is required"),
        (&["release", "livebad-policy"], 3, "is not quarantined"),
        (&["credentials", "revoke", "relative/path", "--reason", "x"], 2, "not absolute"),
        (&["credentials", "revoke", "/etc/../x", "--reason", "x"], 2, "\"..\""),
        (&["credentials", "unrevoke", "/never/revoked"], 3, "is not revoked"),
    ];
    for (args, want, message) in cases {
        let (code, _, err) = agent.cli(args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: expected {message:?} in {err}");
    }
    let (_, out, _) = agent.cli(&["--output", "json", "quarantine", "--list"]);
    assert_eq!(json(&out), serde_json::json!({}));
    let (_, out, _) = agent.cli(&["--output", "json", "credentials", "list"]);
    assert_eq!(json(&out), serde_json::json!({}));
    assert!(!agent.records().iter().any(|r| field(r, "type") == "live"), "nothing recorded");
}
