//! Complete mediation, attempted as root inside a managed workload: the other routes to a
//! denied file or program (hard links, bind mounts, chroot, renames, the dynamic loader,
//! executable mappings, memfd) and the operations that change what paths mean or bypass
//! the network hooks (mounts, raw sockets). Each is refused with a verdict; the allowed
//! counterparts still work.

use std::{ffi::CString, fs, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use enforcer_tests::{
    Agent, AgentDirs, TestCgroup, field, map_errno, open_errno, policy, run_in, tool, write_file,
};
use libc::{EPERM, O_RDONLY, O_WRONLY};
use serde_json::Value;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(255)
}

fn c(path: &str) -> CString {
    CString::new(path).expect("path without NUL")
}

/// 0 if `rc` is not negative, else the errno.
fn rc(rc: i32) -> i32 {
    if rc < 0 { errno() } else { 0 }
}

/// The first step whose result differs from the expected one, as `10 + index` (0: all
/// as expected): the child's exit code.
fn first_mismatch(got: &[i32], expected: &[i32]) -> i32 {
    got.iter()
        .zip(expected)
        .position(|(g, e)| g != e)
        .map_or(0, |i| 10 + i32::try_from(i).expect("few steps"))
}

/// Waits for a verdict with this hook and reason (and a target matching `target`).
fn verdict(agent: &Agent, hook: &str, reason: &str, target: impl Fn(&Value) -> bool) -> Value {
    let found = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = agent.records().into_iter().find(|r| {
            field(r, "type") == "verdict"
                && field(r, "hook") == hook
                && field(r, "reason") == reason
                && target(&r["target"])
        }) {
            return r;
        }
        if std::time::Instant::now() > found {
            let seen: Vec<String> = agent
                .records()
                .iter()
                .map(|r| format!("{}/{}/{}", field(r, "hook"), field(r, "reason"), r["target"]))
                .collect();
            panic!("no {hook}/{reason} verdict within 30 s; seen: {seen:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replaces the agent's policy and waits until the new set (generation 2) is in force.
fn reapply(agent: &Agent, dirs: &AgentDirs, policy: &str) {
    dirs.set_policy(policy);
    agent.reload();
    agent.wait_record(|r| field(r, "type") == "policy" && r["generation"] == 2);
}

fn named(name: &str) -> impl Fn(&Value) -> bool + '_ {
    move |t| field(t, "name") == name
}

const FILES: &str = "/tmp/mediation/files";

fn file_policy(name: &str, cgroup: &TestCgroup, extra: &str) -> String {
    policy(
        name,
        cgroup,
        &format!(
            "{extra}  file:\n    - dir: {FILES}/secrets\n      action: deny\n    - path: {FILES}/key\n      action: deny\n"
        ),
    )
}

/// A denied directory and a denied file, a public directory, and a hard link to the
/// denied file made by someone else before the policy was applied.
fn file_fixture() {
    let _ = fs::remove_dir_all(FILES);
    write_file(&format!("{FILES}/secrets/a"), "secret");
    write_file(&format!("{FILES}/key"), "key");
    write_file(&format!("{FILES}/public/p"), "public");
    fs::hard_link(format!("{FILES}/key"), format!("{FILES}/public/key-link")).expect("hard link");
}

#[test]
fn write_class_operations_and_links_are_judged_like_writes() {
    file_fixture();
    let workload = TestCgroup::new("mediation-writes");
    let dirs = AgentDirs::new("mediation-writes", &file_policy("writes-policy", &workload, ""));
    let agent = Agent::start(&dirs, "detach");
    let outcome = run_in(Some(&workload), || {
        let secret = format!("{FILES}/secrets/a");
        let s = c(&secret);
        let (public, secrets) = (format!("{FILES}/public"), format!("{FILES}/secrets"));
        let at = |dir: &str, name: &str| c(&format!("{dir}/{name}"));
        // SAFETY: plain syscalls on NUL-terminated paths that outlive each call.
        let got = unsafe {
            [
                // A hard link someone else made to the denied file.
                open_errno(&format!("{public}/key-link"), O_RDONLY),
                // Linking the denied file out of its directory, renaming it out, removing it.
                rc(libc::link(s.as_ptr(), at(&public, "stolen").as_ptr())),
                rc(libc::rename(s.as_ptr(), at(&public, "moved").as_ptr())),
                rc(libc::unlink(s.as_ptr())),
                rc(libc::truncate(s.as_ptr(), 0)),
                rc(libc::chmod(s.as_ptr(), 0o777)),
                rc(libc::chown(s.as_ptr(), 1, 1)),
                rc(libc::setxattr(s.as_ptr(), c("trusted.t").as_ptr(), b"x".as_ptr().cast(), 1, 0)),
                rc(libc::mkdir(at(&secrets, "d").as_ptr(), 0o755)),
                rc(libc::symlink(c("/etc").as_ptr(), at(&secrets, "l").as_ptr())),
                rc(libc::mknod(at(&secrets, "f").as_ptr(), libc::S_IFIFO | 0o600, 0)),
                // The exact rule's file, by its own name.
                rc(libc::unlink(at(FILES, "key").as_ptr())),
                // The public directory: everything still allowed.
                rc(libc::mkdir(at(&public, "d").as_ptr(), 0o755)),
                rc(libc::rename(at(&public, "p").as_ptr(), at(&public, "q").as_ptr())),
                rc(libc::truncate(at(&public, "q").as_ptr(), 0)),
                rc(libc::chmod(at(&public, "q").as_ptr(), 0o600)),
                rc(libc::unlink(at(&public, "q").as_ptr())),
                open_errno(&format!("{public}/new"), O_WRONLY | libc::O_CREAT),
            ]
        };
        let mut expected = [EPERM; 18];
        expected[12..].fill(0);
        first_mismatch(&got, &expected)
    });
    assert_eq!(
        outcome, 0,
        "step {outcome} (10 = hard link open, 11 link, 12 rename, 13 unlink, 14 truncate, 15 chmod, 16 chown, \
         17 setxattr, 18 mkdir, 19 symlink, 20 mknod, 21 unlink exact; 22.. allowed in public)"
    );
    assert!(Path::new(&format!("{FILES}/secrets/a")).exists(), "the denied file is still there");
    let r = verdict(&agent, "file_open", "rule", |t| field(t, "path") == format!("{FILES}/public/key-link"));
    assert_eq!(field(&r, "decision"), "deny");
    assert_eq!(field(&r, "rule"), "file[1]", "matched by the file's identity: {r}");
    for hook in ["link", "rename", "unlink", "truncate", "chmod", "chown", "setxattr"] {
        let r = verdict(&agent, hook, "rule", named("a"));
        assert_eq!(field(&r, "rule"), "file[0]", "{r}");
        assert_eq!(r["target"]["access"][0], if hook == "link" { "read" } else { "write" }, "{r}");
    }
    verdict(&agent, "mkdir", "rule", named("d"));
    verdict(&agent, "symlink", "rule", named("l"));
    verdict(&agent, "mknod", "rule", named("f"));
    verdict(&agent, "unlink", "rule", named("key"));
}

/// `mount --bind src dst`: 0 or the errno.
fn bind_mount(src: &str, dst: &str) -> i32 {
    let (src, dst) = (c(src), c(dst));
    // SAFETY: NUL-terminated paths that outlive the call; no data argument.
    rc(unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) })
}

