//! `cargo xtask bench`: release builds of both services and of two baselines
//! (crate `bench`: bare tonic, bare axum), load-tested on loopback with
//! h2load in the same run, rounds interleaved, medians reported. Prints one
//! table (and updates BENCHMARKS.md and docs/bench.png) with the budgets
//! marked met or missed. `cargo xtask test bench` runs a short one.

mod load;
mod report;
mod servers;

use crate::{
    benchmarks, procfs,
    tools::{Tool, Tools},
    workspace,
};
use anyhow::{Context, bail, ensure};
use clap::Args;
use load::{Call, Load};
use report::{Report, Sample, Startup};
use servers::{Fleet, PROD, Server, Telemetry, Traces};
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::process::Command;

/// What the `bench` test step needs installed: h2load, binutils' strip and
/// matplotlib (in the Python venv) for the plot.
pub const TOOLS: &[Tool] = &[
    Tool::Debian {
        command: "h2load",
        package: "nghttp2-client",
    },
    Tool::Debian {
        command: "strip",
        package: "binutils",
    },
    Tool::Python,
];

#[derive(Args)]
pub struct BenchArgs {
    /// Interleaved rounds; every figure is the median over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Multiplies every scenario's number of requests.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// The most seconds one scenario may take before the bench fails.
    #[arg(long, default_value_t = 60)]
    bound_seconds: u64,
    /// Leave BENCHMARKS.md and docs/bench.png alone (results stay under the
    /// target dir's bench/).
    #[arg(long)]
    no_update: bool,
}

struct Settings {
    rounds: usize,
    scale: f64,
    bound: Duration,
    startup_runs: usize,
    /// Update BENCHMARKS.md and docs/bench.png.
    update_docs: bool,
    command: String,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.scale > 0.0, "--scale must be positive");
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    tools.ensure(TOOLS)?;
    let mut command = "cargo xtask bench".to_owned();
    for arg in std::env::args().skip(2) {
        command += &format!(" {arg}");
    }
    bench(
        &tools,
        &target_dir,
        &Settings {
            rounds: args.rounds,
            scale: args.scale,
            bound: Duration::from_secs(args.bound_seconds),
            startup_runs: 5,
            update_docs: !args.no_update,
            command,
        },
    )
}

/// The step `cargo xtask test` runs: every scenario, a few thousand requests
/// each, one round; the answers are checked, the budgets only reported.
pub fn test(tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    bench(
        tools,
        target_dir,
        &Settings {
            rounds: 1,
            scale: 0.1,
            bound: Duration::from_secs(60),
            startup_runs: 2,
            update_docs: false,
            command: "cargo xtask test bench".into(),
        },
    )
}

/// The concurrencies of every call.
const CONCURRENCIES: [usize; 3] = [1, 16, 64];

/// Requests per scenario at scale 1: enough for a stable p99 (≥ 100 samples
/// past it) and a second or more of load where the rate is high.
fn requests(call: Call, concurrency: usize) -> usize {
    match (call, concurrency) {
        (Call::Recommend, 1) => 10_000,
        (Call::Recommend, _) => 60_000,
        (Call::Page, 1) => 5_000,
        (Call::Page, _) => 25_000,
    }
}

/// Requests each target gets before the rounds: connections made, caches
/// and allocator pools warm.
const WARMUP_REQUESTS: usize = 2_000;

/// What a row of the table measures: `call` sent to `server` (and through it
/// to the servers it calls); a baseline's figures are what others are divided by.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: &'static str,
    pub call: Call,
    pub baseline: bool,
    pub server: Server,
}

/// The targets the budgets are about.
const GRPC_TARGET: &str = "recommendations: info logs, OTLP 10%";
const PAGE_TARGET: &str = "marketplace → recommendations: info logs, OTLP 10%";

