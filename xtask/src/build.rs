//! Building the agent and the integration-test binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Root of the workspace (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` (which the Makefile points at a
/// cache shared by the machine's checkouts), else the workspace's `target/`. The VM
/// runs' own files (logs, images, initramfs) stay in the workspace's `target/`.
pub fn cargo_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Runs a command, failing with its name if it does not succeed.
pub fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Builds the `enforcer` binary as it ships (the `dist` profile) and returns its path.
pub fn agent() -> anyhow::Result<PathBuf> {
    exec(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--profile",
        "dist",
        "--package",
        "enforcer-agent",
        "--bin",
        "enforcer",
    ]))?;
    Ok(cargo_target_dir().join("dist/enforcer"))
}

/// Builds the integration tests (release) and returns the test executables.
pub fn integration_tests() -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "test",
            "--release",
            "--package",
            "enforcer-tests",
            "--tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .context("running cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the integration tests failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let mut executables = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_test = message["profile"]["test"].as_bool() == Some(true);
        let is_integration =
            message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        if let (true, true, Some(exe)) = (is_test, is_integration, message["executable"].as_str()) {
            executables.push(PathBuf::from(exe));
        }
    }
    if executables.is_empty() {
        bail!("cargo built no integration test executables for enforcer-tests");
    }
    Ok(executables)
}
