//! The processes under test, each started once for the whole run with its
//! stdout drained by a thread (as a container runtime would collect it),
//! and found by the `listening` line it prints.

use anyhow::{Context, bail};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

/// How long a process gets to announce its listener.
const LISTENING_BOUND: Duration = Duration::from_secs(30);

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
#[derive(Debug, Clone, Copy)]
pub struct Telemetry {
    pub rust_log: &'static str,
    pub traces: Traces,
}

/// What becomes of a service's spans.
#[derive(Debug, Clone, Copy)]
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

/// A running process.
pub struct Process {
    pub name: String,
    child: Child,
    /// The addresses from its `listening` line, by field name.
    listening: serde_json::Value,
    /// Lines it wrote to stdout (access lines, mostly).
    pub lines: Arc<AtomicU64>,
    /// The last `{"spans":N}` it printed (the OTLP sink).
    pub spans: Arc<AtomicU64>,
}

impl Process {
    /// Starts `bin` with `args` and `env`, then waits for its `listening` line.
    pub fn start(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<Process> {
        Self::spawn(name, bin, args, env, None)
    }

    /// Starts `bin`; `known` are its addresses when the caller chose them
    /// (services logging at warn print no `listening` line): then it is up
    /// once the first of them accepts connections.
    fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(&str, String)],
        known: Option<serde_json::Value>,
    ) -> anyhow::Result<Process> {
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for variable in OTEL_VARIABLES {
            command.env_remove(variable);
        }
        command.envs(env.iter().map(|(key, value)| (key, value)));
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("a piped stdout")?;
        let (lines, spans) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (found, listening) = mpsc::channel();
        let (counted, last_spans) = (lines.clone(), spans.clone());
        thread::spawn(move || drain(stdout, found, &counted, &last_spans));
        let announced = match &known {
            Some(addrs) => accepting(addrs, &mut child)?.then(|| addrs.clone()),
            None => listening.recv_timeout(LISTENING_BOUND).ok(),
        };
        let listening = match announced {
            Some(addrs) => addrs,
            None => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("{name} did not announce its listener within {LISTENING_BOUND:?} ({status})");
            }
        };
        Ok(Process {
            name: name.to_owned(),
            child,
            listening,
            lines,
            spans,
        })
    }

    /// A service with its ports picked by the system and `telemetry`'s settings;
    /// `sink` is the OTLP receiver's address.
    pub fn service(
        name: &str,
        bin: &Path,
        telemetry: Telemetry,
        sink: SocketAddr,
        more_env: &[(&str, String)],
    ) -> anyhow::Result<Process> {
        let (main, admin) = (free_port()?, free_port()?);
        let known = serde_json::json!({
            "grpc_addr": format!("127.0.0.1:{main}"),
            "http_addr": format!("127.0.0.1:{main}"),
            "admin_addr": format!("127.0.0.1:{admin}"),
        });
        let mut env = vec![
            ("GRPC_PORT", main.to_string()),
            ("HTTP_PORT", main.to_string()),
            ("ADMIN_PORT", admin.to_string()),
            ("LOG_FORMAT", "json".to_owned()),
            ("SHUTDOWN_DELAY_SECONDS", "0".to_owned()),
        ];
        env.extend(telemetry.env(sink));
        env.extend(more_env.iter().cloned());
        Self::spawn(name, bin, &[], &env, Some(known))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address its `listening` line gave as `field`.
    pub fn addr(&self, field: &str) -> anyhow::Result<SocketAddr> {
        self.listening[field]
            .as_str()
            .with_context(|| format!("{} announced no {field}", self.name))?
            .parse()
            .with_context(|| format!("{} announced a bad {field}", self.name))
    }

    /// Fails if the process has exited (a crash under load, say).
    pub fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited during the bench ({status})", self.name);
        }
        Ok(())
    }

    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the main and admin listeners of `addrs` accept connections;
/// false if that takes longer than [`LISTENING_BOUND`] or the child exits.
fn accepting(addrs: &serde_json::Value, child: &mut Child) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    for field in ["grpc_addr", "admin_addr"] {
        let addr: SocketAddr = addrs[field].as_str().context("an address")?.parse()?;
        while std::net::TcpStream::connect(addr).is_err() {
            if child.try_wait()?.is_some() || started.elapsed() > LISTENING_BOUND {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(true)
}

/// Reads stdout to its end: hands over the `listening` line, keeps the
/// sink's span total, counts every line.
fn drain(
    stdout: impl std::io::Read,
    found: mpsc::Sender<serde_json::Value>,
    lines: &AtomicU64,
    spans: &AtomicU64,
) {
    let mut announced = false;
    for line in BufReader::with_capacity(1 << 16, stdout).lines() {
        let Ok(line) = line else { break };
        lines.fetch_add(1, Ordering::Relaxed);
        // Only the few lines that can matter are parsed.
        let announcing = !announced && line.contains("\"listening\"");
        if announcing || line.starts_with("{\"spans\"") {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(total) = value["spans"].as_u64() {
                spans.store(total, Ordering::Relaxed);
            } else if value["message"] == "listening" {
                announced = true;
                let _ = found.send(value);
            }
        }
    }
}
