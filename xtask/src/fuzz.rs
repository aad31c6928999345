//! The fuzz step of `cargo xtask test`: each cargo-fuzz target of `fuzz/` (a
//! Recommend request, a page's query string, a catalog file) runs for a bounded
//! time from the committed corpus. Without a nightly toolchain the proptest
//! properties of the same inputs run instead; in CI (`CI=true`) that fails.

use crate::{
    tools::{Tool, Tools},
    workspace,
};
use anyhow::{Context, bail, ensure};
use std::{fs, path::Path, process::Command};

/// Installed once a nightly toolchain is there to run it.
const CARGO_FUZZ: Tool = Tool::Cargo("cargo-fuzz", "0.13.2");

/// `fuzz/fuzz_targets/<name>.rs`, corpus in `fuzz/corpus/<name>`.
const TARGETS: [&str; 3] = ["validation", "query", "catalog"];
const SECONDS_PER_TARGET: u32 = 30;
/// One input running longer than this is a hang, reported like a crash.
const INPUT_TIMEOUT_SECONDS: u32 = 10;
/// No AddressSanitizer: our crates forbid `unsafe`, and without it a build takes half the time.
const SANITIZER: &str = "--sanitizer=none";
/// Cases per proptest property when cargo-fuzz cannot run.
const FALLBACK_CASES: &str = "5000";

pub fn test(tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    let mut rustc = Command::new("rustup");
    let version = rustc
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    if !version.is_ok_and(|output| output.status.success()) {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            bail!(
                "no nightly toolchain, which cargo-fuzz needs; CI fuzzes for real: run `rustup toolchain install nightly --profile minimal`"
            );
        }
        eprintln!(
            "xtask: no nightly toolchain (`rustup toolchain list`), which cargo-fuzz needs: running the proptest properties with {FALLBACK_CASES} cases each instead"
        );
        let mut properties = workspace::cargo();
        properties
            .args(["test", "--locked", "--package", "recommendations"])
            .args([
                "--package",
                "marketplace",
                "--test",
                "api",
                "--",
                "properties::",
            ])
            .env("PROPTEST_CASES", FALLBACK_CASES);
        return workspace::run(&mut properties);
    }
    tools.ensure(&[CARGO_FUZZ])?;
    let (cargo_fuzz, builds) = (tools.path("cargo-fuzz")?, target_dir.join("fuzz"));
    let fuzz = |command: &str| {
        let mut fuzz = nightly(&cargo_fuzz);
        fuzz.args(["fuzz", command, SANITIZER, "--target-dir"])
            .arg(&builds);
        fuzz
    };
    workspace::run(&mut fuzz("build"))?;
    for target in TARGETS {
        // New inputs go to a scratch copy (libFuzzer writes to the first directory only).
        let scratch = builds.join("corpus").join(target);
        let created = fs::create_dir_all(&scratch);
        created.with_context(|| format!("cannot create {}", scratch.display()))?;
        let seeds = workspace::root().join("fuzz/corpus").join(target);
        let committed = count_files(&seeds)?;
        ensure!(committed > 0, "{} holds no inputs", seeds.display());
        eprintln!(
            "xtask: fuzzing {target} for {SECONDS_PER_TARGET} s from {committed} committed inputs"
        );
        let mut run = fuzz("run");
        run.arg(target).arg(&scratch).arg(&seeds).arg("--").args([
            format!("-max_total_time={SECONDS_PER_TARGET}"),
            format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
            "-print_final_stats=1".into(),
        ]);
        workspace::run(&mut run).with_context(|| {
            format!(
                "fuzz target {target} failed: its input is in fuzz/artifacts/{target}/ (above); add it to fuzz/corpus/{target}/ and as a regression test"
            )
        })?;
        let (found, scratch) = (count_files(&scratch)?, scratch.display());
        eprintln!("xtask: {target}: no failure; {found} inputs in {scratch}");
    }
    Ok(())
}

/// `program` under nightly: `rustup run` puts nightly's cargo first on PATH for cargo-fuzz.
fn nightly(program: &Path) -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(workspace::root())
        .args(["run", "nightly"])
        .arg(program)
        // The outer (stable) cargo's own variables must not steer the inner one.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        // Fat LTO and one codegen unit would make a build 10 min instead of 6, for 30 s of fuzzing.
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    command
}

fn count_files(dir: &Path) -> anyhow::Result<usize> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    Ok(entries
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().is_file()))
        .count())
}
