//! The soak's measurement: its verdict, its table, and its row in
//! BENCHMARKS.md's "Soak" section (the last runs, newest first).

use super::{
    FD_TOLERANCE, MAX_RSS_GROWTH,
    load::{Counts, MAX_IN_FLIGHT},
};
use crate::{benchmarks, measure};
use std::{fmt, path::Path, time::Duration};

/// A service's resident memory and open file descriptors at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: usize,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} RSS, {} fds", mib(self.rss_kib), self.fds)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub struct Measured {
    pub duration: Duration,
    pub rate: u32,
    pub counts: Counts,
    /// The marketplace's own count of degraded pages.
    pub fallbacks: f64,
    /// (service, after warm-up, at the end), the marketplace first.
    pub usage: [(&'static str, Usage, Usage); 2],
}

fn growth(start: Usage, end: Usage) -> f64 {
    (end.rss_kib as f64 - start.rss_kib as f64) / start.rss_kib.max(1) as f64
}

/// `12.0 MiB → 12.5 MiB (+4.2%), 20 → 21 fds`
fn change(start: Usage, end: Usage) -> String {
    let (from, to) = (mib(start.rss_kib), mib(end.rss_kib));
    let (growth, fds, end_fds) = (growth(start, end) * 100.0, start.fds, end.fds);
    format!("{from} → {to} ({growth:+.1}%), {fds} → {end_fds} fds")
}

impl Measured {
    /// Every way the run fell short, in words; none for a pass.
    pub fn failures(&self) -> Vec<String> {
        let (c, fallbacks) = (&self.counts, self.fallbacks);
        let mut failures = Vec::new();
        if c.errors > 0 {
            let first = c.first_errors.join("; ");
            failures.push(format!("{} failed page loads, first: {first}", c.errors));
        }
        if c.degraded > 0 || fallbacks > 0.0 {
            let seen = c.degraded;
            failures.push(format!(
                "{seen} degraded pages seen, {fallbacks} counted by the marketplace"
            ));
        }
        if c.skipped > 0 {
            let skipped = c.skipped;
            failures.push(format!(
                "the rate was not held: {skipped} ticks found {MAX_IN_FLIGHT} requests in flight already"
            ));
        }
        for (name, start, end) in self.usage {
            let growth = growth(start, end);
            if growth >= MAX_RSS_GROWTH {
                failures.push(format!(
                    "{name}: resident memory grew {:.1}% after warm-up ({} to {}), {:.0}% allowed",
                    growth * 100.0,
                    mib(start.rss_kib),
                    mib(end.rss_kib),
                    MAX_RSS_GROWTH * 100.0
                ));
            }
            if (end.fds as i64 - start.fds as i64).abs() > FD_TOLERANCE {
                failures.push(format!(
                    "{name}: open file descriptors went from {} to {} (±{FD_TOLERANCE} allowed)",
                    start.fds, end.fds
                ));
            }
        }
        failures
    }

    pub fn verdict(&self) -> anyhow::Result<()> {
        match self.failures().as_slice() {
            [] => Ok(()),
            failures => anyhow::bail!("the soak failed:\n  {}", failures.join("\n  ")),
        }
    }

    pub fn table(&self) -> String {
        let (c, seconds, rate) = (&self.counts, self.duration.as_secs(), self.rate);
        let (p50, p99, max) = (c.latency_ms(0.50), c.latency_ms(0.99), c.latency_ms(1.0));
        let (sent, answered, fallbacks) = (c.sent, c.answered, self.fallbacks);
        let (errors, degraded, skipped) = (c.errors, c.degraded, c.skipped);
        let mut table = format!(
            "soak: {seconds} s at {rate} pages/s: {sent} sent, {answered} answered, {errors} errors, {degraded} degraded ({fallbacks} counted by the marketplace), {skipped} ticks skipped; latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms\n\n"
        );
        table += "| service | RSS and fds, after warm-up → at end |\n|---|---|\n";
        for (name, start, end) in self.usage {
            table += &format!("| {name} | {} |\n", change(start, end));
        }
        table += &match self.failures().as_slice() {
            [] => "\nresult: pass".to_owned(),
            failures => format!("\nresult: FAIL\n  {}", failures.join("\n  ")),
        };
        table
    }

    fn row(&self, date: &str, machine: &str) -> String {
        let (c, seconds, rate) = (&self.counts, self.duration.as_secs(), self.rate);
        let (sent, errors, degraded) = (c.sent, c.errors, c.degraded);
        let (p50, p99) = (c.latency_ms(0.50), c.latency_ms(0.99));
        let [marketplace, recommendations] = self.usage.map(|(_, start, end)| change(start, end));
        let passed = self.failures().is_empty();
        let result = if passed { "pass" } else { "**fail**" };
        format!(
            "| {date} | {machine} | {seconds} s | {rate}/s | {sent} | {errors} | {degraded} | {p50:.2} / {p99:.2} | {marketplace} | {recommendations} | {result} |"
        )
    }
}

const ROWS_KEPT: usize = 10;

/// The section's heading when BENCHMARKS.md has none yet (its prose is written there).
const SECTION: &str = "## Soak\n\n";

const HEADER: &str = "| date (UTC) | machine | duration | rate | requests | errors | degraded | p50 / p99 ms | marketplace RSS, fds | recommendations RSS, fds | result |\n|---|---|--:|--:|--:|--:|--:|--:|---|---|---|\n";

/// Adds this run's row to the soak table of `document` (created if missing).
pub fn record(document: &Path, measured: &Measured) -> anyhow::Result<()> {
    let row = measured.row(&measure::utc_minute(), &measure::machine());
    benchmarks::update(document, "soak", SECTION, |old| table(old, &row))
}

/// `row` first, then the newest of the `old` table's rows.
fn table(old: &str, row: &str) -> String {
    let old_rows = old.lines().filter(|line| line.starts_with("| 2"));
    let rows: Vec<&str> = std::iter::once(row)
        .chain(old_rows)
        .take(ROWS_KEPT)
        .collect();
    format!("{HEADER}{}\n", rows.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(marketplace_end: Usage) -> Measured {
        let start = Usage {
            rss_kib: 10_000,
            fds: 20,
        };
        Measured {
            duration: Duration::from_secs(60),
            rate: 200,
            counts: Counts {
                sent: 12_000,
                answered: 12_000,
                ..Counts::default()
            },
            fallbacks: 0.0,
            usage: [
                ("marketplace", start, marketplace_end),
                ("recommendations", start, start),
            ],
        }
    }

    #[test]
    fn flat_memory_and_descriptors_pass_and_growth_past_the_limits_fails() {
        let flat = Usage {
            rss_kib: 10_900,
            fds: 28,
        };
        assert!(measured(flat).failures().is_empty());
        let grown = Usage {
            rss_kib: 11_000,
            fds: 29,
        };
        let failures = measured(grown).failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].starts_with("marketplace: resident memory grew 10.0%"));
        assert!(failures[1].contains("from 20 to 29"));
    }

    #[test]
    fn errors_degraded_pages_and_skipped_ticks_fail() {
        let mut run = measured(Usage {
            rss_kib: 10_000,
            fds: 20,
        });
        run.counts.errors = 1;
        run.counts.first_errors = vec!["/: 503".into()];
        run.fallbacks = 2.0;
        run.counts.skipped = 3;
        let failures = run.failures();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("/: 503"));
        assert!(failures[1].contains("2 counted by the marketplace"));
        assert!(failures[2].contains("3 ticks"));
    }

    fn splice(document: &str, row: &str) -> String {
        benchmarks::splice(document, "soak", SECTION, |old| table(old, row))
    }

    #[test]
    fn rows_go_first_into_the_section_which_is_created_once_and_keeps_ten() {
        let created = splice("", "| 2026-01-01 | a |");
        assert!(
            created.starts_with("# Benchmarks\n\n## Soak\n"),
            "{created}"
        );
        let bench = "# Benchmarks\n\nbench text\n";
        let appended = splice(bench, "| 2026-01-01 | a |");
        assert!(appended.starts_with(bench), "{appended}");
        assert_eq!(appended.matches("## Soak").count(), 1);

        let mut document = appended;
        for day in 2..=12 {
            document = splice(&document, &format!("| 2026-01-{day:02} | a |"));
        }
        assert_eq!(document.matches("## Soak").count(), 1);
        let rows: Vec<&str> = document.lines().filter(|l| l.starts_with("| 2")).collect();
        assert_eq!(rows.len(), ROWS_KEPT);
        assert_eq!(rows[0], "| 2026-01-12 | a |");
        assert_eq!(rows[9], "| 2026-01-03 | a |");
        assert!(document.starts_with(bench));
        assert!(
            document.ends_with("<!-- cargo xtask soak: end -->\n"),
            "{document}"
        );
    }
}
