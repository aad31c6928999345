//! `cargo xtask soak`: release builds of both services on loopback, a fixed
//! request rate of `GET /` through the marketplace for a while, and the
//! verdict: no error, no degraded page, resident memory after warm-up growing
//! less than [`MAX_RSS_GROWTH`], open file descriptors flat. The command
//! records its result in BENCHMARKS.md; `cargo xtask test soak` runs a short
//! one and only prints.

mod load;
mod report;

use crate::{
    process::{Output, Service},
    procfs,
    tools::{Tool, Tools},
    workspace,
};
use anyhow::{Context, bail};
use clap::Args;
use load::{Counters, Counts};
use report::{Measured, Usage};
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// What the `soak` test step needs installed: nothing from outside.
pub const TOOLS: &[Tool] = &[];

/// The part of the run the services get to warm up (allocator pools, connection
/// pools, lazily built state) before memory and descriptors are taken as the baseline:
/// a fifth of the run, and at least [`MIN_WARM_UP`] (a thousand pages at the default
/// rate: in CI's 15 s, 3 s left the allocator still growing, 10% by the end).
const WARM_UP_FRACTION: u32 = 5;
const MIN_WARM_UP: Duration = Duration::from_secs(5);
/// The most resident memory may grow from the end of warm-up to the end.
const MAX_RSS_GROWTH: f64 = 0.10;
/// How many more (or fewer) open descriptors than at the end of warm-up still
/// count as flat: a few pooled connections come and go.
const FD_TOLERANCE: i64 = 8;
/// How often memory and descriptors are sampled, and progress printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: u32 = 5;

/// The CI version: short, at the default rate, printing only.
const TEST_DURATION: Duration = Duration::from_secs(15);
const DEFAULT_RATE: u32 = 200;

#[derive(Args)]
pub struct SoakArgs {
    /// How long to hold the rate: `90s`, `10m`, `1h`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Page requests per second, held whatever the latency.
    #[arg(long, default_value_t = DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..=5000))]
    rate: u32,
    /// Print the result only; leave BENCHMARKS.md alone.
    #[arg(long)]
    no_record: bool,
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let target_dir = workspace::target_dir()?;
    let measured = soak(&target_dir, args.duration, args.rate)?;
    println!("{}", measured.table());
    if !args.no_record {
        let document = workspace::root().join("BENCHMARKS.md");
        report::record(&document, &measured)?;
        eprintln!("xtask: soak result recorded in {}", document.display());
    }
    measured.verdict()
}

/// The step `cargo xtask test` runs: it prints, and never rewrites tracked files.
pub fn test(_tools: &Tools, target_dir: &Path) -> anyhow::Result<()> {
    let measured = soak(target_dir, TEST_DURATION, DEFAULT_RATE)?;
    println!("{}", measured.table());
    measured.verdict()
}

fn soak(target_dir: &Path, duration: Duration, rate: u32) -> anyhow::Result<Measured> {
    if duration <= MIN_WARM_UP {
        bail!("a soak of {MIN_WARM_UP:?} or less has no time left after its warm-up");
    }
    workspace::build_release()?;
    let bin_dir = target_dir.join("release");
    let log_dir = target_dir.join("soak");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    workspace::block_on(async {
        // Only the soak's own settings, nothing from the caller's environment.
        let start = async |name: &str, main_port: &str, settings: Vec<(&str, String)>| {
            let mut command = tokio::process::Command::new(bin_dir.join(name));
            command.env_clear().env("RUST_LOG", "info").envs(settings);
            let log = Output::File(log_dir.join(format!("{name}.log")));
            let service = Service::start(name, &mut command, main_port, log).await?;
            let (pid, main, admin) = (service.process.pid(), service.main, service.admin);
            eprintln!("xtask: {name} (pid {pid}) is ready on {main}, admin {admin}");
            anyhow::Ok(service)
        };
        let mut recommendations = start("recommendations", "GRPC_PORT", vec![]).await?;
        let upstream = recommendations.main;
        let http = vec![
            ("RECOMMENDATIONS_HOST", upstream.ip().to_string()),
            ("RECOMMENDATIONS_PORT", upstream.port().to_string()),
        ];
        let mut marketplace = start("marketplace", "HTTP_PORT", http).await?;
        let measured = hold(&mut marketplace, &mut recommendations, duration, rate).await;
        // Both are stopped whatever happened; a failed stop is reported
        // after the measurement's own error, if any.
        let stopped = (
            marketplace.process.stop().await,
            recommendations.process.stop().await,
        );
        let measured = measured?;
        stopped.0?;
        stopped.1?;
        Ok(measured)
    })
}

/// Holds `rate` for `duration`, sampling both services; the measurement.
async fn hold(
    marketplace: &mut Service,
    recommendations: &mut Service,
    duration: Duration,
    rate: u32,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let counters = Counters::default();
    let load = tokio::spawn(load::drive(
        marketplace.main,
        rate,
        duration,
        counters.clone(),
    ));
    let warm_up = (duration / WARM_UP_FRACTION).max(MIN_WARM_UP);
    let mut baseline: Option<[Usage; 2]> = None;
    // The highest memory seen in warm-up: a leak grows past it, the warm-up's own
    // peak (every pooled connection opening at once) is not growth.
    let mut warm_up_peak = [0, 0];
    // The end is the last sample under load, like the baseline: the client's
    // pooled connections are open in both.
    let mut last = None;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    let mut tick = 0;
    loop {
        ticks.tick().await;
        if load.is_finished() {
            break;
        }
        tick += 1;
        let now = [usage(marketplace)?, usage(recommendations)?];
        if baseline.is_none() {
            for (peak, usage) in warm_up_peak.iter_mut().zip(&now) {
                *peak = usage.rss_kib.max(*peak);
            }
            if started.elapsed() >= warm_up {
                let mut base = now;
                for (usage, peak) in base.iter_mut().zip(warm_up_peak) {
                    usage.rss_kib = peak;
                }
                baseline = Some(base);
            }
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
    let counts: Counts = load.await.context("the load generator panicked")??;
    let baseline = baseline.context("the run ended before its warm-up did")?;
    let end = last.context("no sample taken")?;
    Ok(Measured {
        duration,
        rate,
        counts,
        fallbacks: marketplace.fallbacks().await?,
        marketplace: (baseline[0], end[0]),
        recommendations: (baseline[1], end[1]),
        max_rss_growth: MAX_RSS_GROWTH,
        fd_tolerance: FD_TOLERANCE,
    })
}

/// Resident memory and open descriptors now; an error once it has exited.
fn usage(service: &mut Service) -> anyhow::Result<Usage> {
    service.process.alive()?;
    let (rss_kib, fds) = procfs::usage(service.process.pid())?;
    Ok(Usage { rss_kib, fds })
}

/// `90s`, `10m`, `1h`, `500ms`: a number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 60s, 10m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for wrong in ["60", "s", "1.5m", "10 s", "3d", ""] {
            assert!(parse_duration(wrong).is_err(), "{wrong}");
        }
    }
}
