//! The open cache: a managed open of a file opened before is judged from the rule
//! findings cached for it, and every change that could make the same file stand for
//! another path or another rule sends the next open through the full judgement. Each
//! step opens a file (so its findings are cached), changes what its name or rules mean,
//! and opens it again as root inside the workload: the second open is refused, with a
//! verdict naming the rule.

use std::{ffi::CString, fs};

use enforcer_tests::{Agent, AgentDirs, TestCgroup, field, open_errno, policy, run_in, write_file};
use libc::{EPERM, O_RDONLY};
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
