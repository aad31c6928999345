//! Developer commands: `cargo xtask dev` runs both services locally,
//! `cargo xtask test` installs the test tools and runs every check,
//! `cargo xtask mutants` checks that the tests catch changes to the domain code.

mod dev;
mod mutants;
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
    /// Mutation testing of the domain code (bounded; not part of `test`).
    Mutants,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Dev(args) => dev::run(args),
        Command::Test(args) => test::run(args),
        Command::Mutants => mutants::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
