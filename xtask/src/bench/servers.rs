//! The processes under test, each started once for the whole run: the
//! baselines (found by their `listening` line), the services on ports picked
//! here (at warn they print no `listening` line) with the telemetry settings
//! of their target, and the OTLP sink that receives their spans.

use super::{
    load::Call,
    report::{self, Startup},
};
use crate::{
    process::{self, Output, Process, Service},
    procfs, workspace,
};
use anyhow::{Context, ensure};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};
use tokio::process::Command;

/// The OpenTelemetry variables a caller's environment could hold: each
/// process gets exactly the ones its configuration names.
const OTEL_VARIABLES: [&str; 5] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
];

/// How a service's telemetry is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telemetry {
    /// As the table names it.
    pub label: &'static str,
    pub rust_log: &'static str,
    pub traces: Traces,
}

/// What becomes of a service's spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Traces {
    /// Exported to the sink, sampled by `OTEL_TRACES_SAMPLER` and its argument.
    Exported(&'static str, &'static str),
    /// Made, but no exporter is set.
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
    /// The variables that set it, spans exported to `sink`.
    pub fn env(&self, sink: SocketAddr) -> Vec<(&'static str, String)> {
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

/// A process a target's load goes through.
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
    /// What its load is made of.
    pub fn call(self) -> Call {
        match self {
            Server::BareTonic | Server::Recommendations(_) => Call::Recommend,
            _ => Call::Page,
        }
    }

    /// As the table names it.
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
    pub fn chain(self) -> Vec<Server> {
        match self {
            Server::BareChain => vec![self, Server::BareTonic],
            Server::Marketplace(telemetry) => vec![self, Server::Recommendations(telemetry)],
            _ => vec![self],
        }
    }
}

/// A started server and the addresses it answers on.
pub struct Running {
    pub server: Server,
    pub process: Process,
    /// Where the load goes: the gRPC or the page listener.
    pub main: SocketAddr,
    admin: Option<SocketAddr>,
}

/// Every server the targets need, and the OTLP sink.
pub struct Fleet {
    bin_dir: PathBuf,
    pub sink: Process,
    pub sink_addr: SocketAddr,
    pub running: Vec<Running>,
}

impl Fleet {
    /// Starts the sink, then the chain of each of `servers`, upstreams first.
    pub async fn start(bin_dir: &Path, servers: &[Server]) -> anyhow::Result<Self> {
        let bin = bin_dir.join("bench-tool");
        let mut sink = spawn("otlp sink", command(bin).arg("otlp-sink"))?;
        let sink_addr = process::loopback(&sink.listening().await?, "grpc_addr")?;
        let mut fleet = Fleet {
            bin_dir: bin_dir.to_path_buf(),
            sink,
            sink_addr,
            running: Vec::new(),
        };
        for server in servers
            .iter()
            .flat_map(|server| server.chain().into_iter().rev())
        {
            if fleet.find(server).is_err() {
                let running = fleet.start_one(server).await?;
                fleet.running.push(running);
            }
        }
        Ok(fleet)
    }

