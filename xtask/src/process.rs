//! The child processes `dev`, `bench` and `soak` run: started, each in a
//! process group of its own, found by their `listening` line, waited on until
//! `/readyz` answers, and stopped as Kubernetes stops a pod: SIGTERM, then a
//! bounded wait for exit code 0. And xtask's one handling of SIGINT and SIGTERM.

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
        Arc, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    signal::unix::{SignalKind, signal},
    sync::watch,
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

/// The group each running child leads, so a terminal's Ctrl-C reaches xtask alone (`dev`'s
/// services then drain on one SIGTERM), and a stop kills a child with what it started.
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn groups() -> MutexGuard<'static, Vec<u32>> {
    GROUPS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Set by the first stop signal, for a command waiting on [`stop_signal`].
static STOP: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);

/// SIGINT and SIGTERM: the first goes to a command waiting on [`stop_signal`] (`dev`). Else every
/// child's group gets SIGINT, as a terminal's Ctrl-C would send it (pytest tears down, servers
/// drain), and [`BOUND`] to end; then, or at once on a second signal, what is left is killed
/// (not left running) and xtask exits 130 or 143.
pub fn handle_signals() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    let runtime = runtime.enable_all().build()?;
    let kinds = [SignalKind::interrupt(), SignalKind::terminate()];
    let [interrupt, terminate] = runtime.block_on(async { kinds.map(signal) });
    let (mut interrupt, mut terminate) = (interrupt?, terminate?);
    std::thread::spawn(move || {
        runtime.block_on(async {
            loop {
                let code = tokio::select! {
                    _ = interrupt.recv() => 130,
                    _ = terminate.recv() => 143,
                };
                let first = !STOP.send_replace(true);
                if first && STOP.receiver_count() > 0 {
                    continue;
                }
                if first {
                    STOPPED_BY.store(code, Ordering::Relaxed);
                    signal_groups("-INT");
                    let ended = async {
                        while !groups().is_empty() {
                            tokio::time::sleep(POLL).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::timeout(BOUND, ended) => {}
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                signal_groups("-KILL");
                std::process::exit(code.into());
            }
        });
    });
    Ok(())
}

/// The exit code of the signal stopping xtask's children (the main thread may end first).
static STOPPED_BY: AtomicU8 = AtomicU8::new(0);

pub fn stopped_by() -> Option<u8> {
    Some(STOPPED_BY.load(Ordering::Relaxed)).filter(|code| *code != 0)
}

/// Resolves on the first SIGINT or SIGTERM from now on, which then stops nothing by itself.
pub fn stop_signal() -> impl Future<Output = ()> {
    let mut stop = STOP.subscribe();
    async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    }
}

/// `signal` (`-INT`, `-KILL`) to every child's group, through kill(1): xtask forbids `unsafe`.
fn signal_groups(signal: &str) {
    let mut kill = std::process::Command::new("kill");
    kill.args([signal, "--"])
        .args(groups().iter().map(|group| format!("-{group}")));
    let _ = kill.stderr(Stdio::null()).status();
}

/// Refuses a new child once xtask is stopping: it would outlive the stop.
fn not_stopping() -> std::io::Result<()> {
    match *STOP.borrow() {
        true => Err(std::io::Error::other("xtask is stopping")),
        false => Ok(()),
    }
}

/// A child's group, listed in [`GROUPS`] while this lives.
struct Group(u32);

impl Group {
    fn listed(pid: u32) -> Self {
        groups().push(pid);
        Self(pid)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        groups().retain(|group| *group != self.0);
    }
}

/// Starts `command` leading a process group of its own, killed when dropped.
fn spawn(command: &mut Command) -> std::io::Result<(Child, Group)> {
    not_stopping()?;
    let child = command.process_group(0).kill_on_drop(true).spawn()?;
    let pid = child.id().expect("a child just started has a pid");
    Ok((child, Group::listed(pid)))
}

/// Runs a step's plain command (cargo, pytest, a tool) to its end in a group of its own, so
/// that a stop signal reaches it and what it started.
pub fn status(command: &mut std::process::Command) -> std::io::Result<ExitStatus> {
    not_stopping()?;
    let mut child = std::os::unix::process::CommandExt::process_group(command, 0).spawn()?;
    let _group = Group::listed(child.id());
    child.wait()
}

/// Runs `command` to its end in a group of its own, killed if the future is dropped.
pub async fn output(command: &mut Command) -> std::io::Result<std::process::Output> {
    let (child, _group) = spawn(command.stdout(Stdio::piped()))?;
    child.wait_with_output().await
}

/// [`crate::workspace::stdout`], run by [`output`].
pub async fn stdout(command: &mut Command) -> anyhow::Result<String> {
    let output = output(command.stderr(Stdio::piped())).await;
    crate::workspace::checked(command, output)
}

/// A running child, killed when dropped.
pub struct Process {
    pub name: String,
    pub pid: u32,
    child: Child,
    _group: Group,
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
                let file = File::create(&path);
                let file = file.with_context(|| format!("cannot create {}", path.display()))?;
                (file.try_clone()?.into(), file.into(), Some(path))
            }
            Output::Prefixed => (Stdio::piped(), Stdio::piped(), None),
            Output::Counted => (Stdio::piped(), Stdio::inherit(), None),
        };
        let command = command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let (mut child, group) =
            spawn(command).with_context(|| format!("cannot start {name} ({command:?})"))?;
        let (seen, mut readers) = (Arc::new(Seen::default()), JoinSet::new());
        if let Some(stdout) = child.stdout.take() {
            readers.spawn(read(stdout, seen.clone(), prefix.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.spawn(read(stderr, seen.clone(), prefix));
        }
        Ok(Self {
            name: name.to_owned(),
            pid: group.0,
            child,
            _group: group,
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

    /// SIGTERM unless it has exited, then exit 0 within [`BOUND`] (else killed), last lines read.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_kills_each_child_with_what_it_started() {
        let mut shell = Command::new("sh");
        shell.args(["-c", "sleep 600 & echo $!; wait"]);
        let mut shell = Process::spawn("sh", &mut shell, Output::Counted).unwrap();
        let seen = shell.seen.clone();
        let started = async || {
            let line = seen.last_line.lock().unwrap().clone();
            line.parse::<i32>().map_err(|_| "no pid yet")
        };
        let sleep = shell.until(started).await.unwrap();
        signal_groups("-KILL");
        let status = tokio::time::timeout(BOUND, shell.wait()).await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status.unwrap()),
            Some(9)
        );
        // Reparented once its shell died, the sleep is reaped by whoever adopted it.
        let started = Instant::now();
        while procfs::process::Process::new(sleep)
            .is_ok_and(|sleep| sleep.stat().is_ok_and(|stat| stat.state != 'Z'))
        {
            assert!(
                started.elapsed() < BOUND,
                "the sleep survived its group's kill"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
