//! The child processes `dev`, `bench` and `soak` run: started, found by their
//! `listening` line, waited on until `/readyz` answers, and stopped as
//! Kubernetes stops a pod: SIGTERM, then a bounded wait for exit code 0.

use crate::services::http_client;
use anyhow::{Context, bail};
use serde_json::Value;
use std::{
    fmt::Display,
    fs::File,
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    task::JoinSet,
};

/// How long a process gets to listen, to get ready, and to stop.
const BOUND: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Where a process's output goes.
pub enum Output {
    /// Every line printed after the process's name (`cargo xtask dev`).
    Prefixed,
    /// Both streams into a log file (no `listening` line is read).
    File(PathBuf),
    /// stdout only counted (the access lines under load); stderr passed on.
    Counted,
}

/// A running child, killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    pub pid: u32,
    log: Option<PathBuf>,
    readers: JoinSet<()>,
    seen: Arc<Seen>,
}

/// What the readers of its output have seen.
#[derive(Default)]
struct Seen {
    lines: AtomicU64,
    last_line: Mutex<String>,
    listening: OnceLock<Value>,
}

impl Process {
    /// Starts `command` (its stdin closed, its output read as `output` says).
    pub fn spawn(name: &str, command: &mut Command, output: Output) -> anyhow::Result<Self> {
        let prefix = matches!(output, Output::Prefixed).then(|| name.to_owned());
        let (stdout, stderr, log) = match output {
            Output::File(path) => {
                let file = File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                (file.try_clone()?.into(), file.into(), Some(path))
            }
            Output::Prefixed => (Stdio::piped(), Stdio::piped(), None),
            Output::Counted => (Stdio::piped(), Stdio::inherit(), None),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let pid = child.id().context("a child just started has a pid")?;
        let seen = Arc::new(Seen::default());
        let mut readers = JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            readers.spawn(read(stdout, seen.clone(), prefix.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.spawn(read(stderr, seen.clone(), prefix));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log,
            readers,
            seen,
        })
    }

    pub fn lines(&self) -> u64 {
        self.seen.lines.load(Ordering::Relaxed)
    }

    pub fn last_line(&self) -> String {
        self.seen.last_line.lock().expect("not poisoned").clone()
    }

    fn see(&self) -> String {
        let log = self.log.as_ref();
        log.map_or_else(String::new, |log| format!("; see {}", log.display()))
    }

    /// Its JSON `listening` line, with the addresses it bound.
    pub async fn listening(&mut self) -> anyhow::Result<Value> {
        let seen = self.seen.clone();
        let found = async || seen.listening.get().cloned().ok_or("no \"listening\" line");
        self.until(found).await
    }

    pub async fn ready(&mut self, admin: SocketAddr) -> anyhow::Result<()> {
        let (url, client) = (format!("http://{admin}/readyz"), http_client().build()?);
        let ready = async || match client.get(&url).send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            answer => Err(format!("not ready (last {url}: {answer:?})")),
        };
        self.until(ready).await
    }

    /// Polls `check` until it succeeds, while the process runs, for at most [`BOUND`].
    async fn until<T, E: Display>(
        &mut self,
        mut check: impl AsyncFnMut() -> Result<T, E>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        loop {
            let last = match check().await {
                Ok(found) => return Ok(found),
                Err(last) => last,
            };
            self.alive()?;
            if started.elapsed() > BOUND {
                bail!("{}: {last} within {BOUND:?}{}", self.name, self.see());
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

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM (through kill(1): xtask forbids `unsafe`) unless it has exited;
    /// then it must exit 0 within [`BOUND`], or it is killed. Its last lines
    /// are read before this returns.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            let mut kill = Command::new("kill");
            let kill = kill.args(["-TERM", &self.pid.to_string()]).status();
            kill.await.context("cannot run kill")?;
        }
        let stopped = tokio::time::timeout(BOUND, self.child.wait()).await;
        // Output a grandchild still holds open is not waited for.
        let last_lines = async { while self.readers.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), last_lines).await;
        let (name, see) = (&self.name, self.see());
        match stopped {
            Ok(status) if status.as_ref().is_ok_and(ExitStatus::success) => Ok(()),
            Ok(status) => bail!("{name} stopped with {:?}{see}", status?),
            Err(_) => {
                self.child.kill().await?;
                bail!("{name} did not exit within {BOUND:?} of SIGTERM (killed){see}")
            }
        }
    }
}

/// Reads one stream to its end: counts lines, hands over the `listening` line.
async fn read(stream: impl AsyncRead + Unpin, seen: Arc<Seen>, prefix: Option<String>) {
    let mut lines = BufReader::with_capacity(1 << 16, stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        seen.lines.fetch_add(1, Ordering::Relaxed);
        // Only a line that can be the announcement is parsed.
        if line.contains("\"listening\"")
            && let Ok(value) = serde_json::from_str::<Value>(&line)
            && value["message"] == "listening"
        {
            let _ = seen.listening.set(value);
        }
        if let Some(name) = &prefix {
            println!("{name:>15} | {line}");
        }
        *seen.last_line.lock().expect("not poisoned") = line;
    }
}