const ALWAYS_SAMPLED: Telemetry = Telemetry {
    rust_log: "info",
    traces: Traces::Exported("parentbased_always_on", "1"),
};
/// Every other info line but no access lines (the gRPC and HTTP trace layers
/// log only those at info).
const NO_ACCESS_LINES: Telemetry = Telemetry {
    rust_log: "info,platform::grpc::trace=warn,platform::http::trace=warn",
    ..PROD
};
const WARN: Telemetry = Telemetry {
    rust_log: "warn",
    traces: Traces::NotExported,
};
/// Every layer and metric, no spans and no access lines: what tracing and
/// logging cost is the difference to the rows above.
const UNTRACED: Telemetry = Telemetry {
    traces: Traces::Off,
    ..WARN
};

fn targets() -> Vec<Target> {
    use {Call::*, Server::*};
    let target = |label, call, baseline, server| Target {
        label,
        call,
        baseline,
        server,
    };
    vec![
        target("bare tonic", Recommend, true, BareTonic),
        target(GRPC_TARGET, Recommend, false, Recommendations(PROD)),
        target(
            "recommendations: info logs, OTLP 100%",
            Recommend,
            false,
            Recommendations(ALWAYS_SAMPLED),
        ),
        target(
            "recommendations: no access lines, OTLP 10%",
            Recommend,
            false,
            Recommendations(NO_ACCESS_LINES),
        ),
        target(
            "recommendations: RUST_LOG=warn, no exporter",
            Recommend,
            false,
            Recommendations(WARN),
        ),
        target(
            "recommendations: RUST_LOG=warn, OTEL_SDK_DISABLED",
            Recommend,
            false,
            Recommendations(UNTRACED),
        ),
        target("bare axum → bare tonic", Page, true, BareChain),
        target(PAGE_TARGET, Page, false, Marketplace(PROD)),
        target(
            "marketplace → recommendations: RUST_LOG=warn, no exporter",
            Page,
            false,
            Marketplace(WARN),
        ),
        target(
            "marketplace → recommendations: RUST_LOG=warn, OTEL_SDK_DISABLED",
            Page,
            false,
            Marketplace(UNTRACED),
        ),
        target("bare axum, fixed list", Page, false, BareAxum),
    ]
}

/// The measured part of a run.
struct Measured {
    samples: Vec<Sample>,
    startups: Vec<Startup>,
    load_before: String,
}

fn bench(tools: &Tools, target_dir: &Path, settings: &Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = target_dir.join("bench");
    let bin_dir = target_dir.join("release");
    build(&bin_dir, &work)?;
    let targets = targets();
    let measured = workspace::block_on(async {
        let load_before = procfs::load_average();
        let servers: Vec<Server> = targets.iter().map(|target| target.server).collect();
        let mut fleet = Fleet::start(&bin_dir, &servers).await?;
        let startups = vec![
            startup(&fleet, "recommendations", settings.startup_runs, &[]).await?,
            startup(
                &fleet,
                "marketplace",
                settings.startup_runs,
                &fleet.upstream(PROD)?,
            )
            .await?,
        ];
        let samples = measure(&mut fleet, &targets, settings, &work).await?;
        check_fleet(&fleet).await?;
        Ok(Measured {
            samples,
            startups,
            load_before,
        })
    })?;
    let (document, plot) = report(tools, settings, &work, targets, measured, &bin_dir)?;
    eprintln!(
        "bench: table in {}, plot in {}, in {:.0?}",
        document.display(),
        plot.display(),
        started.elapsed()
    );
    Ok(())
}

/// Two builds: with `bench` in the same one, its dependencies' features would be unified into
/// the services', and what is measured would not be the binaries the Dockerfiles build. Then
/// the gRPC-framed Recommend request h2load sends.
fn build(bin_dir: &Path, work: &Path) -> anyhow::Result<()> {
    workspace::build_release()?;
    let bench = ["build", "--release", "--locked", "--package", "bench"];
    workspace::run(workspace::cargo().args(bench))?;
    fs::create_dir_all(work)?;
    workspace::run(
        std::process::Command::new(bin_dir.join("bench-tool"))
            .args(["grpc-body", "--out"])
            .arg(work.join("recommend.grpc")),
    )
}

