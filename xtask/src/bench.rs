//! `cargo xtask bench`: both services and two baselines (crate `bench`), release builds
//! load-tested on loopback with h2load in one run, rounds interleaved; the medians and the
//! budgets go to BENCHMARKS.md and docs/bench.png. `cargo xtask test bench` runs a short one.

mod load;
mod report;
mod servers;

use crate::{
    measure,
    tools::{Tool, Tools},
    workspace,
};
use anyhow::{Context, ensure};
use clap::Args;
use load::{Call, H2load};
use report::Sample;
use servers::{Fleet, PROD, Server, Telemetry, Traces};
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// h2load, binutils' strip, and matplotlib (in the venv) for the plot.
pub const TOOLS: &[Tool] = &[
    Tool::Debian("h2load", "nghttp2-client"),
    Tool::Debian("strip", "binutils"),
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
    /// Leave BENCHMARKS.md and docs/bench.png alone (results stay under the target dir's bench/).
    #[arg(long)]
    no_update: bool,
    /// Fresh starts each startup figure is the median of.
    #[arg(skip = 5_usize)]
    startup_runs: usize,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.scale > 0.0, "--scale must be positive");
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    tools.ensure(TOOLS)?;
    bench(&tools, &target_dir, &args)
}

/// `cargo xtask test bench`: every scenario once, at a tenth; the answers checked, the budgets only reported.
pub fn test(tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    let settings = BenchArgs {
        rounds: 1,
        scale: 0.1,
        bound_seconds: 60,
        no_update: true,
        startup_runs: 2,
    };
    bench(tools, target_dir, &settings)
}

const CONCURRENCIES: [usize; 3] = [1, 16, 64];

/// Requests per scenario at scale 1: ≥ 100 samples past the p99, a second or more of load.
fn requests(call: Call, concurrency: usize) -> usize {
    match (call, concurrency) {
        (Call::Recommend, 1) => 10_000,
        (Call::Recommend, _) => 60_000,
        (Call::Page, 1) => 5_000,
        (Call::Page, _) => 25_000,
    }
}

/// Requests each server gets first: connections made, caches and pools warm.
const WARMUP_REQUESTS: usize = 2_000;

const ALWAYS_SAMPLED: Telemetry = Telemetry {
    label: "info logs, OTLP 100%",
    rust_log: "info",
    traces: Traces::Exported("parentbased_always_on", "1"),
};
/// No access lines (the only info lines of the trace layers), the rest at info.
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
/// Every layer and metric, no spans and no access lines: the rows above cost the difference.
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
    let (work, bin_dir) = (target_dir.join("bench"), target_dir.join("release"));
    let body = build(&bin_dir, &work)?;
    let measured = workspace::block_on(async {
        let load_before = measure::load_average();
        let mut fleet = Fleet::start(&bin_dir, &SERVERS).await?;
        let runs = settings.startup_runs;
        let startups = vec![
            fleet.startup("recommendations", runs).await?,
            fleet.startup("marketplace", runs).await?,
        ];
        let bound = Duration::from_secs(settings.bound_seconds);
        let log = work.join("h2load.log");
        let samples = rounds(&mut fleet, settings, H2load { bound, body, log }).await?;
        fleet.check(WARMUP_REQUESTS as u64).await?;
        anyhow::Ok((samples, startups, load_before))
    })?;
    let (document, plot) = report::write(tools, settings, target_dir, measured)?;
    let (document, plot, took) = (document.display(), plot.display(), started.elapsed());
    eprintln!("bench: table in {document}, plot in {plot}, in {took:.0?}");
    Ok(())
}

/// Two builds, else `bench`'s features would be unified into the services' (not what the
/// Dockerfiles build). Returns h2load's request.
fn build(bin_dir: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    workspace::build_release()?;
    let bench = ["build", "--release", "--locked", "--package", "bench"];
    workspace::run(workspace::cargo().args(bench))?;
    fs::create_dir_all(work)?;
    let body = work.join("recommend.grpc");
    let mut grpc_body = std::process::Command::new(bin_dir.join("bench-tool"));
    workspace::run(grpc_body.args(["grpc-body", "--out"]).arg(&body))?;
    Ok(body)
}

/// Warms every server up, then runs the rounds: each call at each concurrency against each
/// of its servers, a different one first each round (none always after the same neighbour).
async fn rounds(
    fleet: &mut Fleet,
    settings: &BenchArgs,
    h2load: H2load,
) -> anyhow::Result<Vec<Sample>> {
    for server in SERVERS {
        let main = fleet.find(server)?.main;
        let warmed = h2load.run(server.call(), main, 16, WARMUP_REQUESTS).await;
        warmed.with_context(|| format!("warming up {}", server.label()))?;
    }
    let (mut samples, rounds) = (Vec::new(), settings.rounds);
    let total = rounds * CONCURRENCIES.len() * SERVERS.len();
    for round in 0..rounds {
        for call in [Call::Recommend, Call::Page] {
            let of_call: Vec<Server> = SERVERS.into_iter().filter(|s| s.call() == call).collect();
            for concurrency in CONCURRENCIES {
                for k in 0..of_call.len() {
                    let server = of_call[(k + round) % of_call.len()];
                    let n = ((requests(call, concurrency) as f64) * settings.scale).ceil() as usize;
                    let label = server.label();
                    let sample = fleet.sample(server, &h2load, concurrency, n).await;
                    let sample =
                        sample.with_context(|| format!("{label} at concurrency {concurrency}"))?;
                    let run = sample.run;
                    eprintln!(
                        "bench: [{:>2}/{total}] round {}/{rounds} {:<9} c={concurrency:<2} {label:<58} {n} in {:.2} s, {:>7.0} req/s, p50 {:.3} ms, p99 {:.3} ms, CPU {:.2} s/10k",
                        samples.len() + 1,
                        round + 1,
                        call.name(),
                        n as f64 / run.per_second,
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
