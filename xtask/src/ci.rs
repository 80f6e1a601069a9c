//! What the README's test command runs: every check, in order, stopping at the first failure.

use std::process::Command;

use crate::{
    build::{exec, workspace_root},
    vm,
};

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let cargo = || {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root);
        cmd
    };
    eprintln!("ci: cargo fmt --check");
    exec(cargo().args(["fmt", "--all", "--check"]))?;
    eprintln!("ci: clippy, host crates (warnings are errors)");
    exec(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "enforcer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    eprintln!("ci: clippy, kernel programs (bpfel target)");
    exec(cargo().env("RUSTC_BOOTSTRAP", "1").args([
        "clippy",
        "--package",
        "enforcer-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    eprintln!("ci: unit tests");
    exec(cargo().args(["test", "--workspace", "--exclude", "enforcer-ebpf", "--exclude", "enforcer-tests"]))?;
    eprintln!("ci: VM tests");
    vm::run_all(None)
}
