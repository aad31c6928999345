//! The processes under test, each started once for the whole run, and the
//! OTLP sink that receives their spans.

use super::{
    load::{Call, H2load},
    report::{Sample, Startup},
};
use crate::{
    measure,
    process::{self, Output},
    services::{self, Service},
};
use anyhow::{Context, ensure};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};
use tokio::process::Command;

/// How a service's telemetry is set; the label is the table's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telemetry {
    pub label: &'static str,
    pub rust_log: &'static str,
    pub traces: Traces,
}

/// What becomes of a service's spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Traces {
    /// Exported to the sink, sampled by `OTEL_TRACES_SAMPLER` and its argument.
    Exported(&'static str, &'static str),
    /// No exporter is set: each call gets its ids and sampling decision, no span is recorded.
    NotExported,
    /// `OTEL_SDK_DISABLED=true`: no spans at all.
    Off,
}

/// The prod overlay's settings: info logs, 10% parent-based sampling.
pub const PROD: Telemetry = Telemetry {
    label: "info logs, OTLP 10%",
    rust_log: "info",
    traces: Traces::Exported("parentbased_traceidratio", "0.1"),
};

impl Telemetry {
    fn env(&self, sink: SocketAddr) -> Vec<(&'static str, String)> {
        let mut env = vec![("RUST_LOG", self.rust_log.to_owned())];
        match self.traces {
            Traces::Exported(sampler, ratio) => env.extend([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{sink}")),
                ("OTEL_TRACES_SAMPLER", sampler.to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG", ratio.to_owned()),
            ]),
            Traces::NotExported => {}
            Traces::Off => env.push(("OTEL_SDK_DISABLED", "true".to_owned())),
        }
        env
    }
}

/// A process the load goes to, or through; a row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Server {
    BareTonic,
    BareAxum,
    /// Bare axum calling bare tonic for each page.
    BareChain,
    Recommendations(Telemetry),
    /// The marketplace calling a recommendations with the same settings.
    Marketplace(Telemetry),
}

impl Server {
    pub fn call(self) -> Call {
        match self {
            Server::BareTonic | Server::Recommendations(_) => Call::Recommend,
            _ => Call::Page,
        }
    }

    /// What the others of its call are divided by.
    pub fn baseline(self) -> bool {
        matches!(self, Server::BareTonic | Server::BareChain)
    }

    pub fn label(self) -> String {
        match self {
            Server::BareTonic => "bare tonic".into(),
            Server::BareAxum => "bare axum, fixed list".into(),
            Server::BareChain => "bare axum → bare tonic".into(),
            Server::Recommendations(telemetry) => format!("recommendations: {}", telemetry.label),
            Server::Marketplace(t) => format!("marketplace → recommendations: {}", t.label),
        }
    }

    /// It and the servers it calls, front first.
    fn chain(self) -> Vec<Server> {
        match self {
            Server::BareChain => vec![self, Server::BareTonic],
            Server::Marketplace(telemetry) => vec![self, Server::Recommendations(telemetry)],
            _ => vec![self],
        }
    }
}

/// Every server the rows need, and the OTLP sink.
pub struct Fleet {
    bin_dir: PathBuf,
    pub sink: Service,
    running: Vec<(Server, Service)>,
}

impl Fleet {
    /// Starts the sink, then the chain of each of `servers`, upstreams first.
    pub async fn start(bin_dir: &Path, servers: &[Server]) -> anyhow::Result<Self> {
        let mut sink = services::command(bin_dir.join("bench-tool"));
        let sink = Service::listening("otlp sink", sink.arg("otlp-sink"), "grpc_addr").await?;
        let mut fleet = Fleet {
            bin_dir: bin_dir.to_path_buf(),
            sink,
            running: Vec::new(),
        };
        for server in servers.iter().flat_map(|s| s.chain().into_iter().rev()) {
            if fleet.find(server).is_err() {
                let service = fleet.start_one(server).await?;
                fleet.running.push((server, service));
            }
        }
        Ok(fleet)
    }

    pub fn find(&self, server: Server) -> anyhow::Result<&Service> {
        let mut running = self.running.iter();
        let found = running.find_map(|(s, service)| (*s == server).then_some(service));
        found.with_context(|| format!("{server:?} was not started"))
    }

    async fn start_one(&self, server: Server) -> anyhow::Result<Service> {
        let name = server.label();
        let (binary, main_port, telemetry) = match server {
            Server::BareTonic => {
                let mut bare = services::command(self.bin_dir.join("bare-tonic"));
                return Service::listening(&name, &mut bare, "grpc_addr").await;
            }
            Server::BareAxum | Server::BareChain => {
                let mut bare = services::command(self.bin_dir.join("bare-axum"));
                if server == Server::BareChain {
                    let upstream = self.find(Server::BareTonic)?.main;
                    bare.args(["--upstream", &format!("http://{upstream}")]);
                }
                return Service::listening(&name, &mut bare, "http_addr").await;
            }
            Server::Recommendations(t) => ("recommendations", "GRPC_PORT", t),
            Server::Marketplace(t) => ("marketplace", "HTTP_PORT", t),
        };
        let mut command = services::command(self.bin_dir.join(binary));
        command.envs(telemetry.env(self.sink.main));
        if let Server::Marketplace(t) = server {
            command.envs(self.find(Server::Recommendations(t))?.upstream());
        }
        Service::start(&name, &mut command, main_port, Output::Counted).await
    }

