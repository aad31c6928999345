//! From samples to what people read: medians over rounds, ratios to the
//! baseline of the same call and concurrency, the budgets, the Markdown
//! BENCHMARKS.md keeps and the JSON the plot is drawn from.

use super::{BenchArgs, CONCURRENCIES, PROD, Server, Target};
use crate::{benchmarks, procfs, tools::Tools, workspace};
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

/// One measured scenario of one round.
#[derive(Debug, Clone)]
pub struct Sample {
    pub target: usize,
    pub concurrency: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_per_10k: f64,
    /// Peak RSS of each process of the target, in MiB.
    pub peak_rss_mib: Vec<f64>,
}

/// A target at one concurrency: medians over the rounds, and the ratios of
/// the rate and the p99 to the baseline's.
#[derive(Debug, Clone)]
pub struct Row {
    pub medians: Sample,
    pub ratio: f64,
    pub p99_ratio: f64,
}

/// A service started on its own, idle.
#[derive(Debug, Clone)]
pub struct Startup {
    pub service: &'static str,
    pub serving_ms: f64,
    pub idle_rss_mib: f64,
}

pub struct Report {
    pub targets: Vec<Target>,
    pub rows: Vec<Row>,
    pub startups: Vec<Startup>,
    /// (binary, stripped bytes)
    pub sizes: Vec<(&'static str, u64)>,
    pub date: String,
    pub machine: String,
    pub load_before: String,
    pub load_after: String,
    pub rounds: usize,
    pub command: String,
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Medians per (target, concurrency), with ratios to the baseline target of
/// the same call at the same concurrency.
pub fn rows(targets: &[Target], samples: &[Sample], concurrencies: &[usize]) -> Vec<Row> {
    let medians = |target: usize, concurrency: usize| {
        let of: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.target == target && s.concurrency == concurrency)
            .collect();
        let pick =
            |f: &dyn Fn(&Sample) -> f64| median(&mut of.iter().map(|s| f(s)).collect::<Vec<_>>());
        let processes = of.first().map_or(0, |s| s.peak_rss_mib.len());
        Sample {
            target,
            concurrency,
            per_second: pick(&|s| s.per_second),
            p50_ms: pick(&|s| s.p50_ms),
            p99_ms: pick(&|s| s.p99_ms),
            cpu_per_10k: pick(&|s| s.cpu_per_10k),
            peak_rss_mib: (0..processes)
                .map(|i| pick(&|s| s.peak_rss_mib[i]))
                .collect(),
        }
    };
    let mut rows = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        let baseline = targets
            .iter()
            .position(|t| t.baseline && t.call == target.call)
            .expect("every call has a baseline");
        for &concurrency in concurrencies {
            let (ours, base) = (medians(index, concurrency), medians(baseline, concurrency));
            rows.push(Row {
                ratio: ours.per_second / base.per_second,
                p99_ratio: ours.p99_ms / base.p99_ms,
                medians: ours,
            });
        }
    }
    rows
}

