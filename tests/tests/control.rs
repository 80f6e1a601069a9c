//! The control plane against a live agent: every CLI verb (text and `--output json`),
//! access control on the socket, bad requests, concurrent applies, persistence, log
//! rotation under a follower, and the metrics endpoint.

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::TcpListener,
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use enforcer_agent::kernel::loader;
use enforcer_tests::{
    Agent, AgentDirs, TestCgroup, cli_as, connect_errno, field, open_errno, policy, run_in, run_in_dir,
    write_file,
};
use libc::{EPERM, O_RDONLY};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// An agent with no policy directory: everything goes through the API.
fn api_agent(name: &str, extra: &[&str]) -> (AgentDirs, Agent) {
    agent_without_policy_dir(name, extra)
}

/// [`api_agent`] without the LSM programs (`--network-only`), for tests of the control
/// plane that observe the kernel through network rules, or not at all: the API is the
/// same, and the agent starts in a few seconds instead of verifying every LSM program.
fn network_api_agent(name: &str, extra: &[&str]) -> (AgentDirs, Agent) {
    let mut args = vec!["--network-only"];
    args.extend_from_slice(extra);
    agent_without_policy_dir(name, &args)
}

fn agent_without_policy_dir(name: &str, extra: &[&str]) -> (AgentDirs, Agent) {
    let dirs = AgentDirs::new(name, "");
    std::fs::remove_file(dirs.policy_dir.join("policy.yaml")).unwrap();
    let agent = Agent::start_with_dirs_only(&dirs, extra);
    (dirs, agent)
}