/// `mount -t tmpfs tmpfs dst`: 0 or the errno.
fn tmpfs_mount(dst: &str) -> i32 {
    let (tmpfs, dst) = (c("tmpfs"), c(dst));
    // SAFETY: as above.
    rc(unsafe { libc::mount(tmpfs.as_ptr(), dst.as_ptr(), tmpfs.as_ptr(), 0, std::ptr::null()) })
}

/// Lazily unmounts `dst` (best effort).
fn unmount(dst: &str) {
    let dst = c(dst);
    // SAFETY: as above.
    unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
}

fn chroot(dir: &str) -> i32 {
    let dir = c(dir);
    // SAFETY: as above.
    rc(unsafe { libc::chroot(dir.as_ptr()) })
}

/// A private mount namespace for the calling process: 0 or the errno.
fn unshare_mounts() -> i32 {
    // SAFETY: a flag-only syscall.
    rc(unsafe { libc::unshare(libc::CLONE_NEWNS) })
}

#[test]
fn mounts_and_chroot_need_the_policy_and_cannot_unveil_a_denied_file() {
    file_fixture();
    let view = format!("{FILES}/view");
    fs::create_dir_all(&view).unwrap();
    let workload = TestCgroup::new("mediation-mounts");
    let dirs = AgentDirs::new("mediation-mounts", &file_policy("mounts-policy", &workload, ""));
    let agent = Agent::start(&dirs, "detach");
    let (secrets, target) = (format!("{FILES}/secrets"), view.clone());
    let refused = run_in(Some(&workload), || {
        let got = [
            bind_mount(&secrets, &target),
            tmpfs_mount(&target),
            chroot(&secrets),
            // A private mount namespace does not help: its mounts are judged the same.
            unshare_mounts(),
            tmpfs_mount(&target),
        ];
        first_mismatch(&got, &[EPERM, EPERM, EPERM, 0, EPERM])
    });
    assert_eq!(refused, 0, "step {refused} (10 bind, 11 tmpfs, 12 chroot, 13 unshare, 14 mount in new ns)");
    let r = verdict(&agent, "mount", "restricted", |t| field(t, "name") == secrets);
    assert_eq!(field(&r, "decision"), "deny");
    assert_eq!(r["target"]["flags"], libc::MS_BIND, "{r}");
    verdict(&agent, "chroot", "restricted", named("secrets"));

    // With mounts allowed, a bind mount and a chroot still reach nothing denied.
    reapply(&agent, &dirs, &file_policy("mounts-policy", &workload, "  allowMounts: true\n"));
    let view_file = format!("{view}/a");
    let aliased = run_in(Some(&workload), || {
        let bind = bind_mount(&secrets, &target);
        let through_bind = open_errno(&view_file, O_RDONLY);
        unmount(&target);
        let chroot = chroot(&secrets);
        let inside = open_errno("/a", O_RDONLY);
        first_mismatch(&[bind, through_bind, chroot, inside], &[0, EPERM, 0, EPERM])
    });
    assert_eq!(
        aliased, 0,
        "step {aliased} (10 bind allowed, 11 open through it, 12 chroot allowed, 13 open inside)"
    );
    let r = verdict(&agent, "file_open", "rule", |t| field(t, "path") == view_file);
    assert_eq!(field(&r, "rule"), "file[0]", "{r}");
    verdict(&agent, "file_open", "rule", |t| field(t, "path") == "/a");
}