/// A budget (README.md, "Performance"): what, its limit, what this run
/// measured, and whether that met it.
pub type Budget = (String, &'static str, String, bool);

impl Report {
    fn row(&self, label: &str, concurrency: usize) -> Option<&Row> {
        self.rows.iter().find(|row| {
            self.targets[row.medians.target].label == label
                && row.medians.concurrency == concurrency
        })
    }

    /// The budgets, from the rows at concurrency 64 and the startup figures.
    pub fn budgets(&self, grpc_target: &str, page_target: &str) -> Vec<Budget> {
        let mut budgets = Vec::new();
        let peak = |service: &str, mib: f64| {
            let what = format!("{service}: peak RSS at c=64");
            (what, "≤ 50 MiB", format!("{mib:.1} MiB"), mib <= 50.0)
        };
        if let Some(Row {
            medians,
            ratio,
            p99_ratio,
        }) = self.row(grpc_target, 64)
        {
            let what = format!("{grpc_target}: throughput at c=64");
            budgets.push((
                what,
                "≥ 0.90× bare tonic",
                format!("{ratio:.2}×"),
                *ratio >= 0.90,
            ));
            let what = format!("{grpc_target}: p99 at c=64");
            let measured = format!("{p99_ratio:.2}× ({:.2} ms)", medians.p99_ms);
            budgets.push((what, "≤ 1.5× bare tonic's", measured, *p99_ratio <= 1.5));
            budgets.push(peak("recommendations", medians.peak_rss_mib[0]));
        }
        if let Some(Row { medians, ratio, .. }) = self.row(page_target, 64) {
            let what = format!("{page_target}: GET / throughput at c=64");
            let limit = "≥ 0.85× bare axum → bare tonic";
            budgets.push((what, limit, format!("{ratio:.2}×"), *ratio >= 0.85));
            budgets.push(peak("marketplace", medians.peak_rss_mib[0]));
        }
        for Startup {
            service,
            serving_ms,
            idle_rss_mib,
        } in &self.startups
        {
            let (what, rss) = (format!("{service}: idle RSS"), *idle_rss_mib);
            budgets.push((what, "≤ 15 MiB", format!("{rss:.1} MiB"), rss <= 15.0));
            let (what, ms) = (format!("{service}: exec to SERVING"), *serving_ms);
            budgets.push((what, "≤ 100 ms", format!("{ms:.1} ms"), ms <= 100.0));
        }
        for (binary, bytes) in &self.sizes {
            let (what, mb) = (format!("{binary}: stripped binary"), *bytes as f64 / 1e6);
            budgets.push((what, "≤ 25 MB", format!("{mb:.1} MB"), *bytes <= 25_000_000));
        }
        budgets
    }

    /// The generated part of BENCHMARKS.md.
    pub fn markdown(&self, budgets: &[Budget]) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Measured {} on {} (load average {} before, {} after), `{}`: \
             {} interleaved round(s), medians; ratios are to the baseline of \
             the same call at the same concurrency, in the same run.\n",
            self.date, self.machine, self.load_before, self.load_after, self.command, self.rounds
        );
        md += "| target | call | c | req/s | × baseline | p50 ms | p99 ms | p99 × baseline | CPU s / 10k req | peak RSS MiB |\n";
        md += "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n";
        for Row {
            medians: row,
            ratio,
            p99_ratio,
        } in &self.rows
        {
            let target = &self.targets[row.target];
            let call = target.call.name();
            let label = if target.baseline {
                format!("**{}** (baseline)", target.label)
            } else {
                target.label.clone()
            };
            let rss: Vec<String> = row.peak_rss_mib.iter().map(|m| format!("{m:.1}")).collect();
            let _ = writeln!(
                md,
                "| {label} | {call} | {} | {:.0} | {:.2} | {:.3} | {:.3} | {:.2} | {:.3} | {} |",
                row.concurrency,
                row.per_second,
                ratio,
                row.p50_ms,
                row.p99_ms,
                p99_ratio,
                row.cpu_per_10k,
                rss.join(" + "),
            );
        }
        md += "\nPeak RSS of a chain is each process's, front first; CPU is the sum of its processes.\n\n";
        md += "| service | exec to SERVING ms | idle RSS MiB |\n|---|--:|--:|\n";
        for Startup {
            service,
            serving_ms,
            idle_rss_mib,
        } in &self.startups
        {
            let _ = writeln!(md, "| {service} | {serving_ms:.1} | {idle_rss_mib:.1} |");
        }
        md += "\n| binary | stripped size MB |\n|---|--:|\n";
        for (binary, bytes) in &self.sizes {
            let _ = writeln!(md, "| {binary} | {:.2} |", *bytes as f64 / 1e6);
        }
        md += "\n| budget | limit | measured | |\n|---|---|---|---|\n";
        for (what, limit, measured, met) in budgets {
            let verdict = if *met { "met" } else { "**missed**" };
            let _ = writeln!(md, "| {what} | {limit} | {measured} | {verdict} |");
        }
        md
    }

    /// What the plot script reads.
    pub fn plot_json(&self) -> serde_json::Value {
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                let points: Vec<serde_json::Value> = self
                    .rows
                    .iter()
                    .map(|row| &row.medians)
                    .filter(|row| row.target == index)
                    .map(|row| {
                        serde_json::json!({
                            "concurrency": row.concurrency,
                            "p50_ms": row.p50_ms,
                            "p99_ms": row.p99_ms,
                            "per_second": row.per_second,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "label": target.label,
                    "call": target.call.name(),
                    "baseline": target.baseline,
                    "points": points,
                })
            })
            .collect();
        serde_json::json!({ "title": format!("{} · {}", self.date, self.machine), "targets": targets })
    }
}

/// The measured part of a run.
pub struct Measured {
    pub samples: Vec<Sample>,
    pub startups: Vec<Startup>,
    pub load_before: String,
}

/// The table, printed and written with the plot: into BENCHMARKS.md and
/// docs/bench.png, or beside the other results under the target dir.
pub fn write(
    tools: &Tools,
    settings: &BenchArgs,
    target_dir: &Path,
    targets: Vec<Target>,
    measured: Measured,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let work = &target_dir.join("bench");
    let sizes = ["recommendations", "marketplace"]
        .into_iter()
        .map(|binary| {
            Ok((
                binary,
                stripped_size(&target_dir.join("release"), binary, work)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let rows = rows(&targets, &measured.samples, &CONCURRENCIES);
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
    let markdown = report.markdown(&report.budgets(
        &Server::Recommendations(PROD).label(),
        &Server::Marketplace(PROD).label(),
    ));
    println!("{markdown}");

    let json = work.join("results.json");
    fs::write(&json, serde_json::to_vec_pretty(&report.plot_json())?)?;
    fs::write(work.join("results.md"), &markdown)?;
    let (document, plot) = if !settings.no_update {
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
fn stripped_size(bin_dir: &Path, binary: &str, work: &Path) -> anyhow::Result<u64> {
    let copy = work.join(binary);
    fs::copy(bin_dir.join(binary), &copy)?;
    workspace::run(std::process::Command::new("strip").arg(&copy))?;
    Ok(fs::metadata(&copy)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{load::Call, servers::Server};

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn ratios_are_to_the_baseline_of_the_same_call() {
        let target = |label: &str, call, baseline| Target {
            label: label.into(),
            call,
            baseline,
            server: Server::BareTonic,
        };
        let targets = vec![
            target("bare", Call::Recommend, true),
            target("ours", Call::Recommend, false),
            target("bare page", Call::Page, true),
        ];
        let sample = |target, per_second, p99_ms| Sample {
            target,
            concurrency: 64,
            per_second,
            p50_ms: 1.0,
            p99_ms,
            cpu_per_10k: 1.0,
            peak_rss_mib: vec![10.0],
        };
        let samples = [
            sample(0, 100.0, 2.0),
            sample(0, 300.0, 2.0),
            sample(1, 180.0, 3.0),
            sample(2, 50.0, 1.0),
        ];
        let rows = rows(&targets, &samples, &[64]);
        assert_eq!(rows[1].ratio, 180.0 / 200.0);
        assert_eq!(rows[1].p99_ratio, 1.5);
        assert_eq!(rows[2].ratio, 1.0);
    }
}
