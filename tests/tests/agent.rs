//! The agent end to end: policies from YAML, enforced in the kernel, verdicts in the log.
//! Each test asserts the errno the workload gets and the verdict record that comes out.

use std::{
    fmt::Write as _,
    fs,
    net::{TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use enforcer_tests::{
    Agent, AgentDirs, TestCgroup, connect_errno, descend_long_path, exec_errno, field, fork_in_dir,
    open_errno, pin_to_cpu, policy, run_in, run_in_dir, tool, udp_send_errno, wait_child, write_file,
};
use libc::{EPERM, O_RDONLY, O_RDWR, O_WRONLY};

fn is_verdict(r: &serde_json::Value, decision: &str, hook: &str) -> bool {
    field(r, "type") == "verdict" && field(r, "decision") == decision && field(r, "hook") == hook
}

#[test]
fn exec_is_denied_by_path_and_allowed_otherwise() {
    let denied = tool("/tmp/exec-tools/denied", "true");
    let allowed = tool("/tmp/exec-tools/allowed", "true");
    let cgroup = TestCgroup::new("exec");
    let dirs = AgentDirs::new(
        "exec",
        &policy("exec-policy", &cgroup, "  exec:\n    - dir: /tmp/exec-tools/denied\n      action: deny\n"),
    );
    let agent = Agent::start(&dirs, "detach");
    assert_eq!(run_in(Some(&cgroup), || exec_errno(&denied)), EPERM, "exec of a denied binary");
    assert_eq!(run_in(Some(&cgroup), || exec_errno(&allowed)), 0, "exec of an allowed binary");
    assert_eq!(run_in(None, || exec_errno(&denied)), 0, "exec outside the identity");
    let r = agent.wait_record(|r| is_verdict(r, "deny", "exec"));
    assert_eq!(r["target"]["path"], denied.as_str());
    assert_eq!(r["rule"], "exec[0]");
    assert_eq!(r["errno"], EPERM);
}

#[test]
fn file_rules_judge_read_and_write_separately() {
    write_file("/tmp/files/secret.key", "k");
    write_file("/tmp/files/config.yaml", "c");
    write_file("/tmp/files/open.txt", "o");
    let cgroup = TestCgroup::new("file");
    let dirs = AgentDirs::new(
        "file",
        &policy(
            "file-policy",
            &cgroup,
            "  file:\n    - path: /tmp/files/secret.key\n      action: deny\n    - path: /tmp/files/config.yaml\n      access: [write]\n      action: deny\n",
        ),
    );
    let agent = Agent::start(&dirs, "detach");
    let inside = |path: &'static str, flags| run_in(Some(&cgroup), move || open_errno(path, flags));
    assert_eq!(inside("/tmp/files/secret.key", O_RDONLY), EPERM, "read of a denied file");
    assert_eq!(inside("/tmp/files/config.yaml", O_RDONLY), 0, "read of a write-protected file");
    assert_eq!(inside("/tmp/files/config.yaml", O_WRONLY), EPERM, "write of a write-protected file");
    assert_eq!(inside("/tmp/files/config.yaml", O_RDWR), EPERM, "read+write of a write-protected file");
    assert_eq!(inside("/tmp/files/open.txt", O_RDWR), 0, "a file no rule names");
    let r = agent.wait_record(|r| {
        is_verdict(r, "deny", "file_open") && r["target"]["path"] == "/tmp/files/config.yaml"
    });
    assert_eq!(r["rule"], "file[1]");
    assert!(r["target"]["access"].as_array().unwrap().iter().any(|a| a == "write"));
}

#[test]
fn default_deny_with_an_allow_list() {
    write_file("/tmp/allowlist/ok/data", "d");
    write_file("/tmp/allowlist/other", "o");
    let cgroup = TestCgroup::new("defaults");
    let dirs = AgentDirs::new(
        "defaults",
        &policy(
            "defaults-policy",
            &cgroup,
            "  defaults:\n    file: deny\n  file:\n    - dir: /tmp/allowlist/ok\n      action: allow\n",
        ),
    );
    let agent = Agent::start(&dirs, "detach");
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/allowlist/ok/data", O_RDONLY)), 0);
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/allowlist/other", O_RDONLY)), EPERM);
    let r = agent
        .wait_record(|r| is_verdict(r, "deny", "file_open") && r["target"]["path"] == "/tmp/allowlist/other");
    assert_eq!(r["rule"], "default");
    assert_eq!(r["reason"], "default");
}

#[test]
fn network_rules_by_cidr_port_and_protocol() {
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v4_other = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (p4, p4o, p6, pu) = (
        v4.local_addr().unwrap().port(),
        v4_other.local_addr().unwrap().port(),
        v6.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let cgroup = TestCgroup::new("net");
    let body = format!(
        "  network:\n    - cidr: 127.0.0.1/32\n      ports: {p4}\n      protocol: tcp\n      action: deny\n    - cidr: ::1/128\n      ports: {p6}\n      action: deny\n    - cidr: 127.0.0.0/8\n      ports: {pu}\n      protocol: udp\n      action: deny\n"
    );
    let dirs = AgentDirs::new("net", &policy("net-policy", &cgroup, &body));
    let agent = Agent::start(&dirs, "detach");
    let inside = |addr: String| run_in(Some(&cgroup), move || connect_errno(&addr));
    assert_eq!(inside(format!("127.0.0.1:{p4}")), EPERM, "IPv4 connect to a denied port");
    assert_eq!(inside(format!("127.0.0.1:{p4o}")), 0, "IPv4 connect to another port");
    assert_eq!(inside(format!("[::1]:{p6}")), EPERM, "IPv6 connect to a denied port");
    assert_eq!(inside(format!("[::ffff:127.0.0.1]:{p4}")), EPERM, "IPv4-mapped IPv6 judged as IPv4");
    assert_eq!(inside(format!("[::ffff:127.0.0.1]:{p4o}")), 0, "IPv4-mapped IPv6 to an allowed port");
    // The unspecified addresses reach loopback, so they are judged as loopback.
    assert_eq!(inside(format!("0.0.0.0:{p4}")), EPERM, "0.0.0.0 judged as 127.0.0.1");
    assert_eq!(inside(format!("[::ffff:0.0.0.0]:{p4}")), EPERM, "::ffff:0.0.0.0 judged as 127.0.0.1");
    assert_eq!(inside(format!("[::]:{p6}")), EPERM, ":: judged as ::1");
    assert_eq!(inside(format!("0.0.0.0:{p4o}")), 0, "0.0.0.0 to an allowed loopback port");
    assert_eq!(
        run_in(Some(&cgroup), move || udp_send_errno(&format!("127.0.0.1:{pu}"))),
        EPERM,
        "UDP sendto"
    );
    assert_eq!(run_in(None, move || connect_errno(&format!("127.0.0.1:{p4}"))), 0, "outside the identity");
    let r = agent.wait_record(|r| is_verdict(r, "deny", "connect6") && r["target"]["address"] == "127.0.0.1");
    assert_eq!(r["target"]["port"], p4);
    assert_eq!(r["target"]["protocol"], "tcp");
    assert_eq!(r["rule"], "network[0]");
    let r = agent.wait_record(|r| is_verdict(r, "deny", "sendmsg4"));
    assert_eq!(r["target"]["protocol"], "udp");
    assert_eq!(r["rule"], "network[2]");
    agent.wait_record(|r| is_verdict(r, "deny", "connect6") && r["target"]["address"] == "::1");
}

#[test]
fn audit_mode_allows_and_logs_audit() {
    write_file("/tmp/audit/secret", "s");
    let cgroup = TestCgroup::new("audit");
    let dirs = AgentDirs::new(
        "audit",
        &policy(
            "audit-policy",
            &cgroup,
            "  mode: audit\n  file:\n    - path: /tmp/audit/secret\n      action: deny\n",
        ),
    );
    let agent = Agent::start(&dirs, "detach");
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/audit/secret", O_RDONLY)), 0);
    let r = agent.wait_record(|r| is_verdict(r, "audit", "file_open"));
    assert_eq!(r["errno"], 0);
    assert_eq!(r["rule"], "file[0]");
}

/// A process that has been judged in audit mode (its identity and configuration cached
/// per CPU) is judged in enforce mode from its first call after the new set is in force.
#[test]
fn a_mode_change_reaches_a_process_already_running() {
    write_file("/tmp/mode-change/secret", "s");
    let marker = "/tmp/mode-change-enforced";
    let stop = "/tmp/mode-change-stop";
    let _ = fs::remove_file(marker);
    let _ = fs::remove_file(stop);
    let cgroup = TestCgroup::new("mode-change");
    let rules = "  file:\n    - path: /tmp/mode-change/secret\n      action: deny\n";
    let audit = policy("mode-change", &cgroup, &format!("  mode: audit\n{rules}"));
    let enforce = policy("mode-change", &cgroup, &format!("  mode: enforce\n{rules}"));
    let dirs = AgentDirs::new("mode-change", &audit);
    let agent = Agent::start(&dirs, "detach");
    // The child counts opens that succeed once the enforce set is known to be in force
    // (the marker exists), and fails with 100 if its first, audited opens were refused.
    let handle = std::thread::spawn({
        let path = cgroup.path.clone();
        move || {
            run_in_dir(Some(&path), move || {
                let mut allowed_after = 0;
                let mut audited = 0;
                while !std::path::Path::new(stop).exists() {
                    let enforced = std::path::Path::new(marker).exists();
                    let e = open_errno("/tmp/mode-change/secret", O_RDONLY);
                    if enforced && e == 0 {
                        allowed_after += 1;
                    }
                    if !enforced && e == 0 {
                        audited += 1;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                if audited == 0 { 100 } else { allowed_after }
            })
        }
    });
    agent.wait_record(|r| is_verdict(r, "audit", "file_open") && r["generation"] == 1);
    dirs.set_policy(&enforce);
    agent.reload();
    agent.wait_record(|r| field(r, "type") == "policy" && r["generation"] == 2);
    fs::write(marker, "").unwrap();
    let r = agent.wait_record(|r| is_verdict(r, "deny", "file_open") && r["generation"] == 2);
    assert_eq!(r["errno"], EPERM);
    fs::write(stop, "").unwrap();
    assert_eq!(
        handle.join().unwrap(),
        0,
        "opens allowed after the enforce set was in force (100: none audited)"
    );
}

/// A process that never sleeps keeps its CPU's task record, and the record's copy of its
/// (unmanaged) identity line, from one context switch to the next: binding its cgroup
/// must reach it at its next call all the same, without a switch in between.
#[test]
fn binding_reaches_a_process_that_never_sleeps() {
    write_file("/tmp/never-sleeps/secret", "s");
    let marker = "/tmp/never-sleeps-bound";
    let stop = "/tmp/never-sleeps-stop";
    let _ = fs::remove_file(marker);
    let _ = fs::remove_file(stop);
    let spinning = TestCgroup::new("never-sleeps");
    let elsewhere = TestCgroup::new("never-sleeps-elsewhere");
    let rules = "  file:\n    - path: /tmp/never-sleeps/secret\n      action: deny\n";
    let dirs = AgentDirs::new("never-sleeps", &policy("never-sleeps", &elsewhere, rules));
    let agent = Agent::start(&dirs, "detach");
    // The child opens the file in a tight loop, pinned to one CPU: its exit code is the
    // number of opens allowed once the binding was known to be in force, or 100 if no open
    // was allowed before it (the test would then not have tested anything).
    let child = fork_in_dir(Some(&spinning.path), move || {
        let _ = pin_to_cpu(1);
        let (mut before, mut allowed_after) = (0, 0);
        while !std::path::Path::new(stop).exists() {
            let bound = std::path::Path::new(marker).exists();
            let e = open_errno("/tmp/never-sleeps/secret", O_RDONLY);
            if e == 0 {
                if bound { allowed_after += 1 } else { before += 1 }
            }
        }
        if before == 0 { 100 } else { allowed_after.min(99) }
    });
    std::thread::sleep(Duration::from_millis(300));
    dirs.set_policy(&policy("never-sleeps", &spinning, rules));
    agent.reload();
    agent.wait_record(|r| field(r, "type") == "policy" && r["generation"] == 2);
    fs::write(marker, "").unwrap();
    let r = agent.wait_record(|r| is_verdict(r, "deny", "file_open") && r["generation"] == 2);
    assert_eq!(r["errno"], EPERM);
    assert_eq!(field(&r, "identity"), "never-sleeps");
    fs::write(stop, "").unwrap();
    assert_eq!(wait_child(child), 0, "opens allowed after the binding was in force (100: none before it)");
}

#[test]
fn children_and_new_child_cgroups_inherit_the_identity() {
    write_file("/tmp/inherit/secret", "s");
    let cgroup = TestCgroup::new("inherit");
    let dirs = AgentDirs::new(
        "inherit",
        &policy("inherit-policy", &cgroup, "  file:\n    - path: /tmp/inherit/secret\n      action: deny\n"),
    );
    let agent = Agent::start(&dirs, "detach");
    // A grandchild forked inside the cgroup.
    let forked = run_in(Some(&cgroup), || run_in(None, || open_errno("/tmp/inherit/secret", O_RDONLY)));
    assert_eq!(forked, EPERM, "a forked child inherits the identity");
    // A cgroup created under the selected one after the policy was applied.
    let late = cgroup.child("late");
    assert_eq!(
        run_in(Some(&late), || open_errno("/tmp/inherit/secret", O_RDONLY)),
        EPERM,
        "a new child cgroup"
    );
    let r = agent.wait_record(|r| is_verdict(r, "deny", "file_open") && r["cgroup_id"] == late.id());
    assert_eq!(r["identity"], "inherit-policy");
    // A sibling cgroup no policy selects is untouched.
    let unselected = TestCgroup::new("unselected");
    assert_eq!(run_in(Some(&unselected), || open_errno("/tmp/inherit/secret", O_RDONLY)), 0);
    drop(late);
}

#[test]
fn verdict_records_carry_every_field() {
    write_file("/tmp/fields/secret", "s");
    let cgroup = TestCgroup::new("fields");
    let dirs = AgentDirs::new(
        "fields",
        &policy(
            "fields-policy",
            &cgroup,
            "  identity: fields-id\n  file:\n    - path: /tmp/fields/secret\n      action: deny\n",
        ),
    );
    let agent = Agent::start(&dirs, "detach");
    // The child stays alive briefly after the denial so /proc still describes it.
    let code = run_in(Some(&cgroup), || {
        let e = open_errno("/tmp/fields/secret", O_RDONLY);
        std::thread::sleep(Duration::from_millis(1500));
        e
    });
    assert_eq!(code, EPERM);
    let r = agent.wait_record(|r| is_verdict(r, "deny", "file_open"));
    let generation = agent.wait_record(|r| field(r, "type") == "policy")["generation"].clone();
    assert_eq!(r["identity"], "fields-id");
    assert_eq!(r["policy"], "fields-policy");
    assert_eq!(r["rule"], "file[0]");
    assert_eq!(r["reason"], "rule");
    assert_eq!(r["generation"], generation);
    assert_eq!(r["errno"], EPERM);
    assert_eq!(r["uid"], 0);
    assert_eq!(r["ppid"], std::process::id());
    assert!(r["pid"].as_u64().is_some_and(|p| p != u64::from(std::process::id())));
    // The child is a fork of this test's thread, whose name the kernel keeps (15 bytes).
    let thread = std::thread::current().name().unwrap_or_default().chars().take(15).collect::<String>();
    assert_eq!(field(&r, "comm"), thread, "comm: {r}");
    assert!(field(&r, "executable").starts_with("/tests/agent-"), "executable: {r}");
    assert_eq!(r["cgroup_id"], cgroup.id());
    assert_eq!(r["cgroup"], enforcer_tests::relative(&cgroup).as_str());
    assert_eq!(r["target"]["path"], "/tmp/fields/secret");
    assert_eq!(r["target"]["access"], serde_json::json!(["read"]));
    assert!(field(&r, "time").ends_with('Z') && field(&r, "time").len() == 30, "time: {r}");
}

#[test]
fn replacing_the_policy_under_load_gives_only_old_or_new_verdicts() {
    write_file("/tmp/replace/target", "t");
    let cgroup = TestCgroup::new("replace");
    let old = policy(
        "replace-policy",
        &cgroup,
        "  logAllowed: true\n  file:\n    - path: /tmp/replace/target\n      action: deny\n",
    );
    let new = policy(
        "replace-policy",
        &cgroup,
        "  logAllowed: true\n  defaults:\n    file: deny\n  file:\n    - dir: /tmp/other\n      action: deny\n    - dir: /tmp/replace\n      action: allow\n",
    );
    let dirs = AgentDirs::new("replace", &old);
    let agent = Agent::start(&dirs, "detach");
    // A child opens the file in a loop while the policy is replaced back and forth.
    let stop = "/tmp/replace-stop";
    let _ = fs::remove_file(stop);
    let handle = std::thread::spawn({
        let path = cgroup.path.clone();
        move || {
            run_in_dir(Some(&path), || {
                let mut odd = 0;
                while !std::path::Path::new("/tmp/replace-stop").exists() {
                    let e = open_errno("/tmp/replace/target", O_RDONLY);
                    if e != 0 && e != EPERM {
                        odd += 1;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                odd
            })
        }
    });
    for i in 0..6 {
        dirs.set_policy(if i % 2 == 0 { &new } else { &old });
        agent.reload();
        let want = 2 + i;
        agent.wait_record(|r| field(r, "type") == "policy" && r["generation"] == want);
        std::thread::sleep(Duration::from_millis(300));
    }
    fs::write(stop, "").unwrap();
    assert_eq!(handle.join().unwrap(), 0, "opens failed with an errno other than EPERM");
    std::thread::sleep(Duration::from_millis(500));
    let mut seen = [0; 2];
    for r in agent
        .records()
        .iter()
        .filter(|r| field(r, "type") == "verdict" && r["target"]["path"] == "/tmp/replace/target")
    {
        let generation = r["generation"].as_u64().unwrap();
        // Odd generations run the old set, even ones the new.
        let (decision, rule) = if generation % 2 == 1 { ("deny", "file[0]") } else { ("allow", "file[1]") };
        assert_eq!((field(r, "decision"), field(r, "rule")), (decision, rule), "mixed verdict: {r}");
        seen[usize::from(generation % 2 == 0)] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "verdicts from both sets expected, got {seen:?}");
}

#[test]
fn a_malformed_policy_is_rejected_and_enforcement_stays() {
    write_file("/tmp/malformed/secret", "s");
    let cgroup = TestCgroup::new("malformed");
    let good = policy(
        "malformed-policy",
        &cgroup,
        "  file:\n    - path: /tmp/malformed/secret\n      action: deny\n",
    );
    let dirs = AgentDirs::new("malformed", &good);
    let agent = Agent::start(&dirs, "detach");
    for (attempt, bad) in [
        good.replace("action: deny", "action: deny\n      colour: red"),
        good.replace("/tmp/malformed/secret", "tmp/malformed/secret"),
        format!("{good}  network:\n    - cidr: 10.0.0.0/40\n      action: deny\n"),
    ]
    .into_iter()
    .enumerate()
    {
        dirs.set_policy(&bad);
        agent.reload();
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent.stderr().matches("reload refused").count() <= attempt {
            assert!(Instant::now() < deadline, "no refusal logged:\n{}", agent.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/malformed/secret", O_RDONLY)), EPERM);
    }
    assert_eq!(
        agent.records().iter().filter(|r| field(r, "type") == "policy").count(),
        1,
        "no new generation"
    );
    let stderr = agent.stderr();
    assert!(stderr.contains("spec.file[0]: unknown field `colour`"), "{stderr}");
    assert!(stderr.contains("spec.file[0].path") && stderr.contains("not absolute"), "{stderr}");
    assert!(stderr.contains("spec.network[0].cidr"), "{stderr}");

    let output = std::process::Command::new(std::env::var("ENFORCER_BIN").unwrap())
        .args(["policy", "validate", "-f"])
        .arg(&dirs.policy_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("spec.network[0].cidr"));
}

#[test]
fn enforcement_continues_across_an_agent_restart() {
    write_file("/tmp/restart/secret", "s");
    let cgroup = TestCgroup::new("restart");
    let dirs = AgentDirs::new(
        "restart",
        &policy("restart-policy", &cgroup, "  file:\n    - path: /tmp/restart/secret\n      action: deny\n"),
    );
    let mut first = Agent::start(&dirs, "keep");
    // A child tries the open in a loop for the whole restart; any success is a lapse.
    let stop = "/tmp/restart-stop";
    let _ = fs::remove_file(stop);
    let handle = std::thread::spawn({
        let path = cgroup.path.clone();
        move || {
            run_in_dir(Some(&path), || {
                let mut lapses = 0;
                let mut tries = 0;
                while !std::path::Path::new("/tmp/restart-stop").exists() {
                    tries += 1;
                    if open_errno("/tmp/restart/secret", O_RDONLY) != EPERM {
                        lapses += 1;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                if tries == 0 { 255 } else { lapses.min(254) }
            })
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    first.stop();
    std::thread::sleep(Duration::from_millis(500));
    let mut second = Agent::start(&dirs, "detach");
    std::thread::sleep(Duration::from_millis(300));
    fs::write(stop, "").unwrap();
    assert_eq!(handle.join().unwrap(), 0, "an open succeeded while the agent restarted");
    assert!(second.stderr().contains("took over from a previous agent"), "{}", second.stderr());
    second.wait_record(|r| field(r, "type") == "agent" && field(r, "event") == "takeover");
    // Only the second agent's programs remain: one instance directory.
    let instances = fs::read_dir(&second.bpffs).unwrap().count();
    assert_eq!(instances, 1, "the first agent's pins were retired");
    second.stop();
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/restart/secret", O_RDONLY)), 0, "detached on exit");
}

#[test]
fn network_only_mode_enforces_network_rules_without_lsm_programs() {
    write_file("/tmp/netonly/secret", "s");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cgroup = TestCgroup::new("netonly");
    let body = format!(
        "  file:\n    - path: /tmp/netonly/secret\n      action: deny\n  network:\n    - cidr: 127.0.0.0/8\n      ports: {port}\n      action: deny\n"
    );
    let dirs = AgentDirs::new("netonly", &policy("netonly-policy", &cgroup, &body));
    let agent = Agent::start_with(&dirs, "detach", &["--network-only"]);
    assert!(agent.stderr().contains("bpf lsm off (network only)"), "{}", agent.stderr());
    assert_eq!(run_in(Some(&cgroup), move || connect_errno(&format!("127.0.0.1:{port}"))), EPERM);
    assert_eq!(
        run_in(Some(&cgroup), || open_errno("/tmp/netonly/secret", O_RDONLY)),
        0,
        "file rules need BPF LSM"
    );
    agent.wait_record(|r| is_verdict(r, "deny", "connect4"));
}

#[test]
fn a_path_too_long_to_judge_is_denied_and_reported() {
    fs::create_dir_all("/tmp/longpath").unwrap();
    std::env::set_current_dir("/tmp/longpath").unwrap();
    let made = run_in(None, move || {
        if descend_long_path() != 0 {
            return 100;
        }
        i32::from(fs::write("file", "x").is_err())
    });
    assert_eq!(made, 0, "creating the deep file");
    let cgroup = TestCgroup::new("longpath");
    let dirs = AgentDirs::new(
        "longpath",
        &policy("longpath-policy", &cgroup, "  file:\n    - dir: /tmp/unrelated\n      action: deny\n"),
    );
    let agent = Agent::start(&dirs, "detach");
    let inside =
        run_in(
            Some(&cgroup),
            move || if descend_long_path() == 0 { open_errno("file", O_RDONLY) } else { 100 },
        );
    let outside =
        run_in(None, move || if descend_long_path() == 0 { open_errno("file", O_RDONLY) } else { 100 });
    std::env::set_current_dir("/").unwrap();
    assert_eq!(inside, EPERM, "a managed open of a path too long to judge is denied");
    assert_eq!(outside, 0, "an unmanaged open of the same file is untouched");
    let r = agent.wait_record(|r| is_verdict(r, "deny", "file_open"));
    assert_eq!(r["reason"], "path-too-long");
}

#[test]
fn policies_at_the_documented_limits_apply() {
    // 4096 file rules in one policy (the per-resource limit) and 16 network rules that
    // apply to one CIDR (the per-prefix limit); the last of each must be enforced.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut body = String::from("  file:\n");
    for i in 0..4096 {
        writeln!(body, "    - path: /tmp/limits/f{i}\n      action: deny").unwrap();
    }
    body.push_str("  network:\n");
    for i in 0..15u16 {
        writeln!(body, "    - cidr: 127.0.0.0/8\n      ports: {}\n      action: allow", 1 + i).unwrap();
    }
    writeln!(body, "    - cidr: 127.0.0.1/32\n      ports: {port}\n      action: deny").unwrap();
    write_file("/tmp/limits/f4095", "x");
    write_file("/tmp/limits/other", "x");
    let cgroup = TestCgroup::new("limits");
    let dirs = AgentDirs::new("limits", &policy("limits-policy", &cgroup, &body));
    let agent = Agent::start(&dirs, "detach");
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/limits/f4095", O_RDONLY)), EPERM);
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/limits/other", O_RDONLY)), 0);
    assert_eq!(run_in(Some(&cgroup), move || connect_errno(&format!("127.0.0.1:{port}"))), EPERM);
    let r = agent.wait_record(|r| is_verdict(r, "deny", "file_open"));
    assert_eq!(r["rule"], "file[4095]");
    let r = agent.wait_record(|r| is_verdict(r, "deny", "connect4"));
    assert_eq!(r["rule"], "network[15]");
    // One rule more than either limit is refused by validation.
    let over = format!("{body}    - cidr: 127.0.0.1/32\n      ports: 1\n      action: deny\n");
    dirs.set_policy(&policy("limits-policy", &cgroup, &over));
    agent.reload();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.stderr().contains("the limit is 16") {
        assert!(Instant::now() < deadline, "no refusal:\n{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes of two identities and an unmanaged one taking turns on one CPU, a token
/// passed round a ring of pipes so that every open follows a context switch from a
/// process of another cgroup: the switch copies the incoming task's identity line into
/// the CPU's task record, and each open is judged by its caller's own identity, every
/// time. The denials add up exactly in the log, all under the denying policy.
#[test]
fn processes_taking_turns_on_one_cpu_are_each_judged_as_themselves() {
    const ROUNDS: u64 = 300;
    const SECRET: &str = "/tmp/turns/secret";
    write_file(SECRET, "s");
    let denying = TestCgroup::new("turns-deny");
    let allowing = TestCgroup::new("turns-allow");
    let unmanaged = TestCgroup::new("turns-none");
    let text = format!(
        "{}\n---\n{}",
        policy("turns-deny", &denying, &format!("  file:\n    - path: {SECRET}\n      action: deny\n")),
        policy("turns-allow", &allowing, "  file:\n    - path: /tmp/turns/other\n      action: deny\n"),
    );
    let dirs = AgentDirs::new("turns", &text);
    let agent = Agent::start(&dirs, "detach");

    // Three pipes in a ring: process i reads the token from pipe i and writes it to pipe
    // i + 1. Each exits with how many of its opens did not get the errno it should (or
    // 95-99 if it could not take part).
    let ring: Vec<[i32; 2]> = (0..3)
        .map(|_| {
            let mut ends = [0; 2];
            // SAFETY: an array of two descriptors for the pipe's ends.
            assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0, "pipe");
            ends
        })
        .collect();
    let turn = |cgroup: &TestCgroup, i: usize, want: i32| {
        let (from, to) = (ring[i][0], ring[(i + 1) % 3][1]);
        fork_in_dir(Some(&cgroup.path), move || {
            if !pin_to_cpu(0) {
                return 99;
            }
            let mut wrong = 0;
            let mut token = [0u8; 1];
            for _ in 0..ROUNDS {
                let mut ready = libc::pollfd { fd: from, events: libc::POLLIN, revents: 0 };
                // SAFETY: one pollfd of ours; reads and writes one byte of our own buffer
                // on our pipe ends.
                unsafe {
                    if libc::poll(&raw mut ready, 1, 30_000) != 1 {
                        return 98;
                    }
                    if libc::read(from, token.as_mut_ptr().cast(), 1) != 1 {
                        return 97;
                    }
                }
                if open_errno(SECRET, O_RDONLY) != want {
                    wrong += 1;
                }
                // SAFETY: as above.
                if unsafe { libc::write(to, token.as_ptr().cast(), 1) } != 1 {
                    return 96;
                }
            }
            wrong.min(95)
        })
    };
    let children = [turn(&denying, 0, EPERM), turn(&allowing, 1, 0), turn(&unmanaged, 2, 0)];
    // SAFETY: one byte of a constant, on the ring's first pipe.
    assert_eq!(unsafe { libc::write(ring[0][1], [1u8].as_ptr().cast(), 1) }, 1, "the first token");
    let codes: Vec<i32> = children.into_iter().map(wait_child).collect();
    assert_eq!(
        codes,
        [0, 0, 0],
        "opens not judged by their caller's identity (denying, allowing, unmanaged)"
    );

    // Every denial in the log (full and aggregated records), under the denying policy.
    let denials = || {
        let records: Vec<_> = agent
            .records()
            .into_iter()
            .filter(|r| is_verdict(r, "deny", "file_open") && r["target"]["path"] == SECRET)
            .collect();
        let elsewhere = records.iter().filter(|r| r["policy"] != "turns-deny").count();
        (records.iter().map(|r| r["count"].as_u64().unwrap_or(1)).sum::<u64>(), elsewhere)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while denials().0 < ROUNDS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(denials(), (ROUNDS, 0), "(denials logged, records under another policy)");
}
