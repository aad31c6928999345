//! `cargo xtask mutants`: mutation testing of the files `.cargo/mutants.toml`
//! names (a test that cannot fail shows up as a survivor), into docs/mutants.md.

use crate::{
    measure,
    tools::{Tool, Tools},
    workspace,
};
use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use std::{fmt::Write as _, fs, path::PathBuf};

const CARGO_MUTANTS: Tool = Tool::Cargo("cargo-mutants", "27.1.0");

#[derive(Args)]
pub struct MutantsArgs {
    /// More `cargo mutants` arguments: `--jobs 4` on a larger machine,
    /// `--shard 1/4`, `-F <regex>` for some mutants only.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    more: Vec<String>,
}

/// Two passes (name, arguments), as every mutant is tested with the same packages: a service's
/// files by its own tests, platform's also by the services' real-server tests (which catch a
/// change to shutdown or readiness), with a build timeout as a mutant there rebuilds both.
const PASSES: [(&str, &[&str]); 2] = [
    ("services", &["--exclude", "platform/**"]),
    (
        "platform",
        &[
            "--exclude",
            "recommendations/**",
            "--exclude",
            "marketplace/**",
            "--test-package",
            "platform,recommendations,marketplace",
            "--build-timeout",
            "300",
        ],
    ),
];

pub fn run(args: MutantsArgs) -> anyhow::Result<()> {
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    tools.ensure(&[CARGO_MUTANTS])?;
    let out = target_dir.join("mutants");
    // cargo-mutants makes its output dir but not the dir above it (a fresh target dir).
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (mut outcome, mut results) = (Ok(()), Vec::new());
    for (pass, pass_args) in PASSES {
        let dir = out.join(pass);
        // Settings come from .cargo/mutants.toml; a line per mutant shows progress. Mutated
        // builds stay out of the shared cache, in one dir for both passes, without debug info.
        let mut mutants = tools.command("cargo-mutants")?;
        mutants
            .args(["mutants", "--caught", "--unviable", "--output"])
            .arg(&dir)
            .args(pass_args)
            .args(&args.more)
            .env("CARGO_TARGET_DIR", out.join("target"))
            .env("CARGO_PROFILE_DEV_DEBUG", "0");
        // A failed pass (a missed mutant) does not stop the next one.
        outcome = outcome.and(workspace::run(&mut mutants));
        results.push(dir.join("mutants.out"));
    }
    let config = fs::read_to_string(workspace::root().join(".cargo/mutants.toml"))?;
    let document = workspace::root().join("docs/mutants.md");
    let command = workspace::command_line();
    match report(&results, &config, &measure::utc_minute(), &command) {
        Ok(report) => {
            fs::write(&document, report)?;
            eprintln!("xtask: result in {}", document.display());
        }
        // cargo-mutants' own error (a failing baseline, say) says more.
        Err(err) => eprintln!("xtask: no result in {}: {err:#}", out.display()),
    }
    // Non-zero when a mutant is missed or times out.
    outcome
}

/// docs/mutants.md from the passes' outputs and the config's excluded (equivalent) mutants.
fn report(results: &[PathBuf], config: &str, date: &str, command: &str) -> anyhow::Result<String> {
    let mut outcomes = Vec::new();
    for dir in results {
        let text = fs::read_to_string(dir.join("outcomes.json"))
            .with_context(|| format!("cannot read {}", dir.display()))?;
        outcomes.push(serde_json::from_str::<Value>(&text)?);
    }
    let count = |key: &str| -> u64 { outcomes.iter().filter_map(|o| o[key].as_u64()).sum() };
    // The passes run one after the other: the run took the sum of their times.
    let minutes: f64 = outcomes.iter().filter_map(elapsed_seconds).sum::<f64>() / 60.0;
    let version = outcomes
        .first()
        .and_then(|o| o["cargo_mutants_version"].as_str());
    let (version, machine) = (version.unwrap_or("?"), measure::machine());
    let (total, caught, missed) = (count("total_mutants"), count("caught"), count("missed"));
    let (timeouts, unviable) = (count("timeout"), count("unviable"));
    let mut md = format!(
        "# Mutation testing\n\n\
         Written by `{command}` ({date} UTC, cargo-mutants {version}, {machine}, {minutes:.0} min) over the files \
         `.cargo/mutants.toml` names: {total} mutants, {caught} caught, {missed} missed, {timeouts} timeouts, {unviable} unviable.\n\n\
         A service's files are tested by its own tests; platform's by its own and both \
         services' (their real servers are what a change to shutdown or readiness breaks).\n"
    );
    for (title, file) in [("Missed", "missed.txt"), ("Timeouts", "timeout.txt")] {
        let lines = results.iter().map(|dir| fs::read_to_string(dir.join(file)));
        let lines: String = lines.map(Result::unwrap_or_default).collect();
        if !lines.trim().is_empty() {
            let _ = write!(md, "\n## {title}\n\n");
            for line in lines.lines() {
                let _ = writeln!(md, "- `{line}`");
            }
        }
    }
    md += "\n## Equivalent mutants\n\nExcluded in `.cargo/mutants.toml`: no test can tell them from the original.\n\n";
    let equivalent = equivalent(config);
    md += if equivalent.is_empty() {
        "None so far.\n"
    } else {
        "| mutants (regex) | why |\n|---|---|\n"
    };
    for (pattern, reason) in equivalent {
        let _ = writeln!(md, "| `{pattern}` | {reason} |");
    }
    Ok(md)
}

