//! `cargo xtask mesh` (being built; see the open issue).

use crate::tools::Tool;
use clap::Args;

/// What the `mesh` test step needs installed.
pub const TOOLS: &[Tool] = &[];

#[derive(Args)]
pub struct MeshArgs {}

pub fn run(_args: MeshArgs) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask mesh is not built yet")
}
