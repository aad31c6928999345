//! A service binary run as a child process: its JSON log lines followed as they
//! are written, SIGTERM, and bounded waits for its exit.

use crate::WAIT;
use serde_json::Value;
use std::{
    net::SocketAddr,
    process::{ExitStatus, Output, Stdio},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::timeout,
};

/// `program` with an empty environment (the host's variables cannot leak in),
/// JSON logs, no stdin, killed if the test drops it.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end, within [`WAIT`].
pub async fn output(command: &mut Command) -> Output {
    timeout(WAIT, command.output())
        .await
        .expect("the process exits in time")
        .expect("the process starts")
}

/// Starts `command()` once per `(setting, listener)` with that setting naming
/// a port another socket holds: each run must exit 1 with one stderr line
/// naming the listener, the address and the cause.
pub async fn assert_taken_ports_are_refused(
    command: impl Fn() -> Command,
    listeners: &[(&str, &str)],
) {
    // Bound as the services bind, so that theirs fails.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("a free port");
    let port = taken
        .local_addr()
        .expect("a bound address")
        .port()
        .to_string();
    for (setting, listener) in listeners {
        let output = output(command().env(setting, &port)).await;
        assert_eq!(output.status.code(), Some(1), "{setting}");
        let stderr = String::from_utf8(output.stderr).expect("UTF-8 stderr");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let named = format!("error: cannot listen for {listener} on 0.0.0.0:{port}: ");
        assert!(stderr.starts_with(&named), "{stderr}");
        assert!(stderr.contains("in use"), "{stderr}");
    }
}

/// A running child whose stdout is read line by line.
pub struct Spawned {
    child: Child,
    pub logs: Logs,
}

impl Spawned {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let logs = Logs::follow(child.stdout.take().expect("stdout is piped"));
        Self { child, logs }
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the child is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the child to exit, failing the test after `within`.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the child did not exit within {within:?}"))
            .expect("the child can be waited on")
    }
}

/// The child's log lines, as they are written: JSON, or a JSON string for a
/// line that is not.
pub struct Logs {
    lines: mpsc::UnboundedReceiver<Value>,
}

impl Logs {
    fn follow(stdout: tokio::process::ChildStdout) -> Self {
        let (sender, lines) = mpsc::unbounded_channel();
        // Reads to the end, so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                let _ = sender.send(value);
            }
        });
        Self { lines }
    }

    /// The next line whose message is `message`, within [`WAIT`].
    pub async fn wait_for(&mut self, message: &str) -> Value {
        let found = timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line["message"] == message {
                    return Some(line);
                }
            }
            None
        });
        match found.await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the child's stdout ended before {message:?}"),
            Err(_) => panic!("no {message:?} log line within {WAIT:?}"),
        }
    }

    /// Every line not read yet, up to the end of stdout (call it once the child
    /// exited), within [`WAIT`].
    pub async fn rest(&mut self) -> Vec<Value> {
        let mut rest = Vec::new();
        timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                rest.push(line);
            }
        })
        .await
        .expect("stdout ends once the child exited");
        rest
    }
}

/// The loopback address of a logged listener address such as `0.0.0.0:port`.
pub fn logged_addr(value: &Value) -> SocketAddr {
    let addr: SocketAddr = value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not a socket address: {value}"));
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}
