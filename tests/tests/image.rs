//! The agent from its container image, run the way `deploy/daemonset.yaml` runs it.
//! The OCI layout `cargo xtask image` writes travels in the test VM at
//! /image/enforcer-oci; the test reads it as a runtime would (index, manifest, config,
//! every digest checked), unpacks the layer into a runc bundle and starts the image's
//! entrypoint privileged, in the host's PID, network and cgroup namespaces, with the
//! node's bpffs, cgroup2 and securityfs mounted and host directories for its state, API
//! socket and verdict log. Everything is then checked from outside the container: a
//! workload in a selected cgroup is denied, the verdict lands in the log on the host
//! directory, the API answers on the host's socket path, and stopping the container
//! leaves enforcement in place (`--on-exit keep`) until the pins are removed.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use enforcer_tests::{TestCgroup, cli_as, field, open_errno, policy, run_in, write_file};
use libc::{EPERM, O_RDONLY};
use serde_json::{Value, json};

/// Where the test VM carries the image's OCI layout, and the tag the layout names it by.
const LAYOUT: &str = "/image/enforcer-oci";
const TAG: &str = "dev";
/// The pin directory of this agent only, so no other test's agent takes it over.
const BPFFS: &str = "/sys/fs/bpf/enforcer-image-test";
const RUNC_ROOT: &str = "/run/runc-image-test";
const CONTAINER: &str = "enforcer-image";

/// Every capability of Linux 6.1 and 6.12 (0 to 40): a privileged container has them all.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn runc(args: &[&str]) -> Output {
    Command::new(enforcer_tests::runc())
        .arg("--root")
        .arg(RUNC_ROOT)
        .args(args)
        .output()
        .expect("running runc")
}

/// `runc state`: the container's status and host PID, or `None` once it is deleted.
fn container_state() -> Option<(String, i32)> {
    let output = runc(&["state", CONTAINER]);
    if !output.status.success() {
        return None;
    }
    let state: Value = serde_json::from_slice(&output.stdout).expect("runc state prints JSON");
    let pid = state["pid"].as_i64().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    Some((field(&state, "status").to_owned(), pid))
}

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().expect("running sha256sum (busybox)");
    let text = String::from_utf8_lossy(&output.stdout);
    format!("sha256:{}", text.split_whitespace().next().expect("sha256sum prints a digest"))
}

/// The blob a descriptor names, after checking its size and digest.
fn blob(descriptor: &Value) -> PathBuf {
    let digest = field(descriptor, "digest");
    let path = Path::new(LAYOUT).join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let size = fs::metadata(&path).unwrap_or_else(|e| panic!("blob {digest} is missing: {e}")).len();
    assert_eq!(Some(size), descriptor["size"].as_u64(), "size of blob {digest}");
    assert_eq!(sha256(&path), digest, "the content of blob {} does not match its digest", path.display());
    path
}

fn json_blob(descriptor: &Value) -> Value {
    serde_json::from_slice(&fs::read(blob(descriptor)).unwrap()).expect("a JSON blob")
}

