//! `cargo xtask mutants`: a bounded mutation-testing run over the domain code,
//! so a test that cannot fail, or one that would hang, shows up as a survivor.

use crate::{tools::Tools, workspace};
use std::process::Command;

/// cargo-mutants, installed under the tools dir.
const CARGO_MUTANTS: &str = "cargo-mutants@27.1.0";

/// The domain code: catalog, recommending, the gRPC adapter, the pages, the
/// page model and the gRPC client.
const FILES: [&str; 6] = [
    "recommendations/src/recommend.rs",
    "recommendations/src/grpc.rs",
    "recommendations/src/catalog.rs",
    "marketplace/src/pages.rs",
    "marketplace/src/books.rs",
    "marketplace/src/grpc_client.rs",
];

pub fn run() -> anyhow::Result<()> {
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    let root = tools.cargo_root();
    if !root.join("bin/cargo-mutants").is_file() {
        eprintln!("xtask: installing {CARGO_MUTANTS} (a few minutes, once)");
        workspace::run(
            workspace::cargo()
                .args(["install", "--locked", "--root"])
                .arg(&root)
                .arg(CARGO_MUTANTS),
        )?;
    }
    let mut mutants = Command::new(root.join("bin/cargo-mutants"));
    mutants
        .current_dir(workspace::root())
        .args(["mutants", "--timeout", "120", "--build-timeout", "900"])
        .args(FILES.iter().flat_map(|file| ["-f", file]))
        // Mutated builds stay out of the shared cache; no debug info makes them faster.
        .env("CARGO_TARGET_DIR", target_dir.join("mutants"))
        .env("CARGO_PROFILE_DEV_DEBUG", "0");
    // Non-zero when a mutant is missed or times out.
    workspace::run(&mut mutants)
}
