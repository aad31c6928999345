//! The fuzz step of `cargo xtask test` (being built; see the open issue).

use crate::tools::{Tool, Tools};
use std::path::Path;

/// What the fuzz step needs installed.
pub const TOOLS: &[Tool] = &[];

pub fn test(_tools: &Tools, _target_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("the fuzz step is not built yet")
}