    pub fn find(&self, server: Server) -> anyhow::Result<&Running> {
        self.running
            .iter()
            .find(|running| running.server == server)
            .with_context(|| format!("{server:?} was not started"))
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    async fn start_one(&self, server: Server) -> anyhow::Result<Running> {
        let name = server.label();
        let (bare, field, args) = match server {
            Server::BareTonic => ("bare-tonic", "grpc_addr", vec![]),
            Server::BareAxum => ("bare-axum", "http_addr", vec![]),
            Server::BareChain => {
                let upstream = self.find(Server::BareTonic)?.main;
                let args = vec!["--upstream".to_owned(), format!("http://{upstream}")];
                ("bare-axum", "http_addr", args)
            }
            Server::Recommendations(telemetry) | Server::Marketplace(telemetry) => {
                let (binary, port) = match server {
                    Server::Marketplace(_) => ("marketplace", "HTTP_PORT"),
                    _ => ("recommendations", "GRPC_PORT"),
                };
                let mut command = command(self.bin(binary));
                command.envs(telemetry.env(self.sink_addr));
                if let Server::Marketplace(_) = server {
                    command.envs(self.upstream(telemetry)?);
                }
                let Service {
                    process,
                    main,
                    admin,
                } = Service::start(&name, &mut command, port, Output::Counted).await?;
                let admin = Some(admin);
                return Ok(Running {
                    server,
                    process,
                    main,
                    admin,
                });
            }
        };
        let mut process = spawn(&name, command(self.bin(bare)).args(args))?;
        let main = process::loopback(&process.listening().await?, field)?;
        let admin = None;
        Ok(Running {
            server,
            process,
            main,
            admin,
        })
    }

    /// The marketplace's settings that point it at the recommendations of `telemetry`.
    pub fn upstream(&self, telemetry: Telemetry) -> anyhow::Result<[(&'static str, String); 2]> {
        let addr = self.find(Server::Recommendations(telemetry))?.main;
        Ok([
            ("RECOMMENDATIONS_HOST", addr.ip().to_string()),
            ("RECOMMENDATIONS_PORT", addr.port().to_string()),
        ])
    }

    /// The processes of `server`'s chain, front first.
    pub fn pids(&self, server: Server) -> anyhow::Result<Vec<u32>> {
        server
            .chain()
            .into_iter()
            .map(|s| Ok(self.find(s)?.process.pid()))
            .collect()
    }

    /// Fails if a process of `server`'s chain has exited (a crash under load).
    pub fn alive(&mut self, server: Server) -> anyhow::Result<()> {
        let chain = server.chain();
        let mut running = self
            .running
            .iter_mut()
            .filter(|r| chain.contains(&r.server));
        running.try_for_each(|running| running.process.alive())
    }

    /// Fails if a marketplace ever showed a page without recommendations.
    pub async fn check_no_fallbacks(&self) -> anyhow::Result<()> {
        for running in &self.running {
            if let (Server::Marketplace(_), Some(admin)) = (running.server, running.admin) {
                let metrics = process::get(admin, "/metrics").await?;
                let name = "marketplace_recommendations_fallback_total";
                let fallbacks = process::counter(&metrics, name)?;
                ensure!(
                    fallbacks == 0.0,
                    "{} showed {fallbacks} pages without recommendations",
                    running.process.name
                );
            }
        }
        Ok(())
    }

    /// A sample of answers, read by real clients: Recommend through tonic
    /// (h2load cannot read the grpc-status trailer), pages for their three books.
    pub async fn check_answers(&self, call: Call, addr: SocketAddr) -> anyhow::Result<()> {
        match call {
            Call::Recommend => {
                let mut check = std::process::Command::new(self.bin("bench-tool"));
                check
                    .args(["check", "--calls", "30", "--addr"])
                    .arg(format!("http://{addr}"));
                tokio::task::block_in_place(|| workspace::stdout(&mut check))?;
            }
            Call::Page => {
                for _ in 0..5 {
                    let page = process::get(addr, "/").await?;
                    let books = page.matches("<li>").count();
                    ensure!(
                        books == 3 && !page.contains("unavailable"),
                        "GET / showed {books} books (expected 3, and no fallback notice)"
                    );
                }
            }
        }
        Ok(())
    }

    /// exec to SERVING and idle RSS, each the median of `runs` fresh starts of
    /// `service` with the prod overlay's telemetry settings.
    pub async fn startup(&self, service: &'static str, runs: usize) -> anyhow::Result<Startup> {
        let upstream = match service {
            "marketplace" => self.upstream(PROD)?.to_vec(),
            _ => vec![],
        };
        let mut startup = std::process::Command::new(self.bin("bench-tool"));
        startup
            .args(["startup", "--service", service, "--runs", &runs.to_string()])
            .arg("--bin")
            .arg(self.bin(service))
            .envs([("LOG_FORMAT", "json"), ("SHUTDOWN_DELAY_SECONDS", "0")])
            .envs(PROD.env(self.sink_addr))
            .envs(upstream);
        // A second or so of fresh starts, while nothing else is measured.
        let figures = tokio::task::block_in_place(|| workspace::stdout(&mut startup))?;
        let figures: serde_json::Value = serde_json::from_str(&figures)?;
        let median = |key: &str| -> anyhow::Result<f64> {
            let numbers = figures[key]
                .as_array()
                .with_context(|| format!("no {key} from bench-tool startup"))?
                .iter()
                .map(|value| value.as_f64().context("not a number"))
                .collect::<anyhow::Result<Vec<f64>>>()?;
            Ok(report::median(&mut { numbers }))
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

    /// CPU seconds the processes of `server`'s chain have used.
    pub fn cpu(&self, server: Server) -> anyhow::Result<f64> {
        self.pids(server)?
            .into_iter()
            .map(procfs::cpu_seconds)
            .sum()
    }
}

/// `binary`, with none of the caller's OpenTelemetry settings.
fn command(binary: PathBuf) -> Command {
    let mut command = Command::new(binary);
    for variable in OTEL_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// Starts a bench process, its stdout counted.
fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Process> {
    Process::spawn(name, command, Output::Counted)
}
