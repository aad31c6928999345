//! `cargo xtask dev`: build both services, run them with local defaults,
//! prefix each line of their output with the service name, and stop both
//! cleanly on Ctrl-C (or as soon as one of them dies).

use crate::{
    process::{Output, Process},
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

/// Local defaults, used unless the environment already sets them: readable
/// logs, and no shutdown delay since no load balancer needs draining here.
const LOCAL_DEFAULTS: [(&str, &str); 2] = [("LOG_FORMAT", "text"), ("SHUTDOWN_DELAY_SECONDS", "0")];

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut build = workspace::cargo();
    build.args(["build", "--bin", "recommendations", "--bin", "marketplace"]);
    if args.release {
        build.arg("--release");
    }
    workspace::run(&mut build)?;
    let profile = if args.release { "release" } else { "debug" };
    let bin_dir = workspace::target_dir()?.join(profile);
    workspace::block_on(supervise(&bin_dir))
}

async fn supervise(bin_dir: &Path) -> anyhow::Result<()> {
    // The marketplace's channel connects lazily: this order only makes the logs read naturally.
    let start = |name: &str| {
        let mut command = Command::new(bin_dir.join(name));
        // Their own process group: a terminal's Ctrl-C reaches xtask alone,
        // which stops each service with one SIGTERM. In xtask's group they got
        // the SIGINT too, so that SIGTERM was their second signal, and they
        // exited at once with 143 instead of draining.
        command.process_group(0);
        for (key, value) in LOCAL_DEFAULTS {
            if std::env::var_os(key).is_none() {
                command.env(key, value);
            }
        }
        Process::spawn(name, &mut command, Output::Prefixed)
    };
    let mut services = [start("recommendations")?, start("marketplace")?];
    let port = std::env::var("HTTP_PORT").unwrap_or_else(|_| "8080".into());
    println!("xtask: the shop is at http://localhost:{port}/ (Ctrl-C stops both services)");

    let [first, second] = &mut services;
    let exited = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        status = first.wait() => Some((first.name.clone(), status)),
        status = second.wait() => Some((second.name.clone(), status)),
    };
    match &exited {
        None => println!("xtask: stopping both services"),
        Some((name, status)) => {
            println!("xtask: {name} exited ({status:?}); stopping the other service");
        }
    }
    let names = services.each_ref().map(|service| service.name.clone());
    let [first, second] = services;
    let stopped = tokio::join!(first.stop(), second.stop());
    let mut failed = exited.is_some();
    for (name, stopped) in names.into_iter().zip([stopped.0, stopped.1]) {
        match stopped {
            Ok(()) => println!("xtask: {name} stopped"),
            Err(err) => {
                println!("xtask: {err:#}");
                failed = true;
            }
        }
    }
    if failed {
        anyhow::bail!("a service failed; see its output above");
    }
    Ok(())
}
