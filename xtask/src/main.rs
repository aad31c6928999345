//! Developer commands: `cargo xtask dev` runs both services locally,
//! `cargo xtask test` installs the test tools and runs every check.

mod dev;
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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Dev(args) => dev::run(args),
        Command::Test(args) => test::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
