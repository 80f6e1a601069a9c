//! The open cache: a managed open (or exec) of a file opened (or executed) before is
//! judged from the rule findings cached for it, and every change that could make the same
//! file stand for another path or another rule sends the next one through the full
//! judgement. Each step opens or executes a file (so its findings are cached), changes
//! what its name or rules mean, and tries it again as root inside the workload: the
//! second try is refused, with a verdict naming the rule.

use std::{ffi::CString, fs, os::fd::AsRawFd};

use enforcer_tests::{
    Agent, AgentDirs, TestCgroup, exec_errno, field, map_errno, open_errno, policy, run_in, tool, write_file,
};
use libc::{EPERM, O_RDONLY, PROT_EXEC, PROT_READ};
use serde_json::Value;

const C: &str = "/tmp/open-cache";

fn c(path: &str) -> CString {
    CString::new(path).expect("path without NUL")
}

fn cache_policy(cgroup: &TestCgroup, extra_rule: &str) -> String {
    policy(
        "open-cache-policy",
        cgroup,
        &format!(
            "  allowMounts: true\n  file:\n    - dir: {C}/secrets\n      action: deny\n    - path: {C}/key\n      action: deny\n    - path: /chrooted-key\n      action: deny\n{extra_rule}"
        ),
    )
}

/// Opens `path` twice in the workload: the errnos (0 or `EPERM`; anything else fails).
fn twice(workload: &TestCgroup, path: &str) -> [i32; 2] {
    let path = path.to_owned();
    let code =
        run_in(Some(workload), move || bits(&[open_errno(&path, O_RDONLY), open_errno(&path, O_RDONLY)]));
    assert!(code < 4, "an open failed otherwise than with EPERM (exit {code})");
    [code >> 1, code & 1]
}

/// Errnos of 0 or `EPERM` (1) as bits, first errno highest: a child's exit code. 99 for
/// any other errno.
fn bits(errnos: &[i32]) -> i32 {
    if errnos.iter().any(|e| *e != 0 && *e != EPERM) {
        return 99;
    }
    errnos.iter().fold(0, |acc, e| acc << 1 | e)
}

/// The latest `file_open` verdict for `path`.
fn verdict_for(agent: &Agent, path: &str) -> Value {
    agent.wait_record(|r| {
        field(r, "type") == "verdict" && field(r, "hook") == "file_open" && r["target"]["path"] == path
    })
}

fn counter(agent: &Agent, name: &str) -> u64 {
    let (code, out, err) = agent.cli(&["status", "--output", "json"]);
    assert_eq!(code, 0, "status: {err}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    status["counters"][name].as_u64().unwrap_or_else(|| panic!("counter {name}: {}", status["counters"]))
}

/// `renameat2(old, new, RENAME_EXCHANGE)`: the two names swap their files.
fn exchange(old: &str, new: &str) {
    let (old, new) = (c(old), c(new));
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            old.as_ptr(),
            libc::AT_FDCWD,
            new.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0, "exchange {old:?} {new:?}: {}", std::io::Error::last_os_error());
}

fn mount(src: &str, dst: &str, fstype: Option<&str>, flags: libc::c_ulong) {
    let (src, dst, fstype) = (c(src), c(dst), fstype.map(c));
    let fstype = fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr());
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fstype, flags, std::ptr::null()) };
    assert_eq!(rc, 0, "mount {dst:?}: {}", std::io::Error::last_os_error());
}

