//! `cargo xtask test`: install the tools, then run every check CI runs, in
//! order from fastest to slowest so a mistake shows early.

use crate::{
    tools::{CARGO_MACHETE, Tool, Tools},
    workspace,
};
use anyhow::Context;
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
    /// `cargo machete`: no dependency that a crate never uses
    Machete,
    /// `buf lint` on the proto contract
    BufLint,
    /// `buf breaking` against the last committed contract
    BufBreaking,
    /// every workspace test, and each criterion benchmark once
    Cargo,
    /// bounded fuzzing of request validation, query parsing and catalog loading
    Fuzz,
    /// the release build the Dockerfiles run (no Docker engine needed)
    Release,
    /// Dockerfiles, manifests, the mesh and their cross-checks (tests/deploy)
    Deploy,
    /// rolling restarts and kills behind a real Envoy (tests/reliability)
    Reliability,
    /// dashboards and alerts against a real Prometheus, traces in a real Jaeger
    Observability,
    /// the page in a headless Chromium at phone and desktop widths (tests/ui)
    Ui,
    /// each overlay applied to a real control plane with istiod (tests/cluster)
    Cluster,
    /// the mesh's cases on dev's and prod's pods, configured by that istiod and identified by
    /// its CA (tests/cluster, `mesh` marker), and the loopback harness (tests/mesh)
    Mesh,
    /// a short `cargo xtask bench`, so the command cannot rot
    Bench,
    /// a short `cargo xtask soak`
    Soak,
}

const PROMETHEUS: Tool = Tool::Debian("promtool", "prometheus");
/// A throwaway certificate stands in for prod's TLS Secret in the mesh analysis.
const OPENSSL: Tool = Tool::Debian("openssl", "openssl");
const CHROMIUM: Tool = Tool::Debian("chromium", "chromium");
const CHROMEDRIVER: Tool = Tool::Debian("chromedriver", "chromium-driver");

impl Step {
    fn tools(self) -> &'static [Tool] {
        match self {
            // The fuzz step installs cargo-fuzz itself, once nightly is there to run it.
            Step::Fmt | Step::Clippy | Step::Cargo | Step::Release | Step::Fuzz | Step::Soak => &[],
            Step::Machete => &[CARGO_MACHETE],
            Step::BufLint | Step::BufBreaking => &[Tool::Buf],
            Step::Deploy => &[Tool::Python, PROMETHEUS, OPENSSL, Tool::Istioctl],
            Step::Observability => &[Tool::Python, PROMETHEUS, Tool::Istioctl, Tool::Jaeger],
            Step::Ui => &[Tool::Python, CHROMIUM, CHROMEDRIVER],
            Step::Mesh | Step::Cluster => crate::cluster::TOOLS,
            // istioctl and mesh-xds: the recommendations cluster is Istio's own translation.
            Step::Reliability => &[Tool::Python, Tool::Istioctl],
            Step::Bench => crate::bench::TOOLS,
        }
    }
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let mut steps = args.steps;
    if steps.is_empty() {
        steps = Step::value_variants().to_vec();
    }
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    let mut timings = Vec::new();
    for step in steps {
        eprintln!("xtask: ── {step:?} ──");
        let start = Instant::now();
        let installed = tools.ensure(step.tools());
        installed.with_context(|| format!("cannot install what step {step:?} needs"))?;
        run_step(step, &tools, &target_dir).with_context(|| format!("step {step:?} failed"))?;
        timings.push((step, start.elapsed()));
    }
    for (step, elapsed) in timings {
        eprintln!("xtask: {step:?} ok in {elapsed:.1?}");
    }
    Ok(())
}

