//! `cargo xtask demo`: the example policies enforced on sample workloads — natively when
//! the host kernel has BPF LSM active, otherwise inside a VM with Debian's 6.12 kernel.

use std::{path::PathBuf, process::Command};

use anyhow::bail;

use crate::{
    build::{self, exec, workspace_root},
    vm,
};

/// The demo guest: runs the demo script, then powers off.
const INIT_DEMO: &str = r#"
ENFORCER=/bin/enforcer EXAMPLES=/examples CGROUP_ROOT=/sys/fs/cgroup sh /demo.sh
echo "ENFORCER-VM done"
poweroff -f
"#;

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
    let lines = vm::guest("demo", &agent, INIT_DEMO, &extra, "6.12")?;
    if !lines.iter().any(|l| l == "DEMO OK") {
        bail!("the demo did not complete (see target/vm/demo.log)");
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
