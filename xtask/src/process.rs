//! The child processes `dev`, `bench` and `soak` run: started with the
//! settings a caller chose, found by their `listening` line, waited on until
//! `/readyz` answers, and stopped as Kubernetes stops a pod: SIGTERM, then a
//! bounded wait for exit code 0.

use anyhow::{Context, bail};
use std::{
    fs::File,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::oneshot,
    task::JoinSet,
};

/// How long a process gets to listen, to get ready, and to stop.
const START_BOUND: Duration = Duration::from_secs(30);
const STOP_BOUND: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Where a process's output goes.
pub enum Output {
    /// Every line printed after the process's name (`cargo xtask dev`).
    Prefixed,
    /// Both streams into a log file.
    File(PathBuf),
    /// stdout only counted (the access lines under load); stderr passed on.
    Counted,
}

/// A running child, killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    pid: u32,
    listening: Option<oneshot::Receiver<serde_json::Value>>,
    readers: JoinSet<()>,
    sink: Arc<Sink>,
}

/// Where the readers of a process's two streams put what they read.
struct Sink {
    name: String,
    output: Output,
    file: Option<Mutex<File>>,
    listening: Mutex<Option<oneshot::Sender<serde_json::Value>>>,
    lines: AtomicU64,
    last_line: Mutex<String>,
}

impl Process {
    /// Starts `command` (its stdin closed, its output read as `output` says).
    pub fn spawn(name: &str, command: &mut Command, output: Output) -> anyhow::Result<Self> {
        let file = match &output {
            Output::File(path) => {
                Some(Mutex::new(File::create(path).with_context(|| {
                    format!("cannot create {}", path.display())
                })?))
            }
            _ => None,
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match output {
                Output::Counted => Stdio::inherit(),
                _ => Stdio::piped(),
            })
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let pid = child.id().context("a child just started has a pid")?;
        let (found, listening) = oneshot::channel();
        let sink = Arc::new(Sink {
            name: name.to_owned(),
            output,
            file,
            listening: Mutex::new(Some(found)),
            lines: AtomicU64::new(0),
            last_line: Mutex::default(),
        });
        let mut readers = JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            readers.spawn(read(stdout, sink.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.spawn(read(stderr, sink.clone()));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            listening: Some(listening),
            readers,
            sink,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.sink.lines.load(Ordering::Relaxed)
    }

    /// The last line written.
    pub fn last_line(&self) -> String {
        self.sink.last_line.lock().expect("not poisoned").clone()
    }

    /// Where to look when it fails.
    fn see(&self) -> String {
        match &self.sink.output {
            Output::File(log) => format!("; see {}", log.display()),
            _ => String::new(),
        }
    }

    /// Its JSON `listening` line, with the addresses it bound.
    pub async fn listening(&mut self) -> anyhow::Result<serde_json::Value> {
        let found = self
            .listening
            .take()
            .context("the listening line is read once")?;
        let see = self.see();
        tokio::select! {
            Ok(line) = found => Ok(line),
            status = self.child.wait() => {
                bail!("{} exited ({}) before listening{see}", self.name, status?)
            }
            () = tokio::time::sleep(START_BOUND) => {
                bail!("{} logged no \"listening\" line within {START_BOUND:?}{see}", self.name)
            }
        }
    }

    /// Waits until the admin listener at `admin` says ready.
    pub async fn ready(&mut self, admin: SocketAddr) -> anyhow::Result<()> {
        let url = format!("http://{admin}/readyz");
        let client = http_client()?;
        let started = Instant::now();
        loop {
            let answer = client.get(&url).send().await;
            if answer
                .as_ref()
                .is_ok_and(|answer| answer.status().is_success())
            {
                return Ok(());
            }
            self.alive()?;
            if started.elapsed() > START_BOUND {
                bail!(
                    "{} was not ready within {START_BOUND:?} (last {url}: {answer:?}){}",
                    self.name,
                    self.see()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails if the process has exited (a crash under load, say).
    pub fn alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited ({status}){}", self.name, self.see()),
            None => Ok(()),
        }
    }

    /// Waits for it to exit by itself.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM (through kill(1): xtask forbids `unsafe`), unless it has
    /// exited already; then it must exit 0 within [`STOP_BOUND`], or it is
    /// killed. Its last lines are read before this returns.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status()
                .await
                .context("cannot run kill")?;
        }
        let stopped = tokio::time::timeout(STOP_BOUND, self.child.wait()).await;
        // Output a grandchild still holds open is not waited for.
        let last_lines = async { while self.readers.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), last_lines).await;
        match stopped {
            Ok(status) if status.as_ref().is_ok_and(ExitStatus::success) => Ok(()),
            Ok(status) => bail!("{} stopped with {:?}{}", self.name, status?, self.see()),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not exit within {STOP_BOUND:?} of SIGTERM (killed){}",
                    self.name,
                    self.see()
                )
            }
        }
    }
}

