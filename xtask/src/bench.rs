//! `cargo xtask bench`: the performance figures, each printed with its target.
//!
//! - **native** (`[native]`): on this machine's own kernel, which cannot load BPF LSM
//!   programs: the agent runs with `--network-only` on a cgroup created for the run and
//!   the network hooks are measured with BPF statistics next to an empty program, with
//!   the flood, policy swaps, memory and API figures.
//! - **emulated** (`[emulated]`): inside a QEMU/TCG VM for the LSM hooks. Only ratios
//!   measured in the same run carry over to a native kernel.

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

fn build_bench(bin: &str) -> anyhow::Result<std::path::PathBuf> {
    exec(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--release",
        "--package",
        "enforcer-tests",
        "--bin",
        bin,
    ]))
    .with_context(|| format!("building {bin}"))?;
    Ok(crate::build::cargo_target_dir().join("release").join(bin))
}

/// One half of the figures, for `--only`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Half {
    Native,
    Emulated,
}

pub fn run(series: &str, only: Option<Half>) -> anyhow::Result<()> {
    let agent = build::agent()?;
    if only != Some(Half::Emulated) {
        let native = build_bench("bench-native")?;
        exec(Command::new(&native).env("ENFORCER_BIN", &agent)).context("the native bench")?;
    }
    if only == Some(Half::Native) {
        return Ok(());
    }
    let bench = build_bench("bench")?;
    let lines = vm::guest("bench", &agent, INIT_BENCH, &[(bench, "bench".to_owned())], series)?;
    if !lines.iter().any(|l| l.contains("open()+close()")) {
        bail!("the bench did not complete (see target/vm/bench.log)");
    }
    Ok(())
}
