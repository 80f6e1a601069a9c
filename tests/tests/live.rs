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
    // check answers as the kernel just did: the quarantine comes before the policy.
    let connect = format!("127.0.0.1:{port}/tcp");
    let (_, out, _) = agent.cli(&["check", "--identity", "quarantine-policy", "--connect", &connect]);
    assert!(out.starts_with("deny by quarantine"), "{out}");
    let (_, out, _) = agent.cli(&[
        "check",
        "--identity",
        "quarantine-policy",
        "--file",
        "/tmp/quarantine/data",
        "--access",
        "read",
    ]);
    assert!(out.starts_with("allow by default"), "reads stay allowed: {out}");
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
    // Refusals are the control plane's: no LSM program is needed to see them.
    let agent = Agent::start_with(&dirs, "detach", &["--network-only"]);
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

#[test]
fn a_grant_allows_until_its_instant_even_with_the_agent_stopped() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let denied_tool = tool("/tmp/grant-tools", "true");
    write_file("/tmp/grant/secret", "s");
    let cgroup = TestCgroup::new("grant");
    let body = format!(
        "  exec:\n    - path: {denied_tool}\n      action: deny\n  file:\n    - path: /tmp/grant/secret\n      action: deny\n  network:\n    - cidr: 127.0.0.1/32\n      ports: {port}\n      action: deny\n"
    );
    let dirs = AgentDirs::new("grant", &policy("grant-policy", &cgroup, &body));
    let mut agent = Agent::start(&dirs, "keep");
    let all = |cg: &TestCgroup| {
        let tool = denied_tool.clone();
        (
            run_in(Some(cg), || open_errno("/tmp/grant/secret", O_RDONLY)),
            run_in(Some(cg), move || connect_errno(&format!("127.0.0.1:{port}"))),
            run_in(Some(cg), move || run_in(None, || exec_errno(&tool))),
        )
    };
    assert_eq!(all(&cgroup), (EPERM, EPERM, EPERM), "the policy denies all three");
    let ttl = 15;
    let connect = format!("127.0.0.0/8:{port}/tcp");
    let ttl_text = format!("{ttl}s");
    for args in [
        vec!["grant", "grant-policy", "--file", "/tmp/grant/secret", "--access", "read"],
        vec!["grant", "grant-policy", "--connect", &connect],
        vec!["grant", "grant-policy", "--exec", &denied_tool],
    ] {
        let mut args = args.clone();
        args.extend(["--ttl", &ttl_text, "--reason", "incident 7 debugging"]);
        let (code, out, err) = agent.cli(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.starts_with("grant "), "{out}");
    }
    // The last grant was made now, so all have expired once its TTL has passed from here.
    let granted_at = std::time::Instant::now();
    assert_eq!(all(&cgroup), (0, 0, 0), "granted");
    let r = agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "reason") == "grant");
    assert!(field(&r, "rule").starts_with("grant["), "{r}");
    assert_eq!(r["decision"], "allow");
    let (_, out, _) = agent.cli(&["--output", "json", "grants"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 3);
    agent.stop();
    assert_eq!(all(&cgroup), (0, 0, 0), "still granted with the agent stopped");
    let expiry = Duration::from_secs(ttl) + Duration::from_millis(500);
    std::thread::sleep(expiry.saturating_sub(granted_at.elapsed()));
    assert_eq!(
        all(&cgroup),
        (EPERM, EPERM, EPERM),
        "the kernel ended the grants at their instant, no agent running"
    );
    // The next agent tidies the expired grants away and records it.
    let agent = Agent::start(&dirs, "detach");
    agent.wait_record(|r| field(r, "type") == "live" && field(r, "action") == "grant-expired");
    let (_, out, _) = agent.cli(&["--output", "json", "grants"]);
    assert_eq!(json(&out), serde_json::json!([]));
}

