//! `cargo xtask dev`: build both services, run them with local defaults,
//! prefix each line of their output with the service name, and stop both
//! cleanly on Ctrl-C (or as soon as one of them dies).

use crate::workspace;
use clap::Args;
use std::{path::Path, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    task::JoinSet,
};

#[derive(Args)]
pub struct DevArgs {
    /// Build and run optimized binaries.
    #[arg(long)]
    release: bool,
}

/// The services, started in this order (the marketplace's channel connects
/// lazily, so order only makes the logs read naturally).
const SERVICES: [&str; 2] = ["recommendations", "marketplace"];

/// Local defaults, used unless the environment already sets them: readable
/// logs, and no shutdown delay since no load balancer needs draining here.
const LOCAL_DEFAULTS: [(&str, &str); 2] = [("LOG_FORMAT", "text"), ("SHUTDOWN_DELAY_SECONDS", "0")];

/// How long the services get to stop before they are killed.
const STOP_BOUND: Duration = Duration::from_secs(30);

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut build = workspace::cargo();
    build.args(["build", "--bin", "recommendations", "--bin", "marketplace"]);
    if args.release {
        build.arg("--release");
    }
    workspace::run(&mut build)?;
    let profile = if args.release { "release" } else { "debug" };
    let bin_dir = workspace::target_dir()?.join(profile);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(supervise(&bin_dir))
}

async fn supervise(bin_dir: &Path) -> anyhow::Result<()> {
    let mut running = JoinSet::new();
    let mut output = JoinSet::new();
    let mut pids = Vec::new();
    for name in SERVICES {
        let mut command = Command::new(bin_dir.join(name));
        for (key, value) in LOCAL_DEFAULTS {
            if std::env::var_os(key).is_none() {
                command.env(key, value);
            }
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(stdout) = child.stdout.take() {
            output.spawn(prefix_lines(name, stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            output.spawn(prefix_lines(name, stderr));
        }
        pids.push((name, child.id()));
        running.spawn(async move { (name, child.wait().await) });
    }
    let port = std::env::var("HTTP_PORT").unwrap_or_else(|_| "8080".into());
    println!("xtask: the shop is at http://localhost:{port}/ (Ctrl-C stops both services)");

    let mut failed = false;
    let mut exited = Vec::new();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("xtask: stopping both services"),
        Some(Ok((name, status))) = running.join_next() => {
            println!("xtask: {name} exited ({status:?}); stopping the other service");
            exited.push(name);
            failed = true;
        }
    }

    // A terminal's Ctrl-C already reached the services (same process group);
    // SIGTERM (through kill(1), which keeps this crate free of `unsafe`)
    // covers every other way xtask is asked to stop.
    for (name, pid) in pids {
        if let (false, Some(pid)) = (exited.contains(&name), pid) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    let stopped = tokio::time::timeout(STOP_BOUND, async {
        while let Some(Ok((name, status))) = running.join_next().await {
            match status {
                Ok(status) if status.success() => println!("xtask: {name} stopped"),
                other => {
                    println!("xtask: {name} stopped with {other:?}");
                    failed = true;
                }
            }
        }
    })
    .await;
    if stopped.is_err() {
        // Dropping the tasks drops the children, which kills them.
        println!("xtask: a service did not stop within {STOP_BOUND:?}; killing it");
        running.shutdown().await;
        failed = true;
    }
    while output.join_next().await.is_some() {}
    if failed {
        anyhow::bail!("a service failed; see its output above");
    }
    Ok(())
}

async fn prefix_lines(name: &'static str, stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{name:>15} | {line}");
    }
}
