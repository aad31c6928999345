//! Developer commands (`cargo xtask --help`), each in its module.

mod bench;
mod benchmarks;
mod cluster;
mod dev;
mod fuzz;
mod measure;
mod mesh;
mod mutants;
mod process;
mod services;
mod soak;
mod test;
mod tools;
mod workspace;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Bookshop developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build and run both services with local defaults until Ctrl-C.
    Dev(dev::DevArgs),
    /// Install the tools the checks need, then run every check and test.
    Test(test::TestArgs),
    /// Mutation testing of the files `.cargo/mutants.toml` names (not part of `test`).
    Mutants(mutants::MutantsArgs),
    /// Load-test release builds against bare tonic and axum baselines.
    Bench(bench::BenchArgs),
    /// A fixed request rate through the marketplace; memory and descriptors must stay flat.
    Soak(soak::SoakArgs),
    /// Translate `istio/` with Istio's own code and prove it in real Envoys on loopback.
    Mesh(mesh::MeshArgs),
    /// A Kubernetes control plane with istiod in a network namespace, until Ctrl-C; `apply OVERLAY` deploys to it.
    Cluster(cluster::ClusterArgs),
    /// Print the workspace root xtask works on (the one around the current directory).
    #[command(hide = true)]
    Where,
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let result = process::handle_signals().and(workspace::locate());
    let result = result.and_then(|root| match command {
        Command::Dev(args) => dev::run(args),
        Command::Test(args) => test::run(args),
        Command::Mutants(args) => mutants::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Mesh(args) => mesh::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Where => {
            println!("{}", root.display());
            Ok(())
        }
    });
    if let Some(code) = process::stopped_by() {
        eprintln!("xtask: stopped by a signal");
        return ExitCode::from(code);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
