//! `cargo xtask bench`: the real-time decisioning figures, measured inside a VM (the
//! host kernel cannot load BPF LSM programs). Under emulation only the ratios and the
//! counts (allowed syscalls after a change) carry over to a native kernel.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{
    build::{self, exec, workspace_root},
    vm,
};

const INIT_BENCH: &str = r#"
ENFORCER_BIN=/bin/enforcer /bench
echo "ENFORCER-VM done"
poweroff -f
"#;

pub fn run(series: &str) -> anyhow::Result<()> {
    let agent = build::agent()?;
    exec(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--release",
        "--package",
        "enforcer-tests",
        "--bin",
        "bench",
    ]))
    .context("building the bench")?;
    let bench = workspace_root().join("target/release/bench");
    let lines = vm::guest("bench", &agent, INIT_BENCH, &[(bench, "bench".to_owned())], series)?;
    if !lines.iter().any(|l| l.starts_with("open()+close()")) {
        bail!("the bench did not complete (see target/vm/bench.log)");
    }
    Ok(())
}
