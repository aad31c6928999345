//! The child processes `dev`, `bench` and `soak` run: started, found by their
//! `listening` line, waited on until `/readyz` answers, and stopped as
//! Kubernetes stops a pod: SIGTERM, then a bounded wait for exit code 0.

use anyhow::{Context, bail};
use serde_json::Value;
use std::{
    fs::File,
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
    listening: Option<oneshot::Receiver<Value>>,
    readers: JoinSet<()>,
    seen: Arc<Seen>,
}

/// What the readers of its output have seen.
#[derive(Default)]
struct Seen {
    lines: AtomicU64,
    last_line: Mutex<String>,
    listening: Mutex<Option<oneshot::Sender<Value>>>,
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
        let (found, listening) = oneshot::channel();
        let seen = Arc::new(Seen::default());
        *seen.listening.lock().expect("not poisoned") = Some(found);
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
            listening: Some(listening),
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
        let found = self.listening.take().context("the line is read once")?;
        let see = self.see();
        tokio::select! {
            Ok(line) = found => Ok(line),
            status = self.child.wait() => {
                bail!("{} exited ({}) before listening{see}", self.name, status?)
            }
            () = tokio::time::sleep(BOUND) => {
                bail!("{} logged no \"listening\" line within {BOUND:?}{see}", self.name)
            }
        }
    }

    pub async fn ready(&mut self, admin: SocketAddr) -> anyhow::Result<()> {
        let url = format!("http://{admin}/readyz");
        let client = crate::services::http_client().build()?;
        let started = Instant::now();
        loop {
            let answer = client.get(&url).send().await;
            if answer.as_ref().is_ok_and(|a| a.status().is_success()) {
                return Ok(());
            }
            self.alive()?;
            if started.elapsed() > BOUND {
                let see = self.see();
                bail!(
                    "{} was not ready within {BOUND:?} (last {url}: {answer:?}){see}",
                    self.name
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
            && let Some(found) = seen.listening.lock().expect("not poisoned").take()
        {
            let _ = found.send(value);
        }
        if let Some(name) = &prefix {
            println!("{name:>15} | {line}");
        }
        *seen.last_line.lock().expect("not poisoned") = line;
    }
}
