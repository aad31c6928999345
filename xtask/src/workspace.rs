//! Where things are: the workspace root, the cargo target dir, the tools dir,
//! and a way to run a command that says what it runs and fails loudly.

use anyhow::{Context, bail};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory, wherever `CARGO_TARGET_DIR` or config put it.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// The cargo binary that runs this xtask, so the same toolchain builds all.
pub fn cargo() -> Command {
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(root());
    command
}

/// Runs `command`, echoing it first; fails with its exit status.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    eprintln!("xtask: $ {shown}");
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status}) after {:.0?}", start.elapsed());
    }
    Ok(())
}

/// The `--locked` release build of both services that the Dockerfiles run.
pub fn build_release() -> anyhow::Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "--package",
        "recommendations",
        "--package",
        "marketplace",
    ]))
}
