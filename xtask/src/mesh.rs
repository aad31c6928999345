//! `cargo xtask mesh`: the istio/ policies proven by their own data plane, per overlay on a
//! fresh local cluster with istiod and the bookshop as its pods (the cases `cargo xtask test
//! mesh` runs, printed as a table); `--loopback` runs the quick harness instead (no cluster).

use crate::{
    cluster,
    tools::{Tool, Tools},
    workspace,
};
use clap::Args;

/// What the loopback harness needs of the cluster's tools: no control plane to build.
const LOOPBACK_TOOLS: &[Tool] = &[Tool::Python, Tool::Istioctl, Tool::Jaeger];

#[derive(Args)]
pub struct MeshArgs {
    /// Only this overlay (repeatable; default: dev and prod).
    #[arg(long, value_parser = ["dev", "prod"])]
    overlay: Vec<String>,
    /// The loopback harness (dev only, about a minute): Istio's in-memory discovery server
    /// and a test CA instead of a cluster's istiod.
    #[arg(long, conflicts_with = "overlay")]
    loopback: bool,
}

pub fn run(args: MeshArgs) -> anyhow::Result<()> {
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    let (needed, script, out) = match args.loopback {
        true => (LOOPBACK_TOOLS, "tests/mesh/run_cases.py", "mesh-loopback"),
        false => (cluster::TOOLS, "tests/cluster/run_mesh.py", "mesh"),
    };
    tools.ensure(needed)?;
    workspace::build_services()?;
    let mut python = tools.command("python")?;
    python.arg(script).arg("--out").arg(target_dir.join(out));
    if !args.loopback {
        let kwok = tools.go_module("istio", "sigs.k8s.io/kwok")?;
        python
            .arg("--tools-bin")
            .arg(cluster::tools_bin(&target_dir));
        python.arg("--kwok-module").arg(kwok);
        for overlay in &args.overlay {
            python.args(["--overlay", overlay]);
        }
    }
    workspace::run(python.arg("--bin-dir").arg(target_dir.join("debug")))
}