/// Warms every target up, then runs the rounds: each call at each
/// concurrency against each of its targets, a different target first each
/// round so none always runs right after the same neighbour.
async fn measure(
    fleet: &mut Fleet,
    targets: &[Target],
    settings: &Settings,
    work: &Path,
) -> anyhow::Result<Vec<Sample>> {
    let body = work.join("recommend.grpc");
    let load = |fleet: &Fleet, target: &Target, concurrency, requests| -> anyhow::Result<Load> {
        Ok(Load {
            call: target.call,
            addr: fleet.find(target.server)?.main,
            concurrency,
            requests,
            bound: settings.bound,
            body: &body,
            log: work.join("h2load.log"),
        })
    };
    for target in targets {
        let warmup = load(fleet, target, 16, WARMUP_REQUESTS)?;
        warmup
            .run()
            .await
            .with_context(|| format!("warming up {}", target.label))?;
    }
    let mut samples = Vec::new();
    let total = settings.rounds * CONCURRENCIES.len() * targets.len();
    for round in 0..settings.rounds {
        for call in [Call::Recommend, Call::Page] {
            let of_call: Vec<usize> = (0..targets.len())
                .filter(|&i| targets[i].call == call)
                .collect();
            for &concurrency in &CONCURRENCIES {
                for k in 0..of_call.len() {
                    let index = of_call[(k + round) % of_call.len()];
                    let target = &targets[index];
                    let n = ((requests(call, concurrency) as f64) * settings.scale).ceil() as usize;
                    let load = load(fleet, target, concurrency, n)?;
                    let pids = fleet.pids(target.server)?;
                    for &pid in &pids {
                        procfs::reset_peak(pid)?;
                    }
                    let cpu_before = fleet.cpu(target.server)?;
                    let run = load.run().await.with_context(|| {
                        format!("{} at concurrency {concurrency}", target.label)
                    })?;
                    let cpu = fleet.cpu(target.server)? - cpu_before;
                    let peak_rss_mib = pids
                        .iter()
                        .map(|&pid| Ok(procfs::peak_rss_kib(pid)? as f64 / 1024.0))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let addr = load.addr;
                    fleet.alive(target.server)?;
                    fleet
                        .check_answers(call, addr)
                        .await
                        .with_context(|| format!("checking {}'s answers", target.label))?;
                    let sample = Sample {
                        target: index,
                        concurrency,
                        per_second: run.per_second,
                        p50_ms: run.p50_ms,
                        p99_ms: run.p99_ms,
                        cpu_per_10k: cpu / n as f64 * 10_000.0,
                        peak_rss_mib,
                    };
                    eprintln!(
                        "bench: [{:>2}/{total}] round {}/{} {:<9} c={concurrency:<2} {:<58} {n} in {:.2} s, {:>7.0} req/s, p50 {:.3} ms, p99 {:.3} ms, CPU {:.2} s/10k",
                        samples.len() + 1,
                        round + 1,
                        settings.rounds,
                        call.name(),
                        target.label,
                        run.seconds,
                        run.per_second,
                        run.p50_ms,
                        run.p99_ms,
                        sample.cpu_per_10k,
                    );
                    samples.push(sample);
                }
            }
        }
    }
    Ok(samples)
}

/// No marketplace showed a degraded page, and the info-level services really
/// logged a line per call and exported spans (the comparison with the bare
/// servers is only fair if they did).
async fn check_fleet(fleet: &Fleet) -> anyhow::Result<()> {
    fleet.check_no_fallbacks().await?;
    let rec_lines = fleet.find(Server::Recommendations(PROD))?.process.lines();
    let spans: serde_json::Value =
        serde_json::from_str(&fleet.sink.last_line()).unwrap_or_default();
    let spans = spans["spans"].as_u64().unwrap_or(0);
    eprintln!(
        "bench: recommendations (info) wrote {rec_lines} log lines; the OTLP sink received {spans} spans"
    );
    ensure!(
        rec_lines as usize >= WARMUP_REQUESTS,
        "recommendations at info level wrote only {rec_lines} lines: are access lines off?"
    );
    ensure!(spans > 0, "no span reached the OTLP sink");
    Ok(())
}