#[test]
fn bad_grant_requests_are_refused_and_a_grant_can_be_revoked() {
    write_file("/tmp/grantbad/secret", "s");
    let cgroup = TestCgroup::new("grantbad");
    let dirs = AgentDirs::new(
        "grantbad",
        &policy(
            "grantbad-policy",
            &cgroup,
            "  file:\n    - path: /tmp/grantbad/secret\n      action: deny\n",
        ),
    );
    let agent = Agent::start(&dirs, "detach");
    let base =
        ["grant", "grantbad-policy", "--file", "/tmp/grantbad/secret", "--access", "read", "--reason", "r"];
    for (ttl, message) in [
        ("0s", "is zero"),
        ("-5m", "expected a positive number"),
        ("30d", "exceeds the limit"),
        ("1y", "unknown unit"),
    ] {
        let mut args = base.to_vec();
        let flag = format!("--ttl={ttl}");
        args.push(&flag);
        let (code, _, err) = agent.cli(&args);
        assert_eq!(code, 2, "ttl {ttl}: {err}");
        assert!(err.contains(message), "ttl {ttl}: expected {message:?} in {err}");
    }
    let (code, _, err) =
        agent.cli(&["grant", "nobody", "--exec", "/bin/true", "--ttl", "1m", "--reason", "r"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) =
        agent.cli(&["grant", "grantbad-policy", "--exec", "bin/true", "--ttl", "1m", "--reason", "r"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = agent.cli(&["revoke-grant", "999"]);
    assert_eq!(code, 3, "{err}");
    let (_, out, _) = agent.cli(&["--output", "json", "grants"]);
    assert_eq!(json(&out), serde_json::json!([]), "nothing was granted");

    let mut args = base.to_vec();
    args.extend(["--ttl", "1h"]);
    let (code, out, err) = agent.cli(&["--output", "json"].iter().copied().chain(args).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let id = json(&out)["id"].as_u64().unwrap().to_string();
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/grantbad/secret", O_RDONLY)), 0);
    // A second grant on the same kernel entry would silently replace the first there.
    let mut again = base.to_vec();
    again.extend(["--ttl", "2h"]);
    let (code, _, err) = agent.cli(&again);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("already has grant {id}")), "{err}");
    assert_eq!(agent.cli(&["revoke-grant", &id]).0, 0);
    assert_eq!(
        run_in(Some(&cgroup), || open_errno("/tmp/grantbad/secret", O_RDONLY)),
        EPERM,
        "revoked at once"
    );
    agent.wait_record(|r| field(r, "type") == "live" && field(r, "action") == "grant-revoke");
}

#[test]
fn step_up_approval_from_pending_to_grant() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let deploy = tool("/tmp/approve-tools", "true");
    let cgroup = TestCgroup::new("approve");
    let body = format!(
        "  exec:\n    - path: {deploy}\n      action: approve\n  network:\n    - cidr: 127.0.0.1/32\n      ports: {port}\n      action: approve\n"
    );
    let dirs = AgentDirs::new("approve", &policy("approve-policy", &cgroup, &body));
    let agent = Agent::start(&dirs, "detach");
    let exec = |cg: &TestCgroup| {
        let t = deploy.clone();
        run_in(Some(cg), move || run_in(None, || exec_errno(&t)))
    };
    let connect = |cg: &TestCgroup| run_in(Some(cg), move || connect_errno(&format!("127.0.0.1:{port}")));
    assert_eq!(exec(&cgroup), EPERM, "the first attempt is held back");
    assert_eq!(exec(&cgroup), EPERM, "and so is a repeat");
    let r = agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "decision") == "pending");
    assert_eq!(r["hook"], "exec");
    assert_eq!(r["rule"], "exec[0]");
    agent.wait_record(|r| field(r, "type") == "live" && field(r, "action") == "approval-requested");
    // Repeats count on the open request instead of adding requests.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let request = loop {
        let (_, out, _) = agent.cli(&["--output", "json", "approvals"]);
        let list = json(&out);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "one request for repeated attempts: {out}");
        if list[0]["attempts"] == 2 {
            break list[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "attempts never reached 2: {out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(request["identity"], "approve-policy");
    assert_eq!(request["target"]["kind"], "exec");
    assert_eq!(request["target"]["path"], deploy.as_str());
    let id = request["id"].as_u64().unwrap().to_string();
    let (code, _, err) = agent.cli(&["approvals", "approve", &id, "--ttl", "0s"]);
    assert_eq!(code, 2, "a zero TTL is refused: {err}");
    let (code, _, err) = agent.cli(&["approvals", "approve", "999", "--ttl", "1h"]);
    assert_eq!(code, 3, "an unknown request: {err}");
    let (code, out, err) =
        agent.cli(&["approvals", "approve", &id, "--ttl", "1h", "--reason", "change 1234"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approved: grant"), "{out}");
    assert_eq!(exec(&cgroup), 0, "the next attempt succeeds");
    let r = agent.wait_record(|r| {
        field(r, "type") == "verdict" && field(r, "reason") == "grant" && field(r, "hook") == "exec"
    });
    assert_eq!(r["decision"], "allow");

    assert_eq!(connect(&cgroup), EPERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (_, out, _) = agent.cli(&["--output", "json", "approvals"]);
        if let Some(first) = json(&out).as_array().unwrap().first() {
            assert_eq!(first["target"]["kind"], "connect");
            break first["id"].as_u64().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no request for the connect");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (code, out, err) = agent.cli(&["approvals", "deny", &id, "--reason", "not during the freeze"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("denied"), "{out}");
    assert_eq!(connect(&cgroup), EPERM, "still held back after a denial");
    agent.wait_record(|r| field(r, "type") == "live" && field(r, "action") == "approval-denied");
}