    /// One scenario: the load, the CPU and peak memory of `server`'s chain, which must still
    /// run and answer afterwards.
    pub async fn sample(
        &mut self,
        server: Server,
        h2load: &H2load,
        concurrency: usize,
        requests: usize,
    ) -> anyhow::Result<Sample> {
        let chain = server.chain();
        let pids = chain.iter().map(|&s| Ok(self.find(s)?.process.pid));
        let pids = pids.collect::<anyhow::Result<Vec<u32>>>()?;
        let cpu = || -> anyhow::Result<f64> { pids.iter().map(|&p| measure::cpu_seconds(p)).sum() };
        for &pid in &pids {
            measure::reset_peak(pid)?;
        }
        let (call, addr, cpu_before) = (server.call(), self.find(server)?.main, cpu()?);
        let run = h2load.run(call, addr, concurrency, requests).await?;
        let cpu_per_10k = (cpu()? - cpu_before) / requests as f64 * 10_000.0;
        let peak_rss_kib = pids.iter().map(|&pid| measure::peak_rss_kib(pid));
        let peak_rss_mib = peak_rss_kib.map(|kib| Ok(kib? as f64 / 1024.0));
        let peak_rss_mib = peak_rss_mib.collect::<anyhow::Result<_>>()?;
        for (_, service) in self.running.iter_mut().filter(|(s, _)| chain.contains(s)) {
            service.process.alive()?;
        }
        let checked = self.check_answers(call, addr).await;
        checked.with_context(|| format!("checking {}'s answers", server.label()))?;
        Ok(Sample {
            server,
            concurrency,
            run,
            cpu_per_10k,
            peak_rss_mib,
        })
    }

    /// No marketplace showed a degraded page, and the info-level services really logged a
    /// line per call and exported spans (else the comparison would be unfair).
    pub async fn check(&self, lines_at_least: u64) -> anyhow::Result<()> {
        for (server, service) in &self.running {
            if let Server::Marketplace(_) = server {
                let (fallbacks, name) = (service.fallbacks().await?, &service.process.name);
                ensure!(
                    fallbacks == 0.0,
                    "{name} showed {fallbacks} pages without recommendations"
                );
            }
        }
        let rec_lines = self.find(Server::Recommendations(PROD))?.process.lines();
        let spans: serde_json::Value =
            serde_json::from_str(&self.sink.process.last_line()).unwrap_or_default();
        let spans = spans["spans"].as_u64().unwrap_or(0);
        eprintln!(
            "bench: recommendations (info) wrote {rec_lines} log lines; the OTLP sink received {spans} spans"
        );
        ensure!(
            rec_lines >= lines_at_least,
            "recommendations at info level wrote only {rec_lines} lines: are access lines off?"
        );
        ensure!(spans > 0, "no span reached the OTLP sink");
        Ok(())
    }

    /// Some answers read by real clients (h2load cannot read the grpc-status trailer).
    async fn check_answers(&self, call: Call, addr: SocketAddr) -> anyhow::Result<()> {
        match call {
            Call::Recommend => {
                let mut check = Command::new(self.bin_dir.join("bench-tool"));
                let addr = format!("http://{addr}");
                check.args(["check", "--calls", "30", "--addr", &addr]);
                process::stdout(&mut check).await?;
            }
            Call::Page => {
                let (client, url) = (services::http_client().build()?, format!("http://{addr}/"));
                for _ in 0..5 {
                    let full = services::page(&client, &url).await;
                    let full = full.with_context(|| format!("GET {url}"))?;
                    ensure!(full, "GET / showed the fallback notice");
                }
            }
        }
        Ok(())
    }

    /// exec to SERVING and idle RSS, medians of `runs` fresh starts with the prod settings.
    pub async fn startup(&self, service: &'static str, runs: usize) -> anyhow::Result<Startup> {
        let mut startup = Command::new(self.bin_dir.join("bench-tool"));
        startup
            .args(["startup", "--service", service, "--runs", &runs.to_string()])
            .arg("--bin")
            .arg(self.bin_dir.join(service))
            .envs(services::LOOPBACK)
            .envs(PROD.env(self.sink.main));
        if service == "marketplace" {
            startup.envs(self.find(Server::Recommendations(PROD))?.upstream());
        }
        let figures: serde_json::Value =
            serde_json::from_str(&process::stdout(&mut startup).await?)?;
        let median = |key: &str| -> anyhow::Result<f64> {
            let numbers = figures[key].as_array();
            let numbers = numbers.with_context(|| format!("no {key} from bench-tool startup"))?;
            let numbers = numbers.iter().map(|n| n.as_f64().context("not a number"));
            Ok(measure::median(numbers.collect::<anyhow::Result<_>>()?))
        };
        let (serving_ms, idle_rss_mib) = (median("serving_ms")?, median("idle_rss_kib")? / 1024.0);
        eprintln!(
            "bench: {service}: exec to SERVING {serving_ms:.1} ms, idle RSS {idle_rss_mib:.1} MiB (medians of {runs})"
        );
        Ok(Startup {
            service,
            serving_ms,
            idle_rss_mib,
        })
    }
}