#[test]
#[expect(clippy::too_many_lines, reason = "one agent walked through every verb in order")]
fn every_verb_against_a_live_agent() {
    write_file("/tmp/verbs/secret", "s");
    let cgroup = TestCgroup::new("verbs");
    let (dirs, agent) = api_agent("verbs", &[]);
    let file = dirs.policy_dir.join("verbs.yaml");
    std::fs::write(
        &file,
        policy(
            "verbs-policy",
            &cgroup,
            "  file:\n    - path: /tmp/verbs/secret\n      action: deny\n  network:\n    - cidr: 127.0.0.0/8\n      ports: 9\n      protocol: tcp\n      action: deny\n",
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();

    // apply --dry-run changes nothing; apply installs.
    let (code, out, _) = agent.cli(&["policy", "apply", "-f", f, "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("verbs-policy: would be created") && out.contains("dry run: nothing changed"),
        "{out}"
    );
    assert_eq!(
        run_in(Some(&cgroup), || open_errno("/tmp/verbs/secret", O_RDONLY)),
        0,
        "dry run enforced nothing"
    );
    let (code, out, _) = agent.cli(&["--output", "json", "policy", "apply", "-f", f]);
    assert_eq!(code, 0, "{out}");
    let applied = json(&out);
    assert_eq!(applied["dryRun"], false);
    assert_eq!(applied["changes"][0]["name"], "verbs-policy");
    assert_eq!(applied["changes"][0]["change"], "created");
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/verbs/secret", O_RDONLY)), EPERM);
    let generation = applied["generation"].as_u64().unwrap();
    let r = agent.wait_record(|r| field(r, "type") == "policy" && field(r, "source") == "api");
    assert_eq!(r["uid"], 0, "the caller's uid is recorded with the change");

    // list, get
    let (code, out, _) = agent.cli(&["--output", "json", "policy", "list"]);
    assert_eq!(code, 0);
    let list = json(&out);
    assert_eq!(list["generation"], generation);
    assert_eq!(list["policies"][0]["name"], "verbs-policy");
    assert_eq!(list["policies"][0]["rules"]["file"], 1);
    let (_, out, _) = agent.cli(&["policy", "list"]);
    assert!(out.starts_with("NAME") && out.contains("verbs-policy"), "{out}");
    let (code, out, _) = agent.cli(&["policy", "get", "verbs-policy"]);
    assert_eq!(code, 0);
    assert!(out.contains("apiVersion: enforcer.dev/v1") && out.contains("/tmp/verbs/secret"), "{out}");
    let (_, out, _) = agent.cli(&["--output", "json", "policy", "get", "verbs-policy"]);
    assert_eq!(json(&out)["metadata"]["name"], "verbs-policy");
    let (code, _, err) = agent.cli(&["policy", "get", "nope"]);
    assert_eq!(code, 3, "not found: {err}");

    // diff shows a line diff of a change
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("ports: 9", "ports: 10")).unwrap();
    let (code, out, _) = agent.cli(&["policy", "diff", "-f", f]);
    assert_eq!(code, 0);
    let removed = out.lines().any(|l| l.trim_start().starts_with('-') && l.ends_with("ports: 9"));
    let added = out.lines().any(|l| l.trim_start().starts_with('+') && l.ends_with("ports: 10"));
    assert!(out.contains("would be changed") && removed && added, "{out}");

    // check agrees with what the kernel does
    let (code, out, _) = agent.cli(&[
        "check",
        "--identity",
        "verbs-policy",
        "--file",
        "/tmp/verbs/secret",
        "--access",
        "read",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("deny by file[0]"), "{out}");
    let (_, out, _) = agent.cli(&[
        "--output",
        "json",
        "check",
        "--identity",
        "verbs-policy",
        "--connect",
        "127.0.0.1:9/tcp",
    ]);
    let explained = json(&out);
    assert_eq!(
        (explained["decision"].as_str(), explained["rule"].as_str()),
        (Some("deny"), Some("network[0]"))
    );
    assert_eq!(run_in(Some(&cgroup), || connect_errno("127.0.0.1:9")), EPERM, "the kernel agrees with check");
    let (_, out, _) = agent.cli(&["check", "--identity", "verbs-policy", "--exec", "/bin/true"]);
    assert!(out.starts_with("allow by default"), "{out}");
    let (code, _, _) = agent.cli(&["check", "--identity", "nobody-here", "--exec", "/bin/true"]);
    assert_eq!(code, 3);
    let (code, _, _) = agent.cli(&["check", "--identity", "verbs-policy", "--connect", "nonsense"]);
    assert_eq!(code, 2);

    // identities with a live process
    let path = cgroup.path.clone();
    let sleeper = std::thread::spawn(move || {
        run_in_dir(Some(&path), || {
            std::thread::sleep(Duration::from_secs(3));
            0
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, _) = agent.cli(&["--output", "json", "identities"]);
    assert_eq!(code, 0);
    let identities = json(&out);
    assert_eq!(identities[0]["identity"], "verbs-policy");
    assert_eq!(identities[0]["processes"], 1, "{out}");
    assert_eq!(identities[0]["cgroups"][0]["path"], enforcer_tests::relative(&cgroup).as_str());
    let (_, out, _) = agent.cli(&["identities"]);
    assert!(out.contains("verbs-policy"), "{out}");
    sleeper.join().unwrap();

    // status
    let (code, out, _) = agent.cli(&["--output", "json", "status"]);
    assert_eq!(code, 0);
    let status = json(&out);
    assert_eq!(status["bpf_lsm"], true);
    assert_eq!(status["generation"], generation);
    assert!(status["programs"].as_array().unwrap().iter().all(|p| p["attached"] == true), "{out}");
    // Every LSM program, the cgroup socket programs, the tracepoints, the dentry moves.
    let programs = loader::LSM_PROGRAMS.len()
        + loader::CGROUP_PROGRAMS.len()
        + loader::TRACE_PROGRAMS.len()
        + loader::RENAME_PROGRAMS.len();
    assert_eq!(status["programs"].as_array().unwrap().len(), programs, "{out}");
    assert!(status["maps"].as_array().unwrap().iter().any(|m| m["map"] == "PATH_RULES" && m["used"] == 1));
    assert!(status["counters"]["deny"].as_u64().unwrap() >= 2);
    let (_, out, _) = agent.cli(&["status"]);
    assert!(out.contains("file_open") && out.contains("attached") && out.contains("generation"), "{out}");

    // tail without following shows the denials, filtered
    let (code, out, _) = agent.cli(&[
        "--output",
        "json",
        "verdicts",
        "tail",
        "--no-follow",
        "--decision",
        "deny",
        "--hook",
        "file_open",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out.lines().map(json).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["hook"] == "file_open" && l["decision"] == "deny"),
        "{out}"
    );

    // delete
    let (code, out, _) = agent.cli(&["policy", "delete", "verbs-policy"]);
    assert_eq!(code, 0);
    assert!(out.contains("verbs-policy: deleted"), "{out}");
    assert_eq!(run_in(Some(&cgroup), || open_errno("/tmp/verbs/secret", O_RDONLY)), 0);
    let (code, _, _) = agent.cli(&["policy", "delete", "verbs-policy"]);
    assert_eq!(code, 3);

    // invalid input changes nothing
    std::fs::write(
        &file,
        "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata: {name: x}\nspec: {selector: {}}\n",
    )
    .unwrap();
    let (code, _, err) = agent.cli(&["policy", "apply", "-f", f]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("spec.selector"), "{err}");
}

#[test]
fn callers_other_than_root_or_the_group_are_refused() {
    let (dirs, agent) = network_api_agent("access", &[]);
    let (code, _, err) = cli_as(&dirs.socket, Some(65534), &["status"]);
    assert_eq!(code, 4, "a non-root caller is refused: {err}");
    assert!(err.contains("ermission denied"), "{err}");
    drop(agent);
    // With --socket-group, members get in (the group's gid is 65534 here).
    let (dirs, agent) = network_api_agent("access-group", &["--socket-group", "65534"]);
    let (code, out, err) = cli_as(&dirs.socket, Some(65534), &["--output", "json", "status"]);
    assert_eq!(code, 0, "a group member is allowed: {err}");
    assert!(json(&out)["generation"].is_u64());
    drop(agent);
    // By name, and membership through a supplementary group only.
    let (dirs, agent) = network_api_agent("access-named", &["--socket-group", "nobody"]);
    let supplementary = |groups: &'static [libc::gid_t]| {
        use std::os::unix::process::CommandExt as _;
        let mut command =
            std::process::Command::new(std::env::var("ENFORCER_BIN").unwrap_or("/bin/enforcer".into()));
        command.arg("--socket").arg(&dirs.socket).arg("status");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(1234) != 0
                    || libc::setuid(1234) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.output().expect("running the CLI").status.code()
    };
    assert_eq!(supplementary(&[65534]), Some(0), "a supplementary member of the named group is allowed");
    assert_eq!(supplementary(&[4]), Some(4), "a member of other groups only is refused");
    drop(agent);
}

fn raw_request(socket: &std::path::Path, request: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = stream.write_all(request);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn garbage_and_oversized_requests_get_errors_and_the_agent_keeps_serving() {
    let (dirs, agent) = network_api_agent("garbage", &[]);
    let answer = raw_request(&dirs.socket, b"\x00\x01garbage that is not HTTP\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let answer =
        raw_request(&dirs.socket, b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains("no such API path"), "{answer}");
    let big = enforcer_agent::api::MAX_BODY + 1024 * 1024;
    let head = format!(
        "POST /v1/policies HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\nConnection: close\r\n\r\n"
    );
    let mut request = head.into_bytes();
    request.extend(std::iter::repeat_n(b'a', big));
    let answer = raw_request(&dirs.socket, &request);
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(200)]);
    let answer = raw_request(
        &dirs.socket,
        b"POST /v1/policies HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot: [yaml",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A client that connects and says nothing does not block others.
    let _silent = UnixStream::connect(&dirs.socket).unwrap();
    let (code, out, err) = agent.cli(&["--output", "json", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(json(&out)["uptime_seconds"].is_u64());
}

#[test]
fn concurrent_applies_leave_one_whole_set() {
    write_file("/tmp/concurrent/x", "x");
    write_file("/tmp/concurrent/y", "y");
    let a = TestCgroup::new("concurrent-a");
    let b = TestCgroup::new("concurrent-b");
    let (dirs, agent) = api_agent("concurrent", &[]);
    // Two sets naming the same two policies: set x denies /tmp/concurrent/x to both
    // cgroups, set y denies /tmp/concurrent/y. A mixed set in the kernel would deny one
    // file to one cgroup and the other file to the other.
    for tag in ["x", "y"] {
        let rule = format!("  file:\n    - path: /tmp/concurrent/{tag}\n      action: deny\n");
        let text = format!("{}\n---\n{}", policy("first", &a, &rule), policy("second", &b, &rule));
        std::fs::write(dirs.policy_dir.join(format!("{tag}.yaml")), text).unwrap();
    }
    // What the kernel does: the errno of opening each file from each cgroup.
    let probe = |cgroup: &TestCgroup| {
        ["x", "y"]
            .map(|tag| run_in(Some(cgroup), || open_errno(&format!("/tmp/concurrent/{tag}"), libc::O_RDONLY)))
    };
    for round in 0..5 {
        let handles: Vec<_> = ["x", "y"]
            .into_iter()
            .map(|tag| {
                let socket = dirs.socket.clone();
                let file = dirs.policy_dir.join(format!("{tag}.yaml"));
                std::thread::spawn(move || {
                    cli_as(&socket, None, &["policy", "apply", "-f", file.to_str().unwrap()])
                })
            })
            .collect();
        for h in handles {
            let (code, _, err) = h.join().unwrap();
            assert_eq!(code, 0, "{err}");
        }
        let (in_a, in_b) = (probe(&a), probe(&b));
        assert_eq!(in_a, in_b, "round {round}: the kernel holds a mixed set (a: {in_a:?}, b: {in_b:?})");
        let denied: Vec<&str> =
            ["x", "y"].into_iter().zip(in_a).filter(|(_, e)| *e == libc::EPERM).map(|(t, _)| t).collect();
        assert_eq!(denied.len(), 1, "round {round}: exactly one file must be denied, errnos {in_a:?}");
        // And the set the agent reports is the one the kernel enforces.
        let (_, first, _) = agent.cli(&["--output", "json", "policy", "get", "first"]);
        let reported = json(&first)["spec"]["file"][0]["path"].as_str().unwrap_or_default().to_owned();
        assert_eq!(reported, format!("/tmp/concurrent/{}", denied[0]), "round {round}");
    }
}

#[test]
fn applied_policies_survive_an_agent_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cgroup = TestCgroup::new("persist");
    let (dirs, mut agent) = network_api_agent("persist", &[]);
    let file = dirs.policy_dir.join("p.yaml");
    let rule = format!(
        "  network:\n    - cidr: 127.0.0.1/32\n      ports: {port}\n      protocol: tcp\n      action: deny\n"
    );
    std::fs::write(&file, policy("persist-policy", &cgroup, &rule)).unwrap();
    let (code, _, err) = agent.cli(&["policy", "apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    agent.stop();
    let agent = Agent::start_with_dirs_only(&dirs, &["--network-only"]);
    let (_, out, _) = agent.cli(&["--output", "json", "policy", "list"]);
    assert_eq!(json(&out)["policies"][0]["name"], "persist-policy", "{out}");
    let target = format!("127.0.0.1:{port}");
    assert_eq!(run_in(Some(&cgroup), move || connect_errno(&target)), EPERM);
}

#[test]
fn a_follower_sees_every_verdict_across_log_rotations() {
    // Distinct ports: identical verdicts within a second would be aggregated into fewer
    // records, and the log must grow past its rotation size.
    let total: u16 = 60;
    let first_port: u16 = 24_100;
    let cgroup = TestCgroup::new("rotate");
    let (dirs, agent) = network_api_agent("rotate", &["--log-max-bytes", "4096", "--log-keep", "2"]);
    let file = dirs.policy_dir.join("p.yaml");
    let rule = format!(
        "  network:\n    - cidr: 127.0.0.1/32\n      ports: {first_port}-{}\n      protocol: tcp\n      action: deny\n",
        first_port + total - 1
    );
    std::fs::write(&file, policy("rotate-policy", &cgroup, &rule)).unwrap();
    assert_eq!(agent.cli(&["policy", "apply", "-f", file.to_str().unwrap()]).0, 0);
    let mut tail = std::process::Command::new(std::env::var("ENFORCER_BIN").unwrap())
        .arg("--socket")
        .arg(&dirs.socket)
        .args(["--output", "json", "verdicts", "tail", "--last", "0", "--identity", "rotate-policy"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let denied = run_in(Some(&cgroup), move || {
        (0..total)
            .filter(|i| connect_errno(&format!("127.0.0.1:{}", first_port + i)) == EPERM)
            .count()
            .try_into()
            .unwrap_or(255)
    });
    assert_eq!(denied, i32::from(total), "every connect denied");
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < i32::from(total) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the follower stalled");
        let v = json(&line);
        assert_ne!(v["type"], "dropped", "the follower lost records: {line}");
        if v["type"] == "verdict" {
            // An aggregated record stands for `count` calls.
            seen += v["count"].as_i64().map_or(1, |n| i32::try_from(n).unwrap_or(i32::MAX));
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(tail.id()).unwrap(), libc::SIGTERM) };
    let _ = tail.wait();
    let rotated = std::path::PathBuf::from(format!("{}.1", dirs.log_file.display()));
    assert!(rotated.exists(), "the log rotated at least once");
    assert!(!std::path::PathBuf::from(format!("{}.3", dirs.log_file.display())).exists(), "at most 2 kept");
}

#[test]
fn the_metrics_endpoint_scrapes_in_prometheus_format() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied_port = denied.local_addr().unwrap().port();
    let cgroup = TestCgroup::new("metrics");
    let addr = format!("127.0.0.1:{port}");
    let (dirs, agent) = network_api_agent("metrics", &["--metrics-addr", &addr]);
    let file = dirs.policy_dir.join("p.yaml");
    let rule = format!(
        "  network:\n    - cidr: 127.0.0.1/32\n      ports: {denied_port}\n      protocol: tcp\n      action: deny\n"
    );
    std::fs::write(&file, policy("metrics-policy", &cgroup, &rule)).unwrap();
    assert_eq!(agent.cli(&["policy", "apply", "-f", file.to_str().unwrap()]).0, 0);
    let target = format!("127.0.0.1:{denied_port}");
    assert_eq!(run_in(Some(&cgroup), move || connect_errno(&target)), EPERM);
    agent.wait_record(|r| field(r, "type") == "verdict");
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("content-type: text/plain; version=0.0.4"), "{answer}");
    assert!(
        answer.contains(
            "enforcer_verdicts_total{identity=\"metrics-policy\",hook=\"connect4\",decision=\"deny\"} 1"
        ),
        "{answer}"
    );
    assert!(answer.contains("enforcer_policy_generation 2"), "{answer}");
    assert!(answer.contains("enforcer_events_dropped_total 0"), "{answer}");
    assert!(answer.contains("enforcer_map_capacity{map=\"PATH_RULES\"}"), "{answer}");
    assert!(answer.contains("enforcer_apply_errors_total 0"), "{answer}");
}

/// An apply answers with each changed policy's line diff only when asked (`diff=true`)
/// or on a dry run, and a dry run changes nothing in the kernel: the denied port stays
/// the one applied before it.
#[test]
fn an_apply_returns_line_diffs_only_when_asked() {
    let cgroup = TestCgroup::new("diffs");
    let (dirs, agent) = network_api_agent("diffs", &[]);
    let apply = |query: &str, port: u16| {
        let body = policy(
            "diffs-policy",
            &cgroup,
            &format!(
                "  network:\n    - cidr: 127.0.0.0/8\n      ports: {port}\n      protocol: tcp\n      action: deny\n"
            ),
        );
        let request = format!(
            "POST /v1/policies{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = raw_request(&dirs.socket, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let change = json(answer.split_once("\r\n\r\n").map_or("", |(_, body)| body));
        assert_eq!(change["changes"][0]["name"], "diffs-policy", "{change}");
        change
    };
    let lines = |change: &Value| -> Vec<String> {
        let diff =
            change["changes"][0]["diff"].as_array().unwrap_or_else(|| panic!("no diff list: {change}"));
        diff.iter().map(|l| l.as_str().expect("a diff line").to_owned()).collect()
    };
    let has = |lines: &[String], mark: char, port: u16| {
        lines.iter().any(|l| l.starts_with(mark) && l.ends_with(&format!("ports: {port}")))
    };

    // Not asked: no diff.
    let created = apply("", 9);
    assert_eq!(created["changes"][0]["change"], "created");
    assert!(lines(&created).is_empty(), "a diff nobody asked for: {created}");
    // Asked: the changed line, removed and added.
    let changed = apply("?diff=true", 10);
    assert_eq!(changed["changes"][0]["change"], "changed");
    let diff = lines(&changed);
    assert!(has(&diff, '-', 9) && has(&diff, '+', 10), "{diff:?}");
    // A dry run shows its diff and changes nothing: the next apply's diff starts from 10.
    let dry = apply("?dryRun=true", 11);
    assert_eq!(dry["dryRun"], true);
    assert!(has(&lines(&dry), '+', 11), "{dry}");
    assert_eq!(run_in(Some(&cgroup), || connect_errno("127.0.0.1:10")), EPERM, "port 10 still denied");
    assert_ne!(run_in(Some(&cgroup), || connect_errno("127.0.0.1:11")), EPERM, "the dry run denied nothing");
    let again = apply("?diff=true", 12);
    let diff = lines(&again);
    assert!(has(&diff, '-', 10) && has(&diff, '+', 12) && !has(&diff, '-', 11), "{diff:?}");
    let r = agent.wait_record(|r| {
        field(r, "type") == "verdict" && field(r, "decision") == "deny" && r["target"]["port"] == 10
    });
    assert_eq!(r["rule"], "network[0]");
}
