//! `cargo xtask bench`: release builds of both services and of two baselines
//! (crate `bench`: bare tonic, bare axum), load-tested on loopback with
//! h2load in the same run, rounds interleaved, medians reported. Prints one
//! table (and updates BENCHMARKS.md and docs/bench.png) with the budgets
//! marked met or missed. `cargo xtask test bench` runs a short one.

mod load;
mod report;
mod servers;

use crate::{
    procfs,
    tools::{Tool, Tools},
    workspace,
};
use anyhow::{Context, ensure};
use clap::Args;
use load::{Call, Load, Run};
use report::{Measured, Sample};
use servers::{Fleet, PROD, Server, Telemetry, Traces};
use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

/// What the `bench` test step needs installed: h2load, binutils' strip and
/// matplotlib (in the Python venv) for the plot.
pub const TOOLS: &[Tool] = &[
    Tool::debian("h2load", "nghttp2-client"),
    Tool::debian("strip", "binutils"),
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
    /// Fresh starts each startup figure is the median of.
    #[arg(skip = 5_usize)]
    startup_runs: usize,
    /// The command as the table names it.
    #[arg(skip)]
    command: String,
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.scale > 0.0, "--scale must be positive");
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    tools.ensure(TOOLS)?;
    let command = std::iter::once("cargo xtask bench".to_owned()).chain(std::env::args().skip(2));
    args.command = command.collect::<Vec<_>>().join(" ");
    bench(&tools, &target_dir, &args)
}

/// The step `cargo xtask test` runs: every scenario, a few thousand requests
/// each, one round; the answers are checked, the budgets only reported.
pub fn test(tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    let settings = BenchArgs {
        rounds: 1,
        scale: 0.1,
        bound_seconds: 60,
        no_update: true,
        startup_runs: 2,
        command: "cargo xtask test bench".into(),
    };
    bench(tools, target_dir, &settings)
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

/// What a row of the table measures: its server's call, sent to it (and
/// through it to the servers it calls); a baseline's figures are what the
/// others of its call are divided by.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub server: Server,
    pub call: Call,
    pub baseline: bool,
}

impl Target {
    fn new(server: Server) -> Self {
        Target {
            label: server.label(),
            server,
            call: server.call(),
            baseline: matches!(server, Server::BareTonic | Server::BareChain),
        }
    }
}

const ALWAYS_SAMPLED: Telemetry = Telemetry {
    label: "info logs, OTLP 100%",
    rust_log: "info",
    traces: Traces::Exported("parentbased_always_on", "1"),
};
/// Every other info line but no access lines (the gRPC and HTTP trace layers
/// log only those at info).
const NO_ACCESS_LINES: Telemetry = Telemetry {
    label: "no access lines, OTLP 10%",
    rust_log: "info,platform::grpc::trace=warn,platform::http::trace=warn",
    ..PROD
};
const WARN: Telemetry = Telemetry {
    label: "RUST_LOG=warn, no exporter",
    rust_log: "warn",
    traces: Traces::NotExported,
};
/// Every layer and metric, no spans and no access lines: what tracing and
/// logging cost is the difference to the rows above.
const UNTRACED: Telemetry = Telemetry {
    label: "RUST_LOG=warn, OTEL_SDK_DISABLED",
    traces: Traces::Off,
    ..WARN
};

/// The rows of the table, in order; the budgets are about the prod settings.
const SERVERS: [Server; 11] = {
    use Server::*;
    [
        BareTonic,
        Recommendations(PROD),
        Recommendations(ALWAYS_SAMPLED),
        Recommendations(NO_ACCESS_LINES),
        Recommendations(WARN),
        Recommendations(UNTRACED),
        BareChain,
        Marketplace(PROD),
        Marketplace(WARN),
        Marketplace(UNTRACED),
        BareAxum,
    ]
};

fn bench(tools: &Tools, target_dir: &Path, settings: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = target_dir.join("bench");
    let bin_dir = target_dir.join("release");
    build(&bin_dir, &work)?;
    let targets: Vec<Target> = SERVERS.into_iter().map(Target::new).collect();
    let measured = workspace::block_on(async {
        let load_before = procfs::load_average();
        let mut fleet = Fleet::start(&bin_dir, &SERVERS).await?;
        let runs = settings.startup_runs;
        let startups = vec![
            fleet.startup("recommendations", runs).await?,
            fleet.startup("marketplace", runs).await?,
        ];
        let samples = measure(&mut fleet, &targets, settings, &work).await?;
        check_fleet(&fleet).await?;
        Ok(Measured {
            samples,
            startups,
            load_before,
        })
    })?;
    let (document, plot) = report::write(tools, settings, target_dir, targets, measured)?;
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
    settings: &BenchArgs,
    work: &Path,
) -> anyhow::Result<Vec<Sample>> {
    let body = work.join("recommend.grpc");
    let bound = Duration::from_secs(settings.bound_seconds);
    let load = |fleet: &Fleet, target: &Target, concurrency, requests| -> anyhow::Result<Load> {
        let (call, addr) = (target.call, fleet.find(target.server)?.main);
        let log = work.join("h2load.log");
        Ok(Load {
            call,
            addr,
            concurrency,
            requests,
            bound,
            body: body.clone(),
            log,
        })
    };
    for target in targets {
        let warmup = load(fleet, target, 16, WARMUP_REQUESTS)?;
        let warmed = warmup.run().await;
        warmed.with_context(|| format!("warming up {}", target.label))?;
    }
    let mut samples = Vec::new();
    let total = settings.rounds * CONCURRENCIES.len() * targets.len();
    for round in 0..settings.rounds {
        for call in [Call::Recommend, Call::Page] {
            let of_call: Vec<usize> = (0..targets.len())
                .filter(|&i| targets[i].call == call)
                .collect();
            for concurrency in CONCURRENCIES {
                for k in 0..of_call.len() {
                    let index = of_call[(k + round) % of_call.len()];
                    let target = &targets[index];
                    let n = ((requests(call, concurrency) as f64) * settings.scale).ceil() as usize;
                    let load = load(fleet, target, concurrency, n)?;
                    let sample = sample(fleet, target, &load).await;
                    let (run, mut sample) = sample.with_context(|| {
                        format!("{} at concurrency {concurrency}", target.label)
                    })?;
                    sample.target = index;
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

/// One scenario: the load, with the CPU and peak memory of the target's
/// processes, which must still be running and answering right afterwards.
async fn sample(fleet: &mut Fleet, target: &Target, load: &Load) -> anyhow::Result<(Run, Sample)> {
    let pids = fleet.pids(target.server)?;
    for &pid in &pids {
        procfs::reset_peak(pid)?;
    }
    let cpu_before = fleet.cpu(target.server)?;
    let run = load.run().await?;
    let cpu = fleet.cpu(target.server)? - cpu_before;
    let peak_rss_mib = pids
        .iter()
        .map(|&pid| Ok(procfs::peak_rss_kib(pid)? as f64 / 1024.0))
        .collect::<anyhow::Result<Vec<_>>>()?;
    fleet.alive(target.server)?;
    let checked = fleet.check_answers(load.call, load.addr).await;
    checked.with_context(|| format!("checking {}'s answers", target.label))?;
    let sample = Sample {
        target: 0,
        concurrency: load.concurrency,
        per_second: run.per_second,
        p50_ms: run.p50_ms,
        p99_ms: run.p99_ms,
        cpu_per_10k: cpu / load.requests as f64 * 10_000.0,
        peak_rss_mib,
    };
    Ok((run, sample))
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