#[test]
fn a_cached_open_is_judged_again_after_every_change_of_its_path_or_rules() {
    let _ = fs::remove_dir_all(C);
    write_file(&format!("{C}/pub/p"), "p");
    write_file(&format!("{C}/pub/d/f"), "f");
    write_file(&format!("{C}/pub/r"), "r");
    write_file(&format!("{C}/key"), "key");
    write_file(&format!("{C}/secrets/a"), "a");
    write_file(&format!("{C}/jail/chrooted-key"), "k");
    for name in ["q", "s", "moved", "xf", "xd/f"] {
        write_file(&format!("{C}/pub/{name}"), name);
    }
    write_file(&format!("{C}/secrets/xf"), "xf");
    write_file(&format!("{C}/other"), "o");
    fs::create_dir_all(format!("{C}/secrets/xd")).unwrap();
    fs::create_dir_all(format!("{C}/pub/mnt")).unwrap();
    fs::create_dir_all(format!("{C}/secrets/mnt")).unwrap();
    let workload = TestCgroup::new("open-cache");
    let dirs = AgentDirs::new("open-cache", &cache_policy(&workload, ""));
    let agent = Agent::start(&dirs, "detach");

    // Repeats: allowed twice, and the second from the cache; denied every time.
    let before = counter(&agent, "open_cache_hits");
    assert_eq!(twice(&workload, &format!("{C}/pub/p")), [0, 0]);
    assert!(counter(&agent, "open_cache_hits") > before, "the second open was judged from the cache");
    assert_eq!(twice(&workload, &format!("{C}/key")), [EPERM, EPERM], "a denied file stays denied");

    // A file renamed elsewhere (an atomic replace of a state file) leaves the entries of
    // the others: they are judged from the cache still. (Two files: one could share the
    // renamed names' bucket of epochs, one in some two thousand.)
    let (q, s) = (format!("{C}/pub/q"), format!("{C}/pub/s"));
    assert_eq!(twice(&workload, &q), [0, 0]);
    assert_eq!(twice(&workload, &s), [0, 0]);
    write_file(&format!("{C}/state.tmp"), "state");
    fs::rename(format!("{C}/state.tmp"), format!("{C}/state")).unwrap();
    let before = counter(&agent, "open_cache_hits");
    let (q2, s2) = (q.clone(), s.clone());
    let code = run_in(Some(&workload), move || bits(&[open_errno(&q2, O_RDONLY), open_errno(&s2, O_RDONLY)]));
    assert_eq!(code, 0, "both opened");
    assert!(
        counter(&agent, "open_cache_hits") > before,
        "an open after another file's rename was judged from the cache"
    );

    // The file itself moved into the denied directory, under the same name.
    assert_eq!(twice(&workload, &format!("{C}/pub/moved")), [0, 0]);
    fs::rename(format!("{C}/pub/moved"), format!("{C}/secrets/moved")).unwrap();
    let moved = format!("{C}/secrets/moved");
    assert_eq!(twice(&workload, &moved), [EPERM, EPERM], "after its own move");
    assert_eq!(verdict_for(&agent, &moved)["rule"], "file[0]");

    // Exchanged with a file of the same name in the denied directory
    // (`RENAME_EXCHANGE`), and a directory above a file exchanged likewise.
    assert_eq!(twice(&workload, &format!("{C}/pub/xf")), [0, 0]);
    exchange(&format!("{C}/pub/xf"), &format!("{C}/secrets/xf"));
    let swapped = format!("{C}/secrets/xf");
    assert_eq!(twice(&workload, &swapped), [EPERM, EPERM], "after the exchange of its name");
    assert_eq!(verdict_for(&agent, &swapped)["rule"], "file[0]");
    assert_eq!(twice(&workload, &format!("{C}/pub/xd/f")), [0, 0]);
    exchange(&format!("{C}/pub/xd"), &format!("{C}/secrets/xd"));
    let swapped = format!("{C}/secrets/xd/f");
    assert_eq!(twice(&workload, &swapped), [EPERM, EPERM], "after the exchange of its directory");
    assert_eq!(verdict_for(&agent, &swapped)["rule"], "file[0]");

    // A directory above the file renamed into the denied directory.
    assert_eq!(twice(&workload, &format!("{C}/pub/d/f")), [0, 0]);
    fs::rename(format!("{C}/pub/d"), format!("{C}/secrets/d")).unwrap();
    let moved = format!("{C}/secrets/d/f");
    assert_eq!(twice(&workload, &moved), [EPERM, EPERM], "after the rename of its directory");
    assert_eq!(verdict_for(&agent, &moved)["rule"], "file[0]");

    // The mount the file lives on moved under the denied directory: only the path shows
    // it (the walk by identity stays inside the mounted filesystem).
    mount("tmpfs", &format!("{C}/pub/mnt"), Some("tmpfs"), 0);
    write_file(&format!("{C}/pub/mnt/f"), "f");
    assert_eq!(twice(&workload, &format!("{C}/pub/mnt/f")), [0, 0]);
    mount(&format!("{C}/pub/mnt"), &format!("{C}/secrets/mnt"), None, libc::MS_MOVE);
    let remounted = format!("{C}/secrets/mnt/f");
    let got = twice(&workload, &remounted);
    // SAFETY: a NUL-terminated path; lazy detach.
    unsafe { libc::umount2(c(&format!("{C}/secrets/mnt")).as_ptr(), libc::MNT_DETACH) };
    assert_eq!(got, [EPERM, EPERM], "after the move of its mount");
    assert_eq!(verdict_for(&agent, &remounted)["rule"], "file[0]");

    // The name removed and given to the denied file: the kernel can reuse the same
    // dentry for the new link.
    assert_eq!(twice(&workload, &format!("{C}/pub/r")), [0, 0]);
    fs::remove_file(format!("{C}/pub/r")).unwrap();
    fs::hard_link(format!("{C}/key"), format!("{C}/pub/r")).unwrap();
    assert_eq!(twice(&workload, &format!("{C}/pub/r")), [EPERM, EPERM], "the name now links the denied file");
    assert_eq!(
        verdict_for(&agent, &format!("{C}/pub/r"))["rule"],
        "file[1]",
        "matched by the file's identity"
    );

    // Another file renamed over the denied name, in the same directory: a new name and
    // file for the cached dentry, denied by its path.
    assert_eq!(twice(&workload, &format!("{C}/other")), [0, 0]);
    fs::rename(format!("{C}/other"), format!("{C}/key")).unwrap();
    assert_eq!(twice(&workload, &format!("{C}/key")), [EPERM, EPERM], "renamed over the denied name");
    assert_eq!(verdict_for(&agent, &format!("{C}/key"))["rule"], "file[1]");

    // A chroot: the same file is shown by another path, which a rule denies.
    let jail = format!("{C}/jail");
    let inside = run_in(Some(&workload), move || {
        let before = open_errno(&format!("{jail}/chrooted-key"), O_RDONLY);
        let again = open_errno(&format!("{jail}/chrooted-key"), O_RDONLY);
        let jail = c(&jail);
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::chroot(jail.as_ptr()) } != 0 {
            return 99;
        }
        let after = open_errno("/chrooted-key", O_RDONLY);
        bits(&[before, again, after])
    });
    assert_eq!(inside, 1, "allowed twice before the chroot, denied after it (bits: before, again, after)");
    assert_eq!(verdict_for(&agent, "/chrooted-key")["rule"], "file[2]");

    // A new policy set denying the file.
    assert_eq!(twice(&workload, &format!("{C}/pub/p")), [0, 0]);
    dirs.set_policy(&cache_policy(&workload, &format!("    - path: {C}/pub/p\n      action: deny\n")));
    agent.reload();
    agent.wait_record(|r| field(r, "type") == "policy" && r["generation"] == 2);
    assert_eq!(twice(&workload, &format!("{C}/pub/p")), [EPERM, EPERM], "after the policy change");
    assert_eq!(verdict_for(&agent, &format!("{C}/pub/p"))["rule"], "file[3]");
}