/// Reads one stream to its end: counts lines, hands over the `listening`
/// line, and sends each line where the output goes.
async fn read(stream: impl AsyncRead + Unpin, sink: Arc<Sink>) {
    let mut lines = BufReader::with_capacity(1 << 16, stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        sink.lines.fetch_add(1, Ordering::Relaxed);
        // Only a line that can be the announcement is parsed.
        if line.contains("\"listening\"")
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
            && value["message"] == "listening"
            && let Some(found) = sink.listening.lock().expect("not poisoned").take()
        {
            let _ = found.send(value);
        }
        match &sink.output {
            Output::Prefixed => println!("{:>15} | {line}", sink.name),
            Output::File(_) => {
                let file = sink.file.as_ref().expect("a file for Output::File");
                let _ = writeln!(file.lock().expect("not poisoned"), "{line}");
            }
            Output::Counted => {}
        }
        *sink.last_line.lock().expect("not poisoned") = line;
    }
}

/// A service binary on loopback ports picked here (at `RUST_LOG=warn` it
/// prints no `listening` line), with JSON logs and no shutdown delay (no load
/// balancer drains on loopback), ready once its admin listener says so.
pub struct Service {
    pub process: Process,
    /// The gRPC listener of recommendations, the page listener of the marketplace.
    pub main: SocketAddr,
    pub admin: SocketAddr,
}

impl Service {
    /// Starts `command`, its main port set by the variable `main_port`.
    pub async fn start(
        name: &str,
        command: &mut Command,
        main_port: &str,
        output: Output,
    ) -> anyhow::Result<Self> {
        let (main, admin) = (free_port()?, free_port()?);
        command
            .envs(
                [(main_port, main.port()), ("ADMIN_PORT", admin.port())]
                    .map(|(k, v)| (k, v.to_string())),
            )
            .envs([("LOG_FORMAT", "json"), ("SHUTDOWN_DELAY_SECONDS", "0")]);
        let mut process = Process::spawn(name, command, output)?;
        process.ready(admin).await?;
        Ok(Self {
            process,
            main,
            admin,
        })
    }

    /// The marketplace's `marketplace_recommendations_fallback_total`, all
    /// reasons: the degraded pages it served, as it counts them itself.
    pub async fn fallbacks(&self) -> anyhow::Result<f64> {
        let metrics = get(self.admin, "/metrics").await?;
        counter(&metrics, "marketplace_recommendations_fallback_total")
    }
}

/// A loopback address whose port was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// An HTTP client for loopback: no proxy, a bound on every request.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")
}

/// The body of `GET http://{addr}{path}`, which must answer 2xx.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let url = format!("http://{addr}{path}");
    let answer = http_client()?
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?;
    Ok(answer.text().await?)
}

/// The sum of a Prometheus counter over all its labels, from `/metrics` text.
pub fn counter(metrics: &str, name: &str) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix(name)
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

/// The loopback address of a listener `listening` logged as `field`
/// (`0.0.0.0:<port>` or `127.0.0.1:<port>`).
pub fn loopback(listening: &serde_json::Value, field: &str) -> anyhow::Result<SocketAddr> {
    let logged: SocketAddr = listening[field]
        .as_str()
        .and_then(|addr| addr.parse().ok())
        .with_context(|| format!("no {field} in the listening line {listening}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], logged.port())))
}
