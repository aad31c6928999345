//! What Linux says about a process under load (CPU time, resident memory now
//! and at its peak, which `clear_refs` resets so each bench scenario gets its
//! own, open descriptors) and about the machine, and the statistics over it.

use anyhow::Context;
use procfs::{
    Current,
    process::{ClearRefs, Process},
};

fn process(pid: u32) -> anyhow::Result<Process> {
    Process::new(pid as i32).with_context(|| format!("process {pid} is not running"))
}

/// CPU seconds (user + system) `pid` has used so far, all its threads included.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = process(pid)?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// Starts a new peak: VmHWM becomes the current RSS.
pub fn reset_peak(pid: u32) -> anyhow::Result<()> {
    let reset = process(pid)?.clear_refs(ClearRefs::PeakRSS);
    reset.with_context(|| format!("cannot reset the peak RSS of process {pid}"))
}

/// The peak resident set since the last [`reset_peak`], in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let peak = process(pid)?.status()?.vmhwm;
    peak.with_context(|| format!("no VmHWM for process {pid}"))
}

/// Resident memory in KiB and open descriptors; an error once it has exited (a zombie).
pub fn usage(pid: u32) -> anyhow::Result<(u64, usize)> {
    let process = process(pid)?;
    let rss = process.status()?.vmrss.context("no VmRSS: exited")?;
    Ok((rss, process.fd_count()?))
}

/// The machine, as BENCHMARKS.md names it: CPU count and model, memory.
pub fn machine() -> String {
    let info = procfs::CpuInfo::current().ok();
    let model = info.as_ref().and_then(|info| info.model_name(0));
    let memory = procfs::Meminfo::current().map_or(0, |info| info.mem_total);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let gib = memory as f64 / f64::from(1 << 30);
    format!("{cpus} × {}, {gib:.0} GiB", model.unwrap_or("unknown CPU"))
}

/// The time now in UTC, to the minute (`2026-12-01 15:03`).
pub fn utc_minute() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now[..16].replace('T', " ")
}

/// The 1-minute load average: how busy the machine was besides the bench.
pub fn load_average() -> String {
    procfs::LoadAverage::current().map_or_else(|_| "?".into(), |load| format!("{:.2}", load.one))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The nearest-rank quantile of sorted latencies in µs, in ms (0 for none).
pub fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).max(1);
    sorted_us
        .get(rank - 1)
        .map_or(0.0, |&us| us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        let pid = std::process::id();
        // Burn a little CPU so that at least one tick is counted.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds(pid).unwrap() > 0.0);
        reset_peak(pid).unwrap();
        assert!(peak_rss_kib(pid).unwrap() > 100);
        assert!(usage(pid).unwrap().1 > 2);
        assert!(machine().contains(" GiB"), "{}", machine());
    }

    #[test]
    fn medians_and_nearest_rank_quantiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        let micros: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&micros, 0.5), 50.0);
        assert_eq!(quantile_ms(&micros, 0.99), 99.0);
        assert_eq!(quantile_ms(&micros, 1.0), 100.0);
        assert_eq!(quantile_ms(&[7000], 0.99), 7.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }
}