/// Unpacks the image tagged [`TAG`] into `rootfs` and returns its config.
fn unpack(rootfs: &Path) -> Value {
    let layout: Value = serde_json::from_slice(&fs::read(format!("{LAYOUT}/oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&fs::read(format!("{LAYOUT}/index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == TAG)
        .unwrap_or_else(|| panic!("no image tagged {TAG} in {index}"));
    let manifest = json_blob(entry);
    let config = json_blob(&manifest["config"]);
    let layers = manifest["layers"].as_array().expect("manifest layers");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(layers.len()));
    fs::create_dir_all(rootfs).unwrap();
    for (layer, diff_id) in layers.iter().zip(config["rootfs"]["diff_ids"].as_array().unwrap()) {
        assert_eq!(field(layer, "mediaType"), "application/vnd.oci.image.layer.v1.tar", "{layer}");
        assert_eq!(layer["digest"], *diff_id, "an uncompressed layer's digest is its diff ID");
        let status = Command::new("tar")
            .arg("-x")
            .arg("-f")
            .arg(blob(layer))
            .arg("-C")
            .arg(rootfs)
            .status()
            .expect("tar");
        assert!(status.success(), "unpacking {layer}");
    }
    config
}

/// A runc bundle for the image's entrypoint with `args`, set up as a privileged pod with
/// `hostPID`, `hostNetwork` and the host paths of `deploy/daemonset.yaml` (`binds`: host, container).
fn bundle(dir: &Path, image: &Value, args: &[&str], binds: &[(&Path, &str)], cgroup: &str) {
    let status =
        Command::new(enforcer_tests::runc()).arg("spec").current_dir(dir).status().expect("runc spec");
    assert!(status.success(), "runc spec failed");
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let mut command: Vec<Value> = image["config"]["Entrypoint"].as_array().expect("an entrypoint").clone();
    command.extend(args.iter().map(|a| json!(a)));
    let process = &mut config["process"];
    process["terminal"] = false.into();
    process["args"] = command.into();
    process["env"] = image["config"]["Env"].clone();
    process["cwd"] = "/".into();
    process["user"] = json!({ "uid": 0, "gid": 0 });
    process["noNewPrivileges"] = false.into();
    process["capabilities"] = json!({
        "bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES,
    });
    let object = process.as_object_mut().unwrap();
    object.remove("rlimits");
    object.remove("apparmorProfile");
    config["root"] = json!({ "path": "rootfs", "readonly": false });
    // Without a UTS namespace of its own the container has the node's hostname.
    config.as_object_mut().unwrap().remove("hostname");
    // hostPID and hostNetwork; a privileged container also has the node's cgroup
    // namespace (containerd and CRI-O give a private one only to unprivileged ones).
    config["linux"]["namespaces"] = json!([{ "type": "mount" }, { "type": "ipc" }]);
    config["linux"]["maskedPaths"] = json!([]);
    config["linux"]["readonlyPaths"] = json!([]);
    config["linux"]["resources"] = json!({ "devices": [{ "allow": true, "access": "rwm" }] });
    config["linux"]["cgroupsPath"] = cgroup.into();
    let mut mounts: Vec<Value> = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] != "/sys/fs/cgroup")
        .cloned()
        .map(|mut m| {
            if m["destination"] == "/sys" {
                m["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
            }
            m
        })
        .collect();
    for (host, inside) in binds {
        let options = if *inside == "/policies" { ["rbind", "ro"] } else { ["rbind", "rw"] };
        mounts.push(json!({ "destination": inside, "type": "bind", "source": host, "options": options }));
    }
    config["mounts"] = mounts.into();
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// The JSON lines of a file.
fn records(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits up to `seconds` for `ready`, panicking with `describe()` after that.
fn wait_until(seconds: u64, mut ready: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !ready() {
        assert!(Instant::now() < deadline, "{}", describe());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The agent's container, and the host directories it writes to. Dropping it deletes the
/// container, the pins and the unpacked image, however the test ends.
struct Pod {
    bundle: PathBuf,
    /// The host's end of the API socket mount.
    socket: PathBuf,
    /// The verdict log, on the host directory mounted at /var/log/enforcer.
    log: PathBuf,
    /// The container's standard output and error.
    stdout: PathBuf,
    stderr: PathBuf,
    /// The agent's PID (the node's: the container has no PID namespace of its own).
    pid: i32,
    cgroup: String,
}

impl Pod {
    /// Unpacks the image under `base` and starts it with `policy` as its policy directory
    /// and metrics on `port`; returns once the agent says it is ready.
    fn start(base: &Path, policy: &str, port: u16) -> Self {
        let (bundle_dir, state, socket_dir, log_dir, policies) = (
            base.join("bundle"),
            base.join("state"),
            base.join("run"),
            base.join("log"),
            base.join("policies"),
        );
        for dir in [&bundle_dir, &state, &socket_dir, &log_dir, &policies] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::write(policies.join("policy.yaml"), policy).unwrap();
        let rootfs = bundle_dir.join("rootfs");
        let image = unpack(&rootfs);
        assert!(rootfs.join("usr/bin/enforcer").is_file(), "the image has /usr/bin/enforcer");
        for shell in ["bin/sh", "usr/bin/sh", "bin/busybox"] {
            assert!(!rootfs.join(shell).exists(), "the image has no shell, yet /{shell} is there");
        }

        let metrics = format!("--metrics-addr=0.0.0.0:{port}");
        // The DaemonSet's arguments, with a policy directory instead of --kubernetes (there
        // is no API server here) and this test's own pin directory; state, socket and log
        // keep the image's defaults, on host directories as in the DaemonSet.
        let args = ["agent", "--policy-dir", "/policies", "--stdout", &metrics, "--bpffs", BPFFS];
        let cgroup = format!("/enforcer-image-agent-{}", std::process::id());
        let binds: [(&Path, &str); 7] = [
            (Path::new("/sys/fs/cgroup"), "/sys/fs/cgroup"),
            (Path::new("/sys/fs/bpf"), "/sys/fs/bpf"),
            (Path::new("/sys/kernel/security"), "/sys/kernel/security"),
            (&state, "/var/lib/enforcer"),
            (&socket_dir, "/run/enforcer"),
            (&log_dir, "/var/log/enforcer"),
            (&policies, "/policies"),
        ];
        bundle(&bundle_dir, &image, &args, &binds, &cgroup);

        let mut pod = Self {
            bundle: bundle_dir.clone(),
            socket: socket_dir.join("enforcer.sock"),
            log: log_dir.join("verdicts.jsonl"),
            stdout: base.join("container.out"),
            stderr: base.join("container.err"),
            pid: 0,
            cgroup,
        };
        // Detached, its output goes straight to these files (no console, no shim).
        let started = Command::new(enforcer_tests::runc())
            .args(["--root", RUNC_ROOT, "run", "--detach", "--no-pivot", "--bundle"])
            .arg(&bundle_dir)
            .arg(CONTAINER)
            .stdout(fs::File::create(&pod.stdout).unwrap())
            .stderr(fs::File::create(&pod.stderr).unwrap())
            .status()
            .expect("runc run");
        assert!(started.success(), "runc run failed:\n{}", pod.stderr());
        // Ready: programs attached and the policy applied (the socket comes up earlier).
        wait_until(
            180,
            || {
                let running = container_state().is_some_and(|(status, _)| status != "stopped");
                assert!(running, "the agent's container stopped:\n{}", pod.stderr());
                pod.stderr().contains("enforcer agent ready")
            },
            || format!("the agent in the container was not ready within 180 s:\n{}", pod.stderr()),
        );
        let (status, pid) = container_state().expect("the container exists");
        assert_eq!(status, "running");
        pod.pid = pid;
        pod
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for a record matching `want` in `file` (the log or the container's stdout).
    fn wait_record(&self, file: &Path, want: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(
            30,
            || {
                found = records(file).into_iter().find(|r| want(r));
                found.is_some()
            },
            || format!("no such record in {}:\n{:?}\n{}", file.display(), records(file), self.stderr()),
        );
        found.expect("found")
    }

    /// Stops the agent as the kubelet stops a pod (SIGTERM to the entrypoint), then
    /// deletes the container.
    fn stop(&self) {
        let killed = runc(&["kill", CONTAINER, "TERM"]);
        assert!(killed.status.success(), "runc kill: {}", String::from_utf8_lossy(&killed.stderr));
        wait_until(
            60,
            || container_state().is_none_or(|(status, _)| status == "stopped"),
            || format!("the agent did not stop within 60 s of SIGTERM:\n{}", self.stderr()),
        );
        let deleted = runc(&["delete", CONTAINER]);
        assert!(deleted.status.success(), "runc delete: {}", String::from_utf8_lossy(&deleted.stderr));
        assert!(container_state().is_none(), "the container is gone");
        let dir = enforcer_tests::cgroup2_root().join(self.cgroup.trim_start_matches('/'));
        assert!(!dir.exists(), "runc removed the container's cgroup {}", dir.display());
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = runc(&["delete", "--force", CONTAINER]);
        let _ = fs::remove_dir_all(BPFFS);
        let _ = fs::remove_dir_all(&self.bundle);
    }
}

/// The image's entrypoint runs in the node's PID, network and cgroup namespaces with
/// every capability, as a privileged pod with `hostPID` and `hostNetwork` does.
fn assert_privileged_on_the_host(pid: i32) {
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("/usr/bin/enforcer\0agent\0"), "{cmdline:?}");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_owned()
    };
    assert_eq!(line("NSpid:"), pid.to_string(), "one PID namespace: the node's");
    let caps = u64::from_str_radix(&line("CapEff:"), 16).unwrap();
    for bit in [21, 38, 39] {
        assert_ne!(caps & (1 << bit), 0, "CAP_SYS_ADMIN, CAP_PERFMON and CAP_BPF are effective: {caps:x}");
    }
    for ns in ["pid", "net", "cgroup"] {
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            "the agent is in the node's {ns} namespace"
        );
    }
}

#[test]
fn the_image_runs_as_the_daemonset_runs_it_and_enforces_from_its_container() {
    let base = PathBuf::from(format!("/tmp/enforcer-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let _ = fs::remove_dir_all(BPFFS);
    // The workload's file lives on the node only: the agent in its container judges the
    // path the kernel resolves for the workload.
    let secret = format!("{}/secret", base.display());
    write_file(&secret, "s");
    let cgroup = TestCgroup::new("image");
    let rules = format!("  file:\n    - path: {secret}\n      action: deny\n");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pod = Pod::start(&base, &policy("image-policy", &cgroup, &rules), port);

    assert_privileged_on_the_host(pod.pid);
    let pins = fs::read_dir(BPFFS).expect("the agent pinned under its bpffs directory").count();
    assert_eq!(pins, 1, "one agent instance pinned");
    let (code, out, err) = cli_as(&pod.socket, None, &["status"]);
    assert_eq!(code, 0, "enforcer status through the host's end of the socket:\n{out}{err}");

    // Enforcement, seen from the node.
    let open = |cgroup: Option<&TestCgroup>| run_in(cgroup, || open_errno(&secret, O_RDONLY));
    assert_eq!(open(Some(&cgroup)), EPERM, "the policy denies the workload");
    assert_eq!(open(None), 0, "outside the identity");
    let is_denial = |r: &Value| {
        field(r, "type") == "verdict"
            && field(r, "hook") == "file_open"
            && field(&r["target"], "path") == secret
    };
    let verdict = pod.wait_record(&pod.log, is_denial);
    assert_eq!(field(&verdict, "decision"), "deny", "{verdict}");
    assert_eq!(field(&verdict, "identity"), "image-policy", "{verdict}");
    assert_eq!(verdict["errno"], EPERM, "{verdict}");
    // --stdout: the same record in the container's output, which `kubectl logs` shows.
    pod.wait_record(&pod.stdout, is_denial);
    // The metrics server answers on the node's network: the DaemonSet's probes, and
    // the metrics.
    for probe in ["/healthz", "/readyz"] {
        let answer = http_get(&format!("127.0.0.1:{port}"), probe);
        assert!(answer.starts_with("HTTP/1.1 200"), "{probe}: {answer}");
    }
    let answer = http_get(&format!("127.0.0.1:{port}"), "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(
            "enforcer_verdicts_total{identity=\"image-policy\",hook=\"file_open\",decision=\"deny\"}"
        ),
        "{answer}"
    );

    // A stopped pod leaves the programs attached (--on-exit keep): the node stays
    // enforced while the DaemonSet replaces its pod.
    pod.stop();
    let stop = pod.wait_record(&pod.log, |r| field(r, "type") == "agent" && field(r, "event") == "stop");
    assert_eq!(stop["pid"], pod.pid, "the agent knows itself by its node PID: {stop}");
    assert!(!pod.socket.exists(), "the agent removed its socket on the way out");
    assert_eq!(open(Some(&cgroup)), EPERM, "still enforced with the pod gone");

    // Uninstalling for good: removing the pins detaches the programs.
    fs::remove_dir_all(BPFFS).unwrap();
    wait_until(
        10,
        || open(Some(&cgroup)) == 0,
        || "the programs still enforce after their pins were removed".to_owned(),
    );
}
