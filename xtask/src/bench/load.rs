//! One load run with h2load: a fixed number of requests at a fixed
//! concurrency, inside a time bound. h2load's summary gives the rate and the
//! success counts; its per-request log gives the latency quantiles.

use crate::measure::quantile_ms;
use anyhow::{Context, anyhow, ensure};
use std::{fs, net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};
use tokio::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Recommend over h2c, with the prepared gRPC body.
    Recommend,
    /// `GET /` over HTTP/1.1, as browsers reach the ingress.
    Page,
}

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::Recommend => "Recommend",
            Call::Page => "GET /",
        }
    }
}

const RECOMMEND_PATH: &str = "/recommendations.v1.Recommendations/Recommend";

#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What every run shares.
pub struct H2load {
    pub bound: Duration,
    /// The gRPC-framed Recommend request.
    pub body: PathBuf,
    /// Where h2load writes its per-request log.
    pub log: PathBuf,
}

impl H2load {
    pub async fn run(
        &self,
        call: Call,
        addr: SocketAddr,
        concurrency: usize,
        requests: usize,
    ) -> anyhow::Result<Run> {
        // h2load appends to its log.
        let _ = fs::remove_file(&self.log);
        let mut h2load = Command::new("h2load");
        h2load
            .args(["--requests", &requests.to_string()])
            .args(["--clients", &concurrency.to_string()])
            // One stream per connection: concurrency is the number of callers.
            .args(["--max-concurrent-streams", "1", "--threads", "1"])
            .arg("--log-file")
            .arg(&self.log)
            .stderr(Stdio::inherit());
        match call {
            Call::Recommend => h2load
                .arg("--data")
                .arg(&self.body)
                .args(["--header", "content-type: application/grpc"])
                .args(["--header", "te: trailers"])
                .arg(format!("http://{addr}{RECOMMEND_PATH}")),
            Call::Page => h2load.arg("--h1").arg(format!("http://{addr}/")),
        };
        let bound = self.bound;
        let output = tokio::time::timeout(bound, crate::process::output(&mut h2load))
            .await
            .map_err(|_| anyhow!("h2load did not finish its requests within {bound:?}"))?
            .context("cannot run h2load")?;
        let (text, status) = (String::from_utf8_lossy(&output.stdout), output.status);
        ensure!(status.success(), "h2load failed ({status}):\n{text}");
        let per_second = per_second(&text, requests);
        let per_second = per_second.with_context(|| format!("h2load said:\n{text}"))?;
        let micros = self.latencies_us(requests)?;
        let (p50_ms, p99_ms) = (quantile_ms(&micros, 0.50), quantile_ms(&micros, 0.99));
        Ok(Run {
            per_second,
            p50_ms,
            p99_ms,
        })
    }

    /// From h2load's log (start, status, µs to the end of the response), sorted.
    fn latencies_us(&self, requests: usize) -> anyhow::Result<Vec<u64>> {
        let log = fs::read_to_string(&self.log);
        let log = log.with_context(|| format!("cannot read {}", self.log.display()))?;
        let micros = log.lines().map(|line| {
            let us = line
                .split('\t')
                .nth(2)
                .and_then(|us| us.trim().parse().ok());
            us.with_context(|| format!("a bad h2load log line: {line:?}"))
        });
        let mut micros = micros.collect::<anyhow::Result<Vec<u64>>>()?;
        let logged = micros.len();
        ensure!(
            logged == requests,
            "h2load logged {logged} of {requests} requests"
        );
        micros.sort_unstable();
        Ok(micros)
    }
}

/// The rate from h2load's summary (`finished in 1.23s, 48700.12 req/s, …`), once it says every
/// request succeeded (`requests: … 100 succeeded, …`) with a 2xx (`status codes: 100 2xx, …`).
fn per_second(summary: &str, requests: usize) -> anyhow::Result<f64> {
    // The number before `what` in a comma-separated part of a line.
    let figure = |what: &str| {
        let mut parts = summary.lines().flat_map(|line| line.split(", "));
        let found = parts.find_map(|part| part.strip_suffix(what)?.rsplit(' ').next());
        let found = found.with_context(|| format!("no `{what}` figure"))?;
        found
            .parse::<f64>()
            .with_context(|| format!("a bad `{what}` figure"))
    };
    let (succeeded, ok) = (figure(" succeeded")?, figure(" 2xx")?);
    ensure!(
        succeeded == requests as f64 && ok == requests as f64,
        "{succeeded} of {requests} requests succeeded, {ok} with a 2xx"
    );
    figure(" req/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "\
finished in 1.25s, 48000.00 req/s, 5.12MB/s
requests: 60000 total, 60000 started, 60000 done, 60000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 60000 2xx, 0 3xx, 0 4xx, 0 5xx
";

    #[test]
    fn the_summary_gives_the_rate_when_every_request_succeeded() {
        assert_eq!(per_second(SUMMARY, 60000).unwrap(), 48000.0);
    }

    #[test]
    fn a_failed_request_or_a_non_2xx_fails_the_run() {
        let failed = SUMMARY.replace("60000 succeeded, 0 failed", "59999 succeeded, 1 failed");
        assert!(per_second(&failed, 60000).is_err());
        let not_ok = SUMMARY.replace("60000 2xx, 0 3xx", "59990 2xx, 10 3xx");
        assert!(per_second(&not_ok, 60000).is_err());
        assert!(per_second(SUMMARY, 70000).is_err());
    }
}
