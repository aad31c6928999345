//! `cargo xtask soak` (being built; see the open issue).

use crate::tools::{Tool, Tools};
use clap::Args;
use std::path::Path;

/// What the `soak` test step needs installed.
pub const TOOLS: &[Tool] = &[];

#[derive(Args)]
pub struct SoakArgs {}

pub fn run(_args: SoakArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask soak is not built yet")
}

/// The step `cargo xtask test` runs.
pub fn test(_tools: &Tools, _target_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("the soak step is not built yet")
}