const BINS: &str = "/tmp/mediation/bin";

fn exec_policy(name: &str, cgroup: &TestCgroup, extra: &str) -> String {
    policy(
        name,
        cgroup,
        &format!(
            "{extra}  exec:\n    - dir: {BINS}/denied\n      action: deny\n    - path: {BINS}/single/prog\n      action: deny\n"
        ),
    )
}

/// Copies busybox into a memfd and `fexecve`s it as `true`: the errno, or the exit status
/// of the child that ran it.
fn memfd_exec() -> i32 {
    let Ok(body) = fs::read(tool("/tmp/mediation", "memfd-source")) else { return 255 };
    // SAFETY: a new anonymous file; written, then executed in a child.
    // SAFETY: a new anonymous file; written, then executed in a child.
    let fd = unsafe { libc::memfd_create(c("payload").as_ptr(), 0) };
    if fd < 0 {
        return 254;
    }
    // SAFETY: writing our own buffer to our own descriptor.
    if unsafe { libc::write(fd, body.as_ptr().cast(), body.len()) } < 0 {
        return 253;
    }
    run_in(None, || {
        let argv = [c("true"), CString::default()];
        let argv = [argv[0].as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        // SAFETY: NUL-terminated argv and envp.
        unsafe { libc::fexecve(fd, argv.as_ptr(), envp.as_ptr()) };
        errno()
    })
}

#[test]
fn every_way_to_run_a_denied_program_is_judged() {
    let _ = fs::remove_dir_all(BINS);
    // A dynamically linked program (the agent binary) in the denied directory; another
    // named by an exact rule, with a hard link to it made elsewhere before the policy was
    // applied. (A link to a file of a denied *directory* is another name outside it, like
    // a copy: see the README's limits.)
    fs::create_dir_all(format!("{BINS}/denied")).unwrap();
    fs::create_dir_all(format!("{BINS}/single")).unwrap();
    fs::create_dir_all(format!("{BINS}/ok")).unwrap();
    let denied = format!("{BINS}/denied/prog");
    fs::copy(std::env::var("ENFORCER_BIN").unwrap_or("/bin/enforcer".into()), &denied).unwrap();
    fs::set_permissions(&denied, fs::Permissions::from_mode(0o755)).unwrap();
    fs::copy(&denied, format!("{BINS}/single/prog")).unwrap();
    fs::hard_link(format!("{BINS}/single/prog"), format!("{BINS}/ok/prog-link")).unwrap();
    let allowed = tool(&format!("{BINS}/ok"), "true");
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-x86-64.so.2"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the dynamic loader");
    let workload = TestCgroup::new("mediation-exec");
    let dirs = AgentDirs::new("mediation-exec", &exec_policy("exec-policy", &workload, ""));
    let agent = Agent::start(&dirs, "detach");
    let (d, link, ok) = (denied.clone(), format!("{BINS}/ok/prog-link"), allowed.clone());
    let outcome = run_in(Some(&workload), || {
        let via_loader = std::process::Command::new(loader)
            .arg(&d)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_or(255, |s| i32::from(!s.success()));
        let got = [
            run_in(None, || enforcer_tests::exec_errno(&d)),
            via_loader,
            map_errno(&d, libc::PROT_READ | libc::PROT_EXEC, 0),
            map_errno(&d, libc::PROT_READ, libc::PROT_READ | libc::PROT_EXEC),
            run_in(None, || enforcer_tests::exec_errno(&link)),
            memfd_exec(),
            // Allowed: a program elsewhere, and mapping it executable.
            run_in(None, || enforcer_tests::exec_errno(&ok)),
            map_errno(&ok, libc::PROT_READ | libc::PROT_EXEC, 0),
            map_errno(&ok, libc::PROT_READ, libc::PROT_READ | libc::PROT_EXEC),
        ];
        first_mismatch(&got, &[EPERM, 1, EPERM, EPERM, EPERM, EPERM, 0, 0, 0])
    });
    assert_eq!(
        outcome, 0,
        "step {outcome} (10 execve, 11 through ld.so, 12 mmap exec, 13 mprotect exec, 14 hard link, 15 memfd; \
         16.. allowed)"
    );
    let r = verdict(&agent, "mmap_exec", "rule", |t| field(t, "path") == denied);
    assert_eq!(field(&r, "rule"), "exec[0]", "{r}");
    assert_eq!(r["target"]["access"][0], "exec", "{r}");
    verdict(&agent, "mprotect_exec", "rule", named("prog"));
    let r = verdict(&agent, "exec", "rule", |t| field(t, "path") == link);
    assert_eq!(field(&r, "rule"), "exec[1]", "matched by the file's identity: {r}");
    let r = verdict(&agent, "exec", "restricted", |t| field(t, "path").starts_with("/memfd:payload"));
    assert_eq!(field(&r, "decision"), "deny");

    // Allowed by the policy: a memfd program runs.
    reapply(&agent, &dirs, &exec_policy("exec-policy", &workload, "  allowFilelessExec: true\n"));
    assert_eq!(run_in(Some(&workload), memfd_exec), 0, "allowFilelessExec lets a memfd program run");
}

