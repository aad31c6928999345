//! From samples to what people read: medians over rounds, ratios to the
//! baseline of the same call and concurrency, the budgets, the Markdown
//! BENCHMARKS.md keeps and the JSON the plot is drawn from.

use super::{BenchArgs, CONCURRENCIES, PROD, SERVERS, Server, load::Run};
use crate::{benchmarks, measure, tools::Tools, workspace};
use serde_json::json;
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

/// One scenario of one round, or the medians over the rounds.
#[derive(Debug, Clone)]
pub struct Sample {
    pub server: Server,
    pub concurrency: usize,
    pub run: Run,
    pub cpu_per_10k: f64,
    /// Peak RSS of each process of the chain, front first, in MiB.
    pub peak_rss_mib: Vec<f64>,
}

/// The medians, and the ratios of the rate and the p99 to the baseline's.
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

/// A budget (README.md, "Performance"): what, limit, measured, met.
type Budget = (String, &'static str, String, bool);

struct Report {
    header: String,
    rows: Vec<Row>,
    startups: Vec<Startup>,
    /// (binary, stripped bytes)
    sizes: Vec<(&'static str, u64)>,
}

/// Medians per (server, concurrency), with ratios to the baseline of the same call.
fn rows(servers: &[Server], samples: &[Sample], concurrencies: &[usize]) -> Vec<Row> {
    let medians = |server: Server, concurrency: usize| {
        let same = |s: &&Sample| (s.server, s.concurrency) == (server, concurrency);
        let of: Vec<&Sample> = samples.iter().filter(same).collect();
        let pick = |f: &dyn Fn(&Sample) -> f64| measure::median(of.iter().map(|s| f(s)).collect());
        let processes = of.first().map_or(0, |s| s.peak_rss_mib.len());
        let run = Run {
            per_second: pick(&|s| s.run.per_second),
            p50_ms: pick(&|s| s.run.p50_ms),
            p99_ms: pick(&|s| s.run.p99_ms),
        };
        let (cpu_per_10k, processes) = (pick(&|s| s.cpu_per_10k), 0..processes);
        let peak_rss_mib = processes.map(|i| pick(&|s| s.peak_rss_mib[i])).collect();
        Sample {
            server,
            concurrency,
            run,
            cpu_per_10k,
            peak_rss_mib,
        }
    };
    let mut rows = Vec::new();
    for &server in servers {
        let baseline = servers
            .iter()
            .find(|b| b.baseline() && b.call() == server.call());
        let baseline = *baseline.expect("every call has a baseline");
        for &concurrency in concurrencies {
            let (ours, base) = (medians(server, concurrency), medians(baseline, concurrency));
            let (ratio, p99_ratio) = (
                ours.run.per_second / base.run.per_second,
                ours.run.p99_ms / base.run.p99_ms,
            );
            rows.push(Row {
                medians: ours,
                ratio,
                p99_ratio,
            });
        }
    }
    rows
}

impl Report {
    fn row(&self, server: Server, concurrency: usize) -> Option<&Row> {
        let mut rows = self.rows.iter();
        rows.find(|row| (row.medians.server, row.medians.concurrency) == (server, concurrency))
    }

    fn budgets(&self) -> Vec<Budget> {
        let mut budgets = Vec::new();
        let peak = |service: &str, mib: f64| {
            let what = format!("{service}: peak RSS at c=64");
            (what, "≤ 50 MiB", format!("{mib:.1} MiB"), mib <= 50.0)
        };
        let (grpc, page) = (Server::Recommendations(PROD), Server::Marketplace(PROD));
        if let Some(row) = self.row(grpc, 64) {
            let (label, ratio, p99_ratio) = (grpc.label(), row.ratio, row.p99_ratio);
            let (what, limit) = (format!("{label}: throughput at c=64"), "≥ 0.90× bare tonic");
            budgets.push((what, limit, format!("{ratio:.2}×"), ratio >= 0.90));
            let (what, limit) = (format!("{label}: p99 at c=64"), "≤ 1.5× bare tonic's");
            let measured = format!("{p99_ratio:.2}× ({:.2} ms)", row.medians.run.p99_ms);
            budgets.push((what, limit, measured, p99_ratio <= 1.5));
            budgets.push(peak("recommendations", row.medians.peak_rss_mib[0]));
        }
        if let Some(row) = self.row(page, 64) {
            let what = format!("{}: GET / throughput at c=64", page.label());
            let (limit, ratio) = ("≥ 0.85× bare axum → bare tonic", row.ratio);
            budgets.push((what, limit, format!("{ratio:.2}×"), ratio >= 0.85));
            budgets.push(peak("marketplace", row.medians.peak_rss_mib[0]));
        }
        for startup in &self.startups {
            let (service, rss, ms) = (startup.service, startup.idle_rss_mib, startup.serving_ms);
            let what = format!("{service}: idle RSS");
            budgets.push((what, "≤ 15 MiB", format!("{rss:.1} MiB"), rss <= 15.0));
            let what = format!("{service}: exec to SERVING");
            budgets.push((what, "≤ 100 ms", format!("{ms:.1} ms"), ms <= 100.0));
        }
        for (binary, bytes) in &self.sizes {
            let (what, mb) = (format!("{binary}: stripped binary"), *bytes as f64 / 1e6);
            budgets.push((what, "≤ 25 MB", format!("{mb:.1} MB"), *bytes <= 25_000_000));
        }
        budgets
    }

    /// The generated part of BENCHMARKS.md.
    fn markdown(&self) -> String {
        let mut md = format!("{}\n\n", self.header);
        md += "| target | call | c | req/s | × baseline | p50 ms | p99 ms | p99 × baseline | CPU s / 10k req | peak RSS MiB |\n";
        md += "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n";
        for row in &self.rows {
            let (m, ratio, p99_ratio) = (&row.medians, row.ratio, row.p99_ratio);
            let (server, run, c, cpu) = (m.server, m.run, m.concurrency, m.cpu_per_10k);
            let label = match server.baseline() {
                true => format!("**{}** (baseline)", server.label()),
                false => server.label(),
            };
            let (call, per_second) = (server.call().name(), run.per_second);
            let (p50, p99) = (run.p50_ms, run.p99_ms);
            let rss = m.peak_rss_mib.iter().map(|mib| format!("{mib:.1}"));
            let rss = rss.collect::<Vec<_>>().join(" + ");
            let _ = writeln!(
                md,
                "| {label} | {call} | {c} | {per_second:.0} | {ratio:.2} | {p50:.3} | {p99:.3} | {p99_ratio:.2} | {cpu:.3} | {rss} |"
            );
        }
        md += "\nPeak RSS of a chain is each process's, front first; CPU is the sum of its processes.\n\n";
        md += "| service | exec to SERVING ms | idle RSS MiB |\n|---|--:|--:|\n";
        for startup in &self.startups {
            let (service, ms, rss) = (startup.service, startup.serving_ms, startup.idle_rss_mib);
            let _ = writeln!(md, "| {service} | {ms:.1} | {rss:.1} |");
        }
        md += "\n| binary | stripped size MB |\n|---|--:|\n";
        for (binary, bytes) in &self.sizes {
            let _ = writeln!(md, "| {binary} | {:.2} |", *bytes as f64 / 1e6);
        }
        md += "\n| budget | limit | measured | |\n|---|---|---|---|\n";
        for (what, limit, measured, met) in self.budgets() {
            let verdict = if met { "met" } else { "**missed**" };
            let _ = writeln!(md, "| {what} | {limit} | {measured} | {verdict} |");
        }
        md
    }

    /// What the plot script reads: each server's medians by concurrency.
    fn plot_json(&self, title: String) -> serde_json::Value {
        let same_server = |a: &Row, b: &Row| a.medians.server == b.medians.server;
        let targets = self.rows.chunk_by(same_server).map(|rows| {
            let server = rows[0].medians.server;
            let points = rows.iter().map(|row| {
                let (run, concurrency) = (row.medians.run, row.medians.concurrency);
                let (p50_ms, p99_ms, per_second) = (run.p50_ms, run.p99_ms, run.per_second);
                json!({ "concurrency": concurrency, "p50_ms": p50_ms, "p99_ms": p99_ms, "per_second": per_second })
            });
            let (label, call, baseline) = (server.label(), server.call().name(), server.baseline());
            json!({ "label": label, "call": call, "baseline": baseline, "points": points.collect::<Vec<_>>() })
        });
        json!({ "title": title, "targets": targets.collect::<Vec<_>>() })
    }
}

/// The table and the plot of what was measured (samples, startups, the load average before),
/// into BENCHMARKS.md and docs/ or under the target dir.
pub fn write(
    tools: &Tools,
    settings: &BenchArgs,
    target_dir: &Path,
    (samples, startups, before): (Vec<Sample>, Vec<Startup>, String),
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (work, root) = (target_dir.join("bench"), workspace::root());
    let sizes = ["recommendations", "marketplace"]
        .map(|binary| Ok((binary, stripped_size(target_dir, binary)?)));
    let sizes = sizes.into_iter().collect::<anyhow::Result<_>>()?;
    let (date, machine) = (measure::utc_minute() + " UTC", measure::machine());
    let after = measure::load_average();
    let (command, rounds) = (workspace::command_line(), settings.rounds);
    let header = format!(
        "Measured {date} on {machine} (load average {before} before, {after} after), `{command}`: \
         {rounds} interleaved round(s), medians; ratios are to the baseline of \
         the same call at the same concurrency, in the same run."
    );
    let rows = rows(&SERVERS, &samples, &CONCURRENCIES);
    let report = Report {
        header,
        rows,
        startups,
        sizes,
    };
    let markdown = report.markdown();
    println!("{markdown}");

    let json = work.join("results.json");
    let plot_json = report.plot_json(format!("{date} · {machine}"));
    fs::write(&json, serde_json::to_vec_pretty(&plot_json)?)?;
    fs::write(work.join("results.md"), &markdown)?;
    let (document, plot) = match settings.no_update {
        false => (root.join("BENCHMARKS.md"), root.join("docs/bench.png")),
        true => (work.join("BENCHMARKS.md"), work.join("bench.png")),
    };
    let script = root.join("bench/plot.py");
    workspace::run(tools.command("python")?.arg(script).arg(&json).arg(&plot))?;
    benchmarks::update(&document, "bench", "", |_| markdown)?;
    Ok((document, plot))
}

fn stripped_size(target_dir: &Path, binary: &str) -> anyhow::Result<u64> {
    let copy = target_dir.join("bench").join(binary);
    fs::copy(target_dir.join("release").join(binary), &copy)?;
    workspace::run(std::process::Command::new("strip").arg(&copy))?;
    Ok(fs::metadata(&copy)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_to_the_baseline_of_the_same_call() {
        let servers = [
            Server::BareTonic,
            Server::Recommendations(PROD),
            Server::BareChain,
        ];
        let sample = |server, per_second, p99_ms| Sample {
            server,
            concurrency: 64,
            run: Run {
                per_second,
                p50_ms: 1.0,
                p99_ms,
            },
            cpu_per_10k: 1.0,
            peak_rss_mib: vec![10.0],
        };
        let samples = [
            sample(servers[0], 100.0, 2.0),
            sample(servers[0], 300.0, 2.0),
            sample(servers[1], 180.0, 3.0),
            sample(servers[2], 50.0, 1.0),
        ];
        let rows = rows(&servers, &samples, &[64]);
        assert_eq!(rows[1].ratio, 180.0 / 200.0);
        assert_eq!(rows[1].p99_ratio, 1.5);
        assert_eq!(rows[2].ratio, 1.0);
    }
}
