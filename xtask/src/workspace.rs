//! Where things are (the workspace root, found at run time so that an xtask
//! binary reused by another clone through a shared target dir works on the
//! tree it is run in; the target dir), and commands that fail loudly.

use anyhow::{Context, ensure};
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Instant,
};

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Finds the workspace around the current directory; the rest here uses it.
pub fn locate() -> anyhow::Result<&'static Path> {
    let mut locate = cargo();
    locate.args(["locate-project", "--workspace", "--message-format", "plain"]);
    let manifest = PathBuf::from(stdout(&mut locate).with_context(|| {
        let here = std::env::current_dir().unwrap_or_default();
        format!("no cargo workspace around {here:?}: run cargo xtask inside the bookshop checkout")
    })?);
    let root = manifest.parent().context("a manifest has a folder")?;
    ensure!(
        root.join("xtask/Cargo.toml").is_file(),
        "{} is not the bookshop workspace (it has no xtask/)",
        root.display()
    );
    Ok(ROOT.get_or_init(|| root.to_path_buf()))
}

pub fn root() -> &'static Path {
    ROOT.get().expect("main locates the workspace first")
}

/// Cargo's target directory, wherever `CARGO_TARGET_DIR` or config put it.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let metadata = stdout(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    let dir = metadata["target_directory"].as_str();
    Ok(PathBuf::from(
        dir.context("cargo metadata has no target_directory")?,
    ))
}

/// The cargo that runs xtask (it sets `CARGO`), so one toolchain builds all, in the workspace.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    if let Some(root) = ROOT.get() {
        command.current_dir(root);
    }
    command
}

const SERVICES: [&str; 4] = ["--package", "recommendations", "--package", "marketplace"];

/// The bookshop's two services, built (debug) for the steps that run them as processes.
pub fn build_services() -> anyhow::Result<()> {
    run(cargo().args(["build", "--locked"]).args(SERVICES))
}

/// The release build of both services that the Dockerfiles run.
pub fn build_release() -> anyhow::Result<()> {
    run(cargo()
        .args(["build", "--release", "--locked"])
        .args(SERVICES))
}

/// What `command` prints, trimmed; fails with what it said on stderr.
pub fn stdout(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output();
    checked(command, output)
}

/// A finished command's stdout, trimmed, if it succeeded.
pub fn checked(
    command: impl std::fmt::Debug,
    output: std::io::Result<std::process::Output>,
) -> anyhow::Result<String> {
    let output = output.with_context(|| format!("cannot start {command:?}"))?;
    let (status, said) = (output.status, String::from_utf8_lossy(&output.stderr));
    ensure!(status.success(), "{command:?} failed ({status}): {said}");
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Runs `command`, echoing it first; fails with its exit status.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    eprintln!("xtask: $ {shown}");
    let start = Instant::now();
    let status = crate::process::status(command);
    let status = status.with_context(|| format!("cannot start {shown}"))?;
    let took = start.elapsed();
    ensure!(
        status.success(),
        "{shown} failed ({status}) after {took:.0?}"
    );
    Ok(())
}

/// The command xtask was run as, as reports name it (`cargo xtask bench --rounds 5`).
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// Runs `future` to its end on a runtime of its own (the commands are sync at the top).
pub fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(future)
}