/// How long a pass took, from the start and end times in its outcomes.
fn elapsed_seconds(outcome: &Value) -> Option<f64> {
    let time = |key: &str| humantime::parse_rfc3339_weak(outcome[key].as_str()?).ok();
    let took = time("end_time")?.duration_since(time("start_time")?).ok()?;
    Some(took.as_secs_f64())
}

/// The `exclude_re` entries of mutants.toml, each with the comment above it.
fn equivalent(config: &str) -> Vec<(String, String)> {
    let (mut found, mut reason) = (Vec::new(), String::new());
    let block = config
        .split_once("exclude_re = [")
        .map_or("", |(_, rest)| rest);
    for line in block.lines().map(str::trim).take_while(|line| *line != "]") {
        if let Some(comment) = line.strip_prefix('#') {
            reason = format!("{reason} {}", comment.trim()).trim().to_owned();
        } else if let Some(pattern) = line.strip_prefix('"') {
            let pattern = pattern.trim_end_matches(',').trim_end_matches('"');
            found.push((pattern.replace("\\\\", "\\"), std::mem::take(&mut reason)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_mutants_are_read_with_the_comment_above_them() {
        let config = "timeout_multiplier = 3.0\nexclude_re = [\n    # Both branches log the same line;\n    # nothing observable differs.\n    \"replace == with != in log_line\",\n    \"no reason\",\n]\nafter = 1\n";
        assert_eq!(
            equivalent(config),
            [
                (
                    "replace == with != in log_line".to_owned(),
                    "Both branches log the same line; nothing observable differs.".to_owned()
                ),
                ("no reason".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn the_report_counts_outcomes_and_lists_survivors_and_equivalent_mutants() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let passes = [dir.join("services"), dir.join("platform")];
        for pass in &passes {
            fs::create_dir_all(pass).unwrap();
        }
        let outcomes = r#"{"total_mutants": 5, "caught": 3, "missed": 1, "timeout": 1, "unviable": 0, "success": 0, "cargo_mutants_version": "27.1.0", "start_time": "2026-12-07T14:16:39.890275395Z", "end_time": "2026-12-07T14:36:39.890275395Z"}"#;
        fs::write(passes[0].join("outcomes.json"), outcomes).unwrap();
        fs::write(
            passes[0].join("missed.txt"),
            "a.rs:1:1: replace f -> bool with true\n",
        )
        .unwrap();
        fs::write(
            passes[0].join("timeout.txt"),
            "b.rs:2:2: replace g with ()\n",
        )
        .unwrap();
        let outcomes = r#"{"total_mutants": 2, "caught": 1, "missed": 1, "timeout": 0, "unviable": 0, "start_time": "2026-12-07T14:36:40Z", "end_time": "2026-12-07T14:46:40Z"}"#;
        fs::write(passes[1].join("outcomes.json"), outcomes).unwrap();
        fs::write(passes[1].join("missed.txt"), "c.rs:3:3: delete !\n").unwrap();
        let config = "exclude_re = [\n    # Same output.\n    \"h\",\n]\n";
        let report = report(&passes, config, "2026-12-07 06:00", "cargo xtask mutants").unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            report.contains("30 min) over the files"),
            "the passes' times add up: {report}"
        );
        assert!(
            report.contains("7 mutants, 4 caught, 2 missed, 1 timeouts, 0 unviable"),
            "{report}"
        );
        assert!(report.contains(
            "## Missed\n\n- `a.rs:1:1: replace f -> bool with true`\n- `c.rs:3:3: delete !`"
        ));
        assert!(report.contains("## Timeouts\n\n- `b.rs:2:2: replace g with ()`"));
        assert!(report.contains("| `h` | Same output. |"));
    }
}
