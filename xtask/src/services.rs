//! The servers `bench` and `soak` run on loopback (the services on ports picked here, the
//! baselines on those their `listening` line names), and what is read from them.

use crate::process::{Output, Process};
use anyhow::{Context, ensure};
use std::{net::SocketAddr, path::PathBuf, time::Duration};
use tokio::process::Command;

/// JSON logs and no shutdown delay (nothing drains on loopback), for every start of a service.
pub const LOOPBACK: [(&str, &str); 2] = [("LOG_FORMAT", "json"), ("SHUTDOWN_DELAY_SECONDS", "0")];

/// What a degraded page says (docs/design.md: the "unavailable" notice).
const DEGRADED: &str = "recommendations are unavailable";

pub struct Service {
    pub process: Process,
    /// The gRPC listener of recommendations, the page listener of the marketplace.
    pub main: SocketAddr,
    /// None for a baseline, which has no admin listener.
    pub admin: Option<SocketAddr>,
}

/// `binary`, with nothing of the caller's environment (`OTEL_*` above all): each
/// process of the bench and the soak gets only its own settings.
pub fn command(binary: PathBuf) -> Command {
    let mut command = Command::new(binary);
    command.env_clear();
    command
}

impl Service {
    /// Starts a service on ports picked here (at `RUST_LOG=warn` it logs no `listening`).
    pub async fn start(
        name: &str,
        command: &mut Command,
        main_port: &str,
        output: Output,
    ) -> anyhow::Result<Self> {
        let (main, admin) = (free_port()?, free_port()?);
        let ports = [(main_port, main.port()), ("ADMIN_PORT", admin.port())];
        command
            .envs(ports.map(|(key, port)| (key, port.to_string())))
            .envs(LOOPBACK);
        let mut process = Process::spawn(name, command, output)?;
        process.ready(admin).await?;
        let admin = Some(admin);
        Ok(Self {
            process,
            main,
            admin,
        })
    }

    /// Starts a process that logs the port it bound as `field` of its `listening` line.
    pub async fn listening(name: &str, command: &mut Command, field: &str) -> anyhow::Result<Self> {
        let mut process = Process::spawn(name, command, Output::Counted)?;
        let line = process.listening().await?;
        let logged: SocketAddr = line[field]
            .as_str()
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("no {field} in the listening line {line}"))?;
        let (main, admin) = (SocketAddr::from(([127, 0, 0, 1], logged.port())), None);
        Ok(Self {
            process,
            main,
            admin,
        })
    }

    /// The marketplace's settings that make it call this recommendations.
    pub fn upstream(&self) -> [(&'static str, String); 2] {
        [
            ("RECOMMENDATIONS_HOST", self.main.ip().to_string()),
            ("RECOMMENDATIONS_PORT", self.main.port().to_string()),
        ]
    }

    /// The degraded pages a marketplace served, as it counts them itself.
    pub async fn fallbacks(&self) -> anyhow::Result<f64> {
        let admin = self.admin.context("no admin listener")?;
        let url = format!("http://{admin}/metrics");
        let answer = http_client().build()?.get(&url).send().await;
        let answer = answer.and_then(reqwest::Response::error_for_status);
        let metrics = answer.with_context(|| format!("GET {url}"))?.text().await?;
        counter(&metrics, "marketplace_recommendations_fallback_total")
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// An HTTP client for loopback: no proxy, a bound on every request.
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
}

/// One page: full (`true`) or degraded (`false`); an error for anything else.
pub async fn page(client: &reqwest::Client, url: &str) -> anyhow::Result<bool> {
    let response = client.get(url).send().await?;
    let status = response.status();
    let html = response.text().await.context("reading the page")?;
    ensure!(status == reqwest::StatusCode::OK, "{status}");
    full_page(&html)
}

/// A page: `true` with its three books, `false` degraded, an error otherwise.
fn full_page(html: &str) -> anyhow::Result<bool> {
    if html.contains(DEGRADED) {
        return Ok(false);
    }
    let books = html.matches("<li").count();
    ensure!(books == 3, "{books} books on the page, not 3");
    Ok(true)
}

/// A Prometheus counter summed over its labels.
fn counter(metrics: &str, name: &str) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix(name)
            && (rest.starts_with('{') || rest.starts_with(' '))
        {
            let value = rest.rsplit(' ').next().unwrap_or_default().parse::<f64>();
            total += value.with_context(|| format!("unexpected metrics line {line:?}"))?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_summed_over_its_labels_and_a_page_read_for_its_books() {
        let metrics = "# HELP x\nx_total{reason=\"a\"} 2\nx_total{reason=\"b\"} 1.5\nx_totals 9\n";
        assert_eq!(counter(metrics, "x_total").unwrap(), 3.5);
        assert!(full_page("<ul><li>a</li><li>b</li><li>c</li></ul>").unwrap());
        assert!(!full_page("Sorry, recommendations are unavailable right now.").unwrap());
        assert!(full_page("<ul><li>a</li></ul>").is_err());
    }
}