fn run_step(step: Step, tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    let cargo = |args: &[&str]| workspace::run(workspace::cargo().args(args));
    match step {
        Step::Fmt => cargo(&["fmt", "--all", "--", "--check"]),
        Step::Clippy => cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
        // The target dir may sit in the checkout: its crates are not ours.
        Step::Machete => workspace::run(tools.command("cargo-machete")?.arg("--skip-target-dir")),
        Step::BufLint => workspace::run(tools.command("buf")?.args(["lint", "proto"])),
        Step::BufBreaking => buf_breaking(tools),
        // Each criterion benchmark runs once, unoptimised: it still runs.
        Step::Cargo => cargo(&["test", "--workspace", "--locked"])
            .and_then(|()| cargo(&["test", "--workspace", "--locked", "--benches"])),
        Step::Release => workspace::build_release(),
        Step::Fuzz => crate::fuzz::test(tools, target_dir),
        Step::Bench => crate::bench::test(tools, target_dir),
        Step::Soak => crate::soak::test(tools, target_dir),
        Step::Cluster => crate::cluster::test(tools, target_dir, "not mesh"),
        Step::Deploy | Step::Mesh | Step::Reliability | Step::Observability | Step::Ui => {
            // Each of these runs the pytest suite of its name.
            let suite = format!("tests/{step:?}").to_lowercase();
            cargo(&["build", "--locked", "--bins"])?;
            let mut pytest = tools.command("python")?;
            pytest
                .args(["-m", "pytest", &suite, "-q"])
                .env("BOOKSHOP_BIN_DIR", target_dir.join("debug"))
                .env("BOOKSHOP_ARTIFACTS_DIR", target_dir.join("artifacts"));
            if step.tools().contains(&Tool::Istioctl) {
                // Istio's CRDs and metric names, at the version istioctl is built from.
                let istio = tools.go_module("istio", "istio.io/istio")?;
                let crds = istio.join("manifests/charts/base/files/crd-all.gen.yaml");
                pytest
                    .env("BOOKSHOP_ISTIO_CRDS", crds)
                    .env("BOOKSHOP_ISTIO_MODULE", istio);
            }
            if step == Step::Deploy {
                // The Prometheus Operator's CRDs, at the version tools/prometheus-operator pins,
                // and the Gateway API's of the version the pinned Istio requires.
                let module = "github.com/prometheus-operator/prometheus-operator";
                let operator = tools.go_module("prometheus-operator", module)?;
                let crds = operator.join("example/prometheus-operator-crd");
                pytest.env("BOOKSHOP_PROMETHEUS_OPERATOR_CRDS", crds);
                pytest.env("BOOKSHOP_GATEWAY_API_CRDS", tools.gateway_api_crds()?);
            }
            workspace::run(&mut pytest)?;
            if step == Step::Mesh {
                crate::cluster::test(tools, target_dir, "mesh")?;
            }
            Ok(())
        }
    }
}

/// The contract: the proto files and buf's configuration (not the crate's Rust).
const CONTRACT: &[&str] = &["proto/buf.yaml", ":(glob)proto/**/*.proto"];

/// Compares the contract with `main`'s when ours differs, else with the one before `main`'s
/// newest change to it (HEAD~1 would miss an older change). Passes for a single version.
fn buf_breaking(tools: &Tools) -> anyhow::Result<()> {
    if git(&["rev-parse", "--is-shallow-repository"])? == "true" {
        eprintln!("xtask: this clone is shallow; fetching the history of `origin`");
        git(&["fetch", "--quiet", "--unshallow", "origin"]).context(
            "this clone is shallow, so the contract's previous version is missing, and fetching it failed: run `git fetch --unshallow origin main` (CI: check out with full history)",
        )?;
    }
    let verify = |rev: &str| git(&["rev-parse", "--verify", "--quiet", rev]).ok();
    let mut branches = ["main", "origin/main"].into_iter();
    let main = branches.find(|branch| verify(&format!("{branch}^{{commit}}")).is_some());
    let main = main.context(
        "no `main` or `origin/main` to compare the contract with: run `git fetch origin main`",
    )?;
    let changed = |args: &[&str]| -> anyhow::Result<bool> {
        Ok(!git(&[args, &["--"], CONTRACT].concat())?.is_empty())
    };
    let single_version = |why: String| {
        eprintln!("xtask: pass: the contract has a single version ({why}): nothing to compare");
        Ok(())
    };
    let base = if changed(&["diff", "--name-only", main])?
        || changed(&["ls-files", "--others", "--exclude-standard"])?
    {
        git(&["rev-parse", main])?
    } else {
        let last_change = git(&[&["log", "-1", "--format=%H", main, "--"], CONTRACT].concat())?;
        match verify(&format!("{last_change}^")) {
            Some(parent) => parent,
            None => return single_version(format!("{last_change}, the first commit")),
        }
    };
    if git(&["ls-tree", "--name-only", &base, "proto/buf.yaml"])?.is_empty() {
        return single_version(format!("{base} has none yet"));
    }
    eprintln!("xtask: comparing the contract with commit {base}");
    let against = format!(".git#ref={base},subdir=proto");
    let mut buf = tools.command("buf")?;
    workspace::run(buf.args(["breaking", "proto", "--against", &against]))
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    workspace::stdout(
        Command::new("git")
            .args(args)
            .current_dir(workspace::root()),
    )
}
