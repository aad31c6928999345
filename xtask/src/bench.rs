//! `cargo xtask bench` (being built; see the open issue).

use crate::tools::{Tool, Tools};
use clap::Args;
use std::path::Path;

/// What the `bench` test step needs installed.
pub const TOOLS: &[Tool] = &[];

#[derive(Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not built yet")
}

/// The step `cargo xtask test` runs.
pub fn test(_tools: &Tools, _target_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("the bench step is not built yet")
}
