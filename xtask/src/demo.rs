//! `cargo xtask demo`: the example policies enforced on sample workloads — natively when
//! the host kernel has BPF LSM active, otherwise inside a VM with Debian's 6.12 kernel.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::bail;

use crate::{
    build::{self, exec, workspace_root},
    kernels,
    vm::{self, Ending},
};

/// The demo guest: runs the demo script, then powers off.
const INIT_DEMO: &str = r#"
ENFORCER=/bin/enforcer EXAMPLES=/examples CGROUP_ROOT=/sys/fs/cgroup sh /demo.sh
echo "ENFORCER-VM done"
poweroff -f
"#;

const MARK: &str = "ENFORCER-VM";

pub fn run() -> anyhow::Result<()> {
    let agent = build::agent()?;
    let root = workspace_root();
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if lsms.trim().split(',').any(|l| l == "bpf") {
        return native(&agent);
    }
    eprintln!("demo: this kernel has no active BPF LSM ({}); running the demo in a VM", lsms.trim());
    let mut extra = vec![(root.join("scripts/demo.sh"), "demo.sh".to_owned())];
    for entry in std::fs::read_dir(root.join("examples"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        extra.push((path, format!("examples/{name}")));
    }
    let initrd = vm::build_initramfs("demo", &agent, &format!("{}{INIT_DEMO}", vm::INIT_PREAMBLE), &extra)?;
    let kernel = kernels::by_name("6.12")?;
    eprintln!("demo: booting Linux {} under QEMU (about a minute)", kernel.package);
    let log = root.join("target/vm/demo.log");
    let (mut ok, mut started) = (false, false);
    let ending = vm::qemu(&kernel, &initrd, "", Duration::from_secs(600), &log, |line| {
        if let Some(at) = line.find(MARK) {
            started = true;
            let rest = &line[at + MARK.len()..];
            if let Some(release) = rest.trim().strip_prefix("kernel=") {
                println!("guest kernel {release}");
            }
            return;
        }
        // Kernel messages start with a bracketed timestamp.
        if started && !line.starts_with('[') {
            println!("{line}");
            ok |= line == "DEMO OK";
        }
    })?;
    if let Ending::TimedOut = ending {
        bail!("the demo VM did not finish within 10 minutes (see {})", log.display());
    }
    if !ok {
        bail!("the demo did not complete (see {})", log.display());
    }
    Ok(())
}

/// Runs the demo script on this machine, in a private network namespace.
fn native(agent: &std::path::Path) -> anyhow::Result<()> {
    let root = workspace_root();
    let cgroup_root = cgroup2_mount().unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
    exec(
        Command::new("unshare")
            .args(["--net", "--", "sh"])
            .arg(root.join("scripts/demo.sh"))
            .env("ENFORCER", agent)
            .env("EXAMPLES", root.join("examples"))
            .env("CGROUP_ROOT", cgroup_root),
    )
}

fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    })
}