/// `socket(family, type, protocol)`: 0 if created (and closed), else the errno.
fn socket_errno(family: i32, kind: i32, protocol: i32) -> i32 {
    // SAFETY: plain syscall; the descriptor is closed at once.
    let fd = unsafe { libc::socket(family, kind, protocol) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    0
}

#[test]
fn raw_packet_and_icmp_sockets_need_the_policy() {
    let workload = TestCgroup::new("mediation-sockets");
    let body = "  network:\n    - cidr: 127.0.0.0/8\n      action: deny\n";
    let dirs = AgentDirs::new("mediation-sockets", &policy("sockets-policy", &workload, body));
    let agent = Agent::start(&dirs, "detach");
    let attempts = || {
        [
            socket_errno(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            socket_errno(libc::AF_INET6, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMPV6),
            socket_errno(libc::AF_PACKET, libc::SOCK_RAW, 0),
            socket_errno(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            socket_errno(libc::AF_INET, libc::SOCK_STREAM, 0),
            socket_errno(libc::AF_INET, libc::SOCK_DGRAM, 0),
        ]
    };
    // Ping sockets need the group range. Outside any identity nothing is refused by the
    // enforcer (a family this kernel lacks fails with its own errno, never EPERM).
    fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
    let outside = attempts();
    assert!(!outside.contains(&EPERM), "unmanaged root is never refused: {outside:?}");
    let inside = run_in(Some(&workload), || first_mismatch(&attempts(), &[EPERM, EPERM, EPERM, EPERM, 0, 0]));
    assert_eq!(
        inside, 0,
        "step {inside} (10 raw icmp, 11 raw icmpv6, 12 packet, 13 ping; 14.. tcp/udp allowed)"
    );
    let r = verdict(&agent, "socket_create", "restricted", |t| field(t, "family") == "packet");
    assert_eq!(field(&r, "decision"), "deny");
    let r = verdict(&agent, "socket_create", "restricted", |t| field(t, "type") == "dgram");
    assert_eq!(r["target"]["protocol"], libc::IPPROTO_ICMP, "{r}");

    reapply(&agent, &dirs, &policy("sockets-policy", &workload, &format!("  allowRawSockets: true\n{body}")));
    let allowed = run_in(Some(&workload), || i32::from(attempts().contains(&EPERM)));
    assert_eq!(allowed, 0, "allowRawSockets lets the identity create them all");
}

#[test]
fn rules_by_identity_follow_the_file_not_the_name() {
    // A file named by an exact rule keeps its rule when renamed by someone else (the
    // kernel matches its identity), and a path rule still covers whatever is at the path.
    file_fixture();
    let workload = TestCgroup::new("mediation-identity");
    let dirs = AgentDirs::new("mediation-identity", &file_policy("identity-policy", &workload, ""));
    let agent = Agent::start(&dirs, "detach");
    fs::rename(format!("{FILES}/key"), format!("{FILES}/public/renamed-key")).unwrap();
    write_file(&format!("{FILES}/key"), "new");
    let outcome = run_in(Some(&workload), || {
        let got = [
            open_errno(&format!("{FILES}/public/renamed-key"), O_RDONLY),
            open_errno(&format!("{FILES}/key"), O_RDONLY),
            open_errno(&format!("{FILES}/public/p"), O_RDONLY),
        ];
        first_mismatch(&got, &[EPERM, EPERM, 0])
    });
    assert_eq!(outcome, 0, "step {outcome} (10 renamed file, 11 new file at the path, 12 public)");
    let r = verdict(&agent, "file_open", "rule", |t| field(t, "path").ends_with("renamed-key"));
    assert_eq!(field(&r, "rule"), "file[1]");
}

#[test]
fn connecting_to_a_unix_socket_is_judged_as_a_write_to_its_path() {
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    let base = "/tmp/mediation/sockets";
    let _ = fs::remove_dir_all(base);
    for dir in ["denied", "open"] {
        fs::create_dir_all(format!("{base}/{dir}")).unwrap();
    }
    let _denied = UnixListener::bind(format!("{base}/denied/s")).unwrap();
    let _open = UnixListener::bind(format!("{base}/open/s")).unwrap();
    let _datagrams = UnixDatagram::bind(format!("{base}/denied/d")).unwrap();
    let workload = TestCgroup::new("mediation-unix");
    let body = format!("  file:\n    - dir: {base}/denied\n      access: [write]\n      action: deny\n");
    let dirs = AgentDirs::new("mediation-unix", &policy("unix-policy", &workload, &body));
    let agent = Agent::start(&dirs, "detach");
    let outcome = run_in(Some(&workload), || {
        let os_errno = |r: std::io::Result<()>| r.err().map_or(0, |e| e.raw_os_error().unwrap_or(255));
        let got = [
            os_errno(UnixStream::connect(format!("{base}/denied/s")).map(drop)),
            os_errno(
                UnixDatagram::unbound().and_then(|u| u.send_to(b"x", format!("{base}/denied/d"))).map(drop),
            ),
            os_errno(UnixStream::connect(format!("{base}/open/s")).map(drop)),
        ];
        first_mismatch(&got, &[EPERM, EPERM, 0])
    });
    assert_eq!(outcome, 0, "step {outcome} (10 stream connect, 11 datagram send, 12 allowed socket)");
    let r = verdict(&agent, "unix_connect", "rule", named("s"));
    assert_eq!(field(&r, "rule"), "file[0]", "{r}");
    assert_eq!(r["target"]["access"][0], "write", "{r}");
    verdict(&agent, "unix_send", "rule", named("d"));
}

/// `bind(addr)` of a TCP (`stream`) or UDP socket: 0 or the errno.
fn bind_errno(addr: &str, stream: bool) -> i32 {
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    let result = if stream {
        std::net::TcpListener::bind(addr).map(drop)
    } else {
        std::net::UdpSocket::bind(addr).map(drop)
    };
    result.err().map_or(0, |e| e.raw_os_error().unwrap_or(255))
}

#[test]
fn binding_a_port_is_judged_by_listen_rules() {
    let workload = TestCgroup::new("mediation-listen");
    let body = "  listen:\n    - ports: 18000-18100\n      protocol: tcp\n      action: deny\n    - ports: 18200\n      action: allow\n  defaults:\n    listen: allow\n";
    let dirs = AgentDirs::new("mediation-listen", &policy("listen-policy", &workload, body));
    let agent = Agent::start(&dirs, "detach");
    let outcome = run_in(Some(&workload), || {
        let got = [
            bind_errno("127.0.0.1:18080", true),
            bind_errno("0.0.0.0:18081", true),
            bind_errno("[::1]:18082", true),
            // UDP is not named by the TCP rule; other ports fall to the default.
            bind_errno("127.0.0.1:18080", false),
            bind_errno("127.0.0.1:18200", true),
            bind_errno("127.0.0.1:18300", true),
        ];
        first_mismatch(&got, &[EPERM, EPERM, EPERM, 0, 0, 0])
    });
    assert_eq!(outcome, 0, "step {outcome} (10 tcp v4, 11 any address, 12 tcp v6; 13.. allowed)");
    let r = verdict(&agent, "bind4", "rule", |t| t["port"] == 18080);
    assert_eq!(field(&r, "rule"), "listen[0]", "{r}");
    assert_eq!(field(&r["target"], "protocol"), "tcp", "{r}");
    let r = verdict(&agent, "bind4", "rule", |t| t["port"] == 18081);
    assert_eq!(field(&r["target"], "address"), "0.0.0.0", "the address as bound: {r}");
    verdict(&agent, "bind6", "rule", |t| t["port"] == 18082);
    // The same binds are not judged outside the identity.
    assert_eq!(bind_errno("127.0.0.1:18090", true), 0);

    // Deny by default, with one port allowed.
    let body = "  listen:\n    - ports: 18200\n      protocol: tcp\n      action: allow\n  defaults:\n    listen: deny\n";
    reapply(&agent, &dirs, &policy("listen-policy", &workload, body));
    let outcome = run_in(Some(&workload), || {
        first_mismatch(
            &[bind_errno("127.0.0.1:18200", true), bind_errno("127.0.0.1:18201", true)],
            &[0, EPERM],
        )
    });
    assert_eq!(outcome, 0, "step {outcome} (10 the allowed port, 11 another)");
    let r = verdict(&agent, "bind4", "default", |t| t["port"] == 18201);
    assert_eq!(field(&r, "rule"), "default", "{r}");
}
