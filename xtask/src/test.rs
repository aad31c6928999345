//! `cargo xtask test`: install the tools, then run every check CI runs, in
//! order from fastest to slowest so a mistake shows early.

use crate::{tools::Tools, workspace};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::{path::Path, process::Command, time::Instant};

#[derive(Args)]
pub struct TestArgs {
    /// Run only these steps (default: all, in this order).
    #[arg(value_enum)]
    steps: Vec<Step>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `cargo fmt --check`
    Fmt,
    /// `cargo clippy --all-targets -- -D warnings`
    Clippy,
    /// `buf lint` on the proto contract
    BufLint,
    /// `buf breaking` against the last committed contract
    BufBreaking,
    /// every workspace test
    Cargo,
    /// the release build the Dockerfiles run (no Docker engine needed)
    Release,
    /// Dockerfiles, manifests and their cross-checks (tests/deploy)
    Deploy,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let steps = if args.steps.is_empty() {
        Step::value_variants().to_vec()
    } else {
        args.steps
    };
    let target_dir = workspace::target_dir()?;
    let tools = Tools::install(&target_dir)?;
    let mut timings = Vec::new();
    for step in steps {
        eprintln!("xtask: ── {step:?} ──");
        let start = Instant::now();
        run_step(step, &tools, &target_dir).with_context(|| format!("step {step:?} failed"))?;
        timings.push((step, start.elapsed()));
    }
    for (step, elapsed) in timings {
        eprintln!("xtask: {step:?} ok in {elapsed:.1?}");
    }
    Ok(())
}

fn run_step(step: Step, tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    let root = workspace::root();
    match step {
        Step::Fmt => workspace::run(workspace::cargo().args(["fmt", "--all", "--", "--check"])),
        Step::Clippy => workspace::run(workspace::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ])),
        Step::BufLint => workspace::run(tools.command("buf")?.args(["lint", "proto"])),
        Step::BufBreaking => buf_breaking(tools),
        Step::Cargo => workspace::run(workspace::cargo().args(["test", "--workspace", "--locked"])),
        Step::Release => workspace::run(workspace::cargo().args([
            "build",
            "--release",
            "--locked",
            "--package",
            "recommendations",
            "--package",
            "marketplace",
        ])),
        Step::Deploy => {
            workspace::run(workspace::cargo().args(["build", "--locked", "--bins"]))?;
            let shared = std::env::var_os("BOOKSHOP_SHARED_DIR")
                .map(Into::into)
                .unwrap_or_else(|| root.join("../shared"));
            workspace::run(
                tools
                    .command("python")?
                    .args(["-m", "pytest", "tests/deploy", "-q"])
                    .env("BOOKSHOP_BIN_DIR", target_dir.join("debug"))
                    .env("BOOKSHOP_SHARED_DIR", shared),
            )
        }
    }
}

/// Compares the contract with the last committed one: with HEAD when proto/
/// has uncommitted changes (a developer's machine), else with HEAD's parent
/// (CI, where the checkout is HEAD itself).
fn buf_breaking(tools: &Tools) -> anyhow::Result<()> {
    let changed = !git(&["status", "--porcelain", "--", "proto"])?.is_empty();
    let base = if changed { "HEAD" } else { "HEAD~1" };
    let Ok(commit) = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{base}^{{commit}}"),
    ]) else {
        eprintln!("xtask: no earlier commit to compare the contract with");
        return Ok(());
    };
    if git(&["ls-tree", "--name-only", &commit, "proto/buf.yaml"])?.is_empty() {
        eprintln!("xtask: {base} has no contract yet; nothing to compare");
        return Ok(());
    }
    let against = format!(".git#ref={commit},subdir=proto");
    workspace::run(
        tools
            .command("buf")?
            .args(["breaking", "proto", "--against", &against]),
    )
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(workspace::root())
        .output()
        .context("cannot run git")?;
    if !output.status.success() {
        bail!("git {} failed", args.join(" "));
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}
