//! `cargo xtask dev`: both services built and run with local defaults, each
//! line of their output after the service's name, both stopped cleanly on
//! Ctrl-C (or SIGTERM) or as soon as one of them dies.

use crate::{
    process::{self, Output, Process},
    workspace,
};
use clap::Args;
use std::path::Path;
use tokio::process::Command;

#[derive(Args)]
pub struct DevArgs {
    /// Build and run optimized binaries.
    #[arg(long)]
    release: bool,
}

/// Unless the environment sets them: readable logs, no shutdown delay (nothing drains here).
const LOCAL_DEFAULTS: [(&str, &str); 2] = [("LOG_FORMAT", "text"), ("SHUTDOWN_DELAY_SECONDS", "0")];

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut build = workspace::cargo();
    build.args(["build", "--bin", "recommendations", "--bin", "marketplace"]);
    if args.release {
        build.arg("--release");
    }
    workspace::run(&mut build)?;
    let profile = if args.release { "release" } else { "debug" };
    workspace::block_on(supervise(&workspace::target_dir()?.join(profile)))
}

async fn supervise(bin_dir: &Path) -> anyhow::Result<()> {
    let start = |name: &str| {
        let mut command = Command::new(bin_dir.join(name));
        let unset = LOCAL_DEFAULTS
            .iter()
            .filter(|(key, _)| std::env::var_os(key).is_none());
        command.envs(unset.copied());
        Process::spawn(name, &mut command, Output::Prefixed)
    };
    let stop = process::stop_signal();
    // The marketplace connects lazily: this order only makes the logs read naturally.
    let [mut first, mut second] = [start("recommendations")?, start("marketplace")?];
    let port = std::env::var("HTTP_PORT").unwrap_or_else(|_| "8080".into());
    println!("xtask: the shop is at http://localhost:{port}/ (Ctrl-C stops both services)");
    let exited = tokio::select! {
        () = stop => None,
        status = first.wait() => Some((first.name.clone(), status)),
        status = second.wait() => Some((second.name.clone(), status)),
    };
    match &exited {
        None => println!("xtask: stopping both services"),
        Some((name, status)) => {
            println!("xtask: {name} exited ({status:?}); stopping the other service");
        }
    }
    let names = [first.name.clone(), second.name.clone()];
    let stopped = tokio::join!(first.stop(), second.stop());
    let mut failed = exited.is_some();
    for (name, stopped) in names.into_iter().zip([stopped.0, stopped.1]) {
        match &stopped {
            Ok(()) => println!("xtask: {name} stopped"),
            Err(err) => println!("xtask: {err:#}"),
        }
        failed |= stopped.is_err();
    }
    anyhow::ensure!(!failed, "a service failed; see its output above");
    Ok(())
}
