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
    tools.ensure(if args.loopback {
        LOOPBACK_TOOLS
    } else {
        cluster::TOOLS
    })?;
    workspace::build_services()?;
    let mut python = tools.command("python")?;
    if args.loopback {
        python
            .arg("tests/mesh/run_cases.py")
            .arg("--out")
            .arg(target_dir.join("mesh-loopback"));
    } else {
        python
            .arg("tests/cluster/run_mesh.py")
            .arg("--out")
            .arg(target_dir.join("mesh"))
            .arg("--tools-bin")
            .arg(cluster::tools_bin(&target_dir))
            .arg("--kwok-module")
            .arg(tools.go_module("istio", "sigs.k8s.io/kwok")?);
        for overlay in &args.overlay {
            python.args(["--overlay", overlay]);
        }
    }
    workspace::run(python.arg("--bin-dir").arg(target_dir.join("debug")))
}
