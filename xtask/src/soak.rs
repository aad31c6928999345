//! `cargo xtask soak`: a fixed rate of `GET /` through release builds of both services on
//! loopback; it passes with no error, no degraded page, and memory and descriptors flat.

mod load;
mod report;

use crate::{measure, process::Output, services::Service, tools::Tools, workspace};
use anyhow::{Context, bail, ensure};
use clap::Args;
use load::Counters;
use report::{Measured, Usage};
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// The part of the run the services get to warm up (allocator and connection
/// pools, lazily built state) before the baseline is taken: a fifth, and at
/// least [`MIN_WARM_UP`] (in CI's 15 s, 3 s left the allocator still growing).
const WARM_UP_FRACTION: u32 = 5;
const MIN_WARM_UP: Duration = Duration::from_secs(5);
/// The most resident memory may grow from its peak in warm-up to the end.
const MAX_RSS_GROWTH: f64 = 0.10;
/// Open descriptors that still count as flat: pooled connections come and go.
const FD_TOLERANCE: i64 = 8;
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: u32 = 5;

/// `cargo xtask test soak`'s.
const TEST_DURATION: Duration = Duration::from_secs(15);
const DEFAULT_RATE: u32 = 200;

#[derive(Args)]
pub struct SoakArgs {
    /// How long to hold the rate: `90s`, `10m`, `1h`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Page requests per second, held whatever the latency.
    #[arg(long, default_value_t = DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..=5000))]
    rate: u32,
    /// Print the result only; leave BENCHMARKS.md alone.
    #[arg(long)]
    no_record: bool,
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let measured = soak(&workspace::target_dir()?, args.duration, args.rate)?;
    if !args.no_record {
        let document = workspace::root().join("BENCHMARKS.md");
        report::record(&document, &measured)?;
        eprintln!("xtask: soak result recorded in {}", document.display());
    }
    measured.verdict()
}

/// `cargo xtask test soak`: it prints, and never rewrites tracked files.
pub fn test(_tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    soak(target_dir, TEST_DURATION, DEFAULT_RATE)?.verdict()
}

/// Runs the soak and prints its table.
fn soak(target_dir: &Path, duration: Duration, rate: u32) -> anyhow::Result<Measured> {
    if duration <= MIN_WARM_UP {
        bail!("a soak of {MIN_WARM_UP:?} or less has no time left after its warm-up");
    }
    workspace::build_release()?;
    let (bin_dir, log_dir) = (target_dir.join("release"), target_dir.join("soak"));
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    workspace::block_on(async {
        let start = async |name: &str, main_port: &str, upstream: Option<&Service>| {
            let mut command = crate::services::command(bin_dir.join(name));
            command.env("RUST_LOG", "info");
            command.envs(upstream.iter().flat_map(|upstream| upstream.upstream()));
            let log = Output::File(log_dir.join(format!("{name}.log")));
            let service = Service::start(name, &mut command, main_port, log).await?;
            let (pid, main) = (service.process.pid, service.main);
            let admin = service.admin.context("a service has an admin listener")?;
            eprintln!("xtask: {name} (pid {pid}) is ready on {main}, admin {admin}");
            anyhow::Ok(service)
        };
        let recommendations = start("recommendations", "GRPC_PORT", None).await?;
        let marketplace = start("marketplace", "HTTP_PORT", Some(&recommendations)).await?;
        let mut services = [marketplace, recommendations];
        let measured = hold(&mut services, duration, rate).await;
        // Both are stopped whatever happened; a failed stop is reported after the run's error.
        let [marketplace, recommendations] = services.map(|service| service.process.stop());
        let stopped = (marketplace.await, recommendations.await);
        let measured = measured?;
        println!("{}", measured.table());
        stopped.0.and(stopped.1)?;
        Ok(measured)
    })
}

/// Holds `rate` through the marketplace (first of `services`), sampling both.
async fn hold(
    services: &mut [Service; 2],
    duration: Duration,
    rate: u32,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let counters = Counters::default();
    let load = load::drive(services[0].main, rate, duration, counters.clone());
    let load = tokio::spawn(load);
    let warm_up = (duration / WARM_UP_FRACTION).max(MIN_WARM_UP);
    // The baseline: the highest memory in warm-up (a leak grows past it; pooled connections
    // opening at once are not growth), and the descriptors at its end.
    let (mut baseline, mut warmed) = ([Usage::default(); 2], false);
    // The end is the last sample under load: the client's connections are open, as in warm-up.
    let mut last = None;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    for tick in 1.. {
        ticks.tick().await;
        if load.is_finished() {
            break;
        }
        let now = [usage(&mut services[0])?, usage(&mut services[1])?];
        if !warmed {
            for (base, now) in baseline.iter_mut().zip(now) {
                base.rss_kib = base.rss_kib.max(now.rss_kib);
                base.fds = now.fds;
            }
            warmed = started.elapsed() >= warm_up;
        }
        last = Some(now);
        if tick % PROGRESS_EVERY == 0 {
            let counts = counters.lock().expect("not poisoned");
            eprintln!(
                "xtask: soak {:>4.0}/{} s: {} pages, {} errors, {} degraded; marketplace {}, recommendations {}",
                started.elapsed().as_secs_f64(),
                duration.as_secs(),
                counts.answered,
                counts.errors,
                counts.degraded,
                now[0],
                now[1],
            );
        }
    }
    let counts = load.await.context("the load generator panicked")??;
    ensure!(warmed, "the run ended before its warm-up did");
    let end = last.context("no sample taken")?;
    Ok(Measured {
        duration,
        rate,
        counts,
        fallbacks: services[0].fallbacks().await?,
        usage: [
            ("marketplace", baseline[0], end[0]),
            ("recommendations", baseline[1], end[1]),
        ],
    })
}

fn usage(service: &mut Service) -> anyhow::Result<Usage> {
    service.process.alive()?;
    let (rss_kib, fds) = measure::usage(service.process.pid)?;
    Ok(Usage { rss_kib, fds })
}