const X: &str = "/tmp/exec-cache";

fn exec_cache_policy(cgroup: &TestCgroup, extra_rule: &str) -> String {
    policy(
        "exec-cache-policy",
        cgroup,
        &format!(
            "  exec:\n    - dir: {X}/denied\n      action: deny\n    - path: {X}/read-only/true\n      action: deny\n{extra_rule}  file:\n    - path: {X}/unreadable/true\n      action: deny\n"
        ),
    )
}

/// Executes `path` twice in the workload, each in a child of its own: the errnos (0 or
/// `EPERM`; anything else fails).
fn exec_twice(workload: &TestCgroup, path: &str) -> [i32; 2] {
    let path = path.to_owned();
    let code = run_in(Some(workload), move || {
        bits(&[run_in(None, || exec_errno(&path)), run_in(None, || exec_errno(&path))])
    });
    assert!(code < 4, "an exec failed otherwise than with EPERM (exit {code})");
    [code >> 1, code & 1]
}

/// `execveat(fd, "", AT_EMPTY_PATH)` in a child: 0 if the program ran, else the errno.
fn fd_exec_errno(fd: i32) -> i32 {
    run_in(None, || {
        let (empty, name) = (c(""), c("true"));
        // Busybox picks its applet by `argv[0]`.
        let argv = [name.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: NUL-terminated argv and envp of valid C strings.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        std::io::Error::last_os_error().raw_os_error().unwrap_or(255)
    })
}

fn exec_verdict(agent: &Agent, what: impl Fn(&Value) -> bool) -> Value {
    agent.wait_record(|r| field(r, "type") == "verdict" && field(r, "hook") == "exec" && what(r))
}

#[test]
fn a_cached_exec_is_judged_again_after_every_change_of_its_path_or_rules() {
    let _ = fs::remove_dir_all(X);
    let program = tool(&format!("{X}/bin"), "true");
    // Busybox runs as the applet its file is named after: every program is a `true`.
    let read_only = tool(&format!("{X}/read-only"), "true");
    let unreadable = tool(&format!("{X}/unreadable"), "true");
    let moving = tool(&format!("{X}/bin/d"), "true");
    let own = tool(&format!("{X}/own"), "true");
    let gone = tool(&format!("{X}/gone"), "true");
    fs::create_dir_all(format!("{X}/denied")).unwrap();
    let workload = TestCgroup::new("exec-cache");
    let dirs = AgentDirs::new("exec-cache", &exec_cache_policy(&workload, ""));
    let agent = Agent::start(&dirs, "detach");

    // Repeats: allowed twice, and the second from the cache; denied every time.
    let before = counter(&agent, "exec_cache_hits");
    assert_eq!(exec_twice(&workload, &program), [0, 0]);
    assert!(counter(&agent, "exec_cache_hits") > before, "the second exec was judged from the cache");

    // An open's findings and an exec's are kept apart: a file read (and cached) is still
    // judged by the exec rules.
    assert_eq!(twice(&workload, &read_only), [0, 0], "reading a file only its exec is denied");
    assert_eq!(exec_twice(&workload, &read_only), [EPERM, EPERM], "executing it after reads");
    assert_eq!(exec_verdict(&agent, |r| r["target"]["path"] == read_only.as_str())["rule"], "exec[1]");
    // Running a program reads it: one whose reading is denied is refused at the kernel's
    // own open of it, by the file rule.
    assert_eq!(
        exec_twice(&workload, &unreadable),
        [EPERM, EPERM],
        "executing a file whose reading is denied"
    );
    assert_eq!(verdict_for(&agent, &unreadable)["rule"], "file[0]");

    // A directory above the program renamed into the denied directory.
    assert_eq!(exec_twice(&workload, &moving), [0, 0]);
    fs::rename(format!("{X}/bin/d"), format!("{X}/denied/d")).unwrap();
    let moved = format!("{X}/denied/d/true");
    assert_eq!(exec_twice(&workload, &moved), [EPERM, EPERM], "after the rename of its directory");
    assert_eq!(exec_verdict(&agent, |r| r["target"]["path"] == moved.as_str())["rule"], "exec[0]");

    // The program itself moved into the denied directory, under the same name.
    assert_eq!(exec_twice(&workload, &own), [0, 0]);
    fs::rename(&own, format!("{X}/denied/true")).unwrap();
    let moved = format!("{X}/denied/true");
    assert_eq!(exec_twice(&workload, &moved), [EPERM, EPERM], "after its own move");
    assert_eq!(exec_verdict(&agent, |r| r["target"]["path"] == moved.as_str())["rule"], "exec[0]");

    // Executable mappings: judged by the exec rules, whose findings they share with execs.
    let library = tool(&format!("{X}/lib/d"), "true");
    let map_twice = |path: String| {
        let code = run_in(Some(&workload), move || {
            bits(&[map_errno(&path, PROT_READ | PROT_EXEC, 0), map_errno(&path, PROT_READ | PROT_EXEC, 0)])
        });
        assert!(code < 4, "a mapping failed otherwise than with EPERM (exit {code})");
        [code >> 1, code & 1]
    };
    let before = counter(&agent, "exec_cache_hits");
    assert_eq!(map_twice(library), [0, 0]);
    assert!(counter(&agent, "exec_cache_hits") > before, "the second mapping was judged from the cache");
    fs::rename(format!("{X}/lib/d"), format!("{X}/denied/lib")).unwrap();
    let moved_library = format!("{X}/denied/lib/true");
    assert_eq!(map_twice(moved_library.clone()), [EPERM, EPERM], "after the rename of its directory");
    let r = agent.wait_record(|r| {
        field(r, "type") == "verdict"
            && field(r, "hook") == "mmap_exec"
            && r["target"]["path"] == moved_library
    });
    assert_eq!(r["rule"], "exec[0]");

    // The same file through a descriptor: from the cache while it has a name, a fileless
    // exec once its name is removed.
    let held = fs::File::open(&gone).unwrap();
    let fd = held.as_raw_fd();
    let (name, named) = (gone.clone(), gone.clone());
    let outcome = run_in(Some(&workload), move || {
        let got = [run_in(None, || exec_errno(&name)), fd_exec_errno(fd), fd_exec_errno(fd)];
        if got != [0, 0, 0] {
            return 10;
        }
        if fs::remove_file(&named).is_err() {
            return 11;
        }
        match fd_exec_errno(fd) {
            0 => 12,
            EPERM => 0,
            _ => 13,
        }
    });
    drop(held);
    assert_eq!(
        outcome, 0,
        "10: not allowed while named; 11: unlink failed; 12: ran once unlinked; 13: other errno"
    );
    let r = exec_verdict(&agent, |r| field(r, "reason") == "restricted");
    assert_eq!(r["target"]["path"], format!("{gone} (deleted)"), "{r}");
    assert_eq!(r["errno"], EPERM, "{r}");

    // A quarantine: live state is consulted at every exec.
    assert_eq!(exec_twice(&workload, &program), [0, 0]);
    let (code, _, err) = agent.cli(&["quarantine", "exec-cache-policy", "--reason", "exec cache step"]);
    assert_eq!(code, 0, "quarantine: {err}");
    assert_eq!(exec_twice(&workload, &program), [EPERM, EPERM], "a quarantined identity executes nothing");
    let r = exec_verdict(&agent, |r| {
        field(r, "reason") == "quarantined" && r["target"]["path"] == program.as_str()
    });
    assert_eq!(r["errno"], EPERM, "{r}");
    let (code, _, err) = agent.cli(&["release", "exec-cache-policy"]);
    assert_eq!(code, 0, "release: {err}");
    assert_eq!(exec_twice(&workload, &program), [0, 0], "after the release");

    // A new policy set denying the program.
    dirs.set_policy(&exec_cache_policy(&workload, &format!("    - path: {program}\n      action: deny\n")));
    agent.reload();
    agent.wait_record(|r| field(r, "type") == "policy" && r["generation"] == 2);
    assert_eq!(exec_twice(&workload, &program), [EPERM, EPERM], "after the policy change");
    let r = exec_verdict(&agent, |r| field(r, "reason") == "rule" && r["target"]["path"] == program.as_str());
    assert_eq!(r["rule"], "exec[2]");
}