/// exec to SERVING and idle RSS, each the median of `runs` fresh starts of
/// `service` with the prod overlay's telemetry settings.
async fn startup(
    fleet: &Fleet,
    service: &'static str,
    runs: usize,
    more_env: &[(&str, String)],
) -> anyhow::Result<Startup> {
    let output = Command::new(fleet.bin("bench-tool"))
        .args(["startup", "--service", service, "--runs", &runs.to_string()])
        .arg("--bin")
        .arg(fleet.bin(service))
        .envs([("LOG_FORMAT", "json"), ("SHUTDOWN_DELAY_SECONDS", "0")])
        .envs(PROD.env(fleet.sink_addr))
        .envs(more_env.iter().map(|(key, value)| (key, value)))
        .output()
        .await
        .context("cannot run bench-tool startup")?;
    if !output.status.success() {
        bail!(
            "bench-tool startup --service {service} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let median = |key: &str| -> anyhow::Result<f64> {
        let numbers = figures[key]
            .as_array()
            .with_context(|| format!("no {key} from bench-tool startup"))?
            .iter()
            .map(|value| value.as_f64().context("not a number"))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        Ok(report::median(&mut { numbers }))
    };
    let (serving_ms, idle_rss_mib) = (median("serving_ms")?, median("idle_rss_kib")? / 1024.0);
    eprintln!(
        "bench: {service}: exec to SERVING {serving_ms:.1} ms, idle RSS {idle_rss_mib:.1} MiB (medians of {runs})"
    );
    Ok(Startup {
        service,
        serving_ms,
        idle_rss_mib,
    })
}

/// The table, printed and written with the plot: into BENCHMARKS.md and
/// docs/bench.png, or beside the other results under the target dir.
fn report(
    tools: &Tools,
    settings: &Settings,
    work: &Path,
    targets: Vec<Target>,
    measured: Measured,
    bin_dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let sizes = vec![
        (
            "recommendations",
            stripped_size(&bin_dir.join("recommendations"), work)?,
        ),
        (
            "marketplace",
            stripped_size(&bin_dir.join("marketplace"), work)?,
        ),
    ];
    let rows = report::rows(&targets, &measured.samples, &CONCURRENCIES);
    let report = Report {
        targets,
        rows,
        startups: measured.startups,
        sizes,
        date: format!("{} UTC", procfs::utc_minute()?),
        machine: procfs::machine(),
        load_before: measured.load_before,
        load_after: procfs::load_average(),
        rounds: settings.rounds,
        command: settings.command.clone(),
    };
    let markdown = report.markdown(&report.budgets(GRPC_TARGET, PAGE_TARGET));
    println!("{markdown}");

    let json = work.join("results.json");
    fs::write(&json, serde_json::to_vec_pretty(&report.plot_json())?)?;
    fs::write(work.join("results.md"), &markdown)?;
    let (document, plot) = if settings.update_docs {
        let root = workspace::root();
        (root.join("BENCHMARKS.md"), root.join("docs/bench.png"))
    } else {
        (work.join("BENCHMARKS.md"), work.join("bench.png"))
    };
    let script = workspace::root().join("bench/plot.py");
    workspace::run(tools.command("python")?.arg(script).arg(&json).arg(&plot))?;
    benchmarks::update(&document, "bench", "", |_| markdown)?;
    Ok((document, plot))
}

/// The size of `binary` once stripped of symbols (a copy is stripped).
fn stripped_size(binary: &Path, work: &Path) -> anyhow::Result<u64> {
    let copy = work.join(binary.file_name().context("a binary file name")?);
    fs::copy(binary, &copy)?;
    workspace::run(std::process::Command::new("strip").arg(&copy))?;
    Ok(fs::metadata(&copy)?.len())
}
