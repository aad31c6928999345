//! The two services as the soak runs them: the release binaries on loopback
//! ports they choose themselves (read back from their "listening" log line),
//! waited on until ready, sampled through /proc, stopped with SIGTERM.

use super::report::Usage;
use crate::procfs;
use anyhow::{Context, bail};
use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// How long a service gets to start listening, to get ready, and to stop.
const START_BOUND: Duration = Duration::from_secs(30);
const STOP_BOUND: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

pub struct Service {
    name: &'static str,
    child: Child,
    pid: u32,
    log: PathBuf,
    /// The gRPC listener of recommendations, the page listener of the marketplace.
    pub main_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Service {
    pub async fn start_recommendations(bin_dir: &Path, log_dir: &Path) -> anyhow::Result<Self> {
        let settings = [("GRPC_PORT", "0".to_owned())];
        Self::start("recommendations", "grpc_addr", bin_dir, log_dir, &settings).await
    }

    pub async fn start_marketplace(
        bin_dir: &Path,
        log_dir: &Path,
        upstream: SocketAddr,
    ) -> anyhow::Result<Self> {
        let settings = [
            ("HTTP_PORT", "0".to_owned()),
            ("RECOMMENDATIONS_HOST", upstream.ip().to_string()),
            ("RECOMMENDATIONS_PORT", upstream.port().to_string()),
        ];
        Self::start("marketplace", "http_addr", bin_dir, log_dir, &settings).await
    }

    /// Starts `name` with only `settings` and the soak's own (nothing from the
    /// caller's environment), its output in `<log_dir>/<name>.log`, and waits
    /// until it is ready.
    async fn start(
        name: &'static str,
        main_field: &str,
        bin_dir: &Path,
        log_dir: &Path,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let binary = bin_dir.join(name);
        let log = log_dir.join(format!("{name}.log"));
        let output =
            fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&binary)
            .env_clear()
            .envs(settings.iter().map(|(key, value)| (key, value)))
            .env("ADMIN_PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // No load balancer to drain on loopback.
            .env("SHUTDOWN_DELAY_SECONDS", "0")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let mut service = Self {
            name,
            child,
            pid,
            log,
            main_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let listening = service.wait_until_listening().await?;
        service.main_addr = loopback(&listening, main_field)?;
        service.admin_addr = loopback(&listening, "admin_addr")?;
        service.wait_until_ready().await?;
        eprintln!(
            "xtask: {name} (pid {pid}) is ready on {}, admin {}",
            service.main_addr, service.admin_addr
        );
        Ok(service)
    }

    /// The "listening" log line, once written.
    async fn wait_until_listening(&mut self) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        loop {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            let listening = text
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|line| line["message"] == "listening");
            if let Some(line) = listening {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening; its output, {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&text)
                );
            }
            if started.elapsed() > START_BOUND {
                bail!(
                    "{} logged no \"listening\" line within {START_BOUND:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.admin_addr);
        let client = client()?;
        let started = Instant::now();
        loop {
            let status = client.get(&url).send().await.map(|answer| answer.status());
            if matches!(&status, Ok(status) if status.is_success()) {
                return Ok(());
            }
            if started.elapsed() > START_BOUND {
                bail!(
                    "{} was not ready within {START_BOUND:?} (last {url}: {status:?}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resident memory and open descriptors now; an error once the process
    /// has exited (an exited child is a zombie: no VmRSS, no fd entries).
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let exited = || {
            format!(
                "{} (pid {}) is no longer running; see {}",
                self.name,
                self.pid,
                self.log.display()
            )
        };
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(exited)
            .context("the soak reads /proc: it runs on Linux only")?;
        let rss_kib = procfs::kib_field(&status, "VmRSS:").with_context(exited)?;
        let fds = fs::read_dir(format!("/proc/{}/fd", self.pid))
            .with_context(exited)?
            .count();
        Ok(Usage { rss_kib, fds })
    }

    /// The marketplace's `marketplace_recommendations_fallback_total`, all
    /// reasons: the degraded pages it served, as it counts them itself.
    pub async fn fallbacks(&self) -> anyhow::Result<f64> {
        let url = format!("http://{}/metrics", self.admin_addr);
        let metrics = client()?
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot read {url}"))?
            .text()
            .await?;
        let mut total = 0.0;
        for line in metrics.lines() {
            if let Some(rest) = line.strip_prefix("marketplace_recommendations_fallback_total")
                && (rest.starts_with('{') || rest.starts_with(' '))
            {
                let value = rest.rsplit(' ').next().unwrap_or_default();
                total += value
                    .parse::<f64>()
                    .with_context(|| format!("unexpected metrics line {line:?}"))?;
            }
        }
        Ok(total)
    }

    /// SIGTERM, as Kubernetes stops a pod (through kill(1): xtask forbids
    /// `unsafe`); the process must exit 0 within [`STOP_BOUND`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} ({}) failed", self.pid, self.name);
        }
        match tokio::time::timeout(STOP_BOUND, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!(
                        "{} exited with {status} on SIGTERM; see {}",
                        self.name,
                        self.log.display()
                    );
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not exit within {STOP_BOUND:?} of SIGTERM (killed); see {}",
                    self.name,
                    self.log.display()
                )
            }
        }
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")
}

/// The loopback address of a listener logged as `0.0.0.0:<port>`.
fn loopback(listening: &serde_json::Value, field: &str) -> anyhow::Result<SocketAddr> {
    let logged: SocketAddr = listening[field]
        .as_str()
        .and_then(|addr| addr.parse().ok())
        .with_context(|| format!("no {field} in the listening line {listening}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], logged.port())))
}

/// The last lines of a log, to show with an error.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
