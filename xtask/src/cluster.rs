//! `cargo xtask cluster`: a Kubernetes control plane with istiod on this machine, in a network
//! namespace of its own, until Ctrl-C; `cargo xtask cluster apply OVERLAY` runs the README's
//! deploy command against it. The work is tests/cluster (Python); this builds the binaries
//! and hands over.

use crate::{
    tools::{Programs, Tool, Tools},
    workspace,
};
use clap::{Args, Subcommand};
use std::{os::unix::process::CommandExt, path::Path, process::Command};

/// The venv, istioctl (it renders the Istio install), the control plane's binaries,
/// iptables, which `pilot-agent istio-iptables` runs in each pod's network namespace, and
/// Jaeger, the collector behind the dev overlay's `otel-collector` when the bookshop runs as
/// its pods (tests/cluster/shop_pods.py).
pub const TOOLS: &[Tool] = &[
    Tool::Python,
    Tool::Istioctl,
    Tool::Cluster,
    Tool::Debian("iptables", "iptables"),
    Tool::Jaeger,
];

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: Option<ClusterCommand>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// `kubectl kustomize kustomize/overlays/OVERLAY | kubectl apply -f -` against the running
    /// cluster, then wait for every Deployment to roll out.
    Apply {
        /// dev, prod, dev-faults or dev-gateway-api
        overlay: String,
    },
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let target_dir = workspace::target_dir()?;
    let tools = Tools::new(&target_dir);
    tools.ensure(TOOLS)?;
    let mut script = script(&tools, &target_dir)?;
    // `apply dev-gateway-api` installs them first, as the platform would.
    script.env("BOOKSHOP_GATEWAY_API_CRDS", tools.gateway_api_crds()?);
    match args.command {
        Some(ClusterCommand::Apply { overlay }) => workspace::run(script.args(["apply", &overlay])),
        None => {
            script
                .arg("up")
                .arg("--kwok-module")
                .arg(tools.go_module("istio", "sigs.k8s.io/kwok")?);
            // Python in xtask's place: a terminal's Ctrl-C reaches it alone, and it tears the
            // cluster down before the prompt comes back.
            Err(script.exec().into())
        }
    }
}

/// tests/cluster's tests that `markers` selects (pytest's `-m`: the `cluster` step runs
/// "not mesh", the `mesh` step "mesh"), one fresh cluster per overlay they use, the
/// bookshop's binaries built first (they run as the overlays' pods).
pub fn test(tools: &Tools, target_dir: &Path, markers: &str) -> anyhow::Result<()> {
    workspace::build_services()?;
    workspace::run(
        tools
            .command("python")?
            .args(["-m", "pytest", "tests/cluster", "-q", "-m", markers])
            .env("BOOKSHOP_BIN_DIR", target_dir.join("debug"))
            .env("BOOKSHOP_TOOLS_BIN", tools_bin(target_dir))
            .env(
                "BOOKSHOP_KWOK_MODULE",
                tools.go_module("istio", "sigs.k8s.io/kwok")?,
            )
            .env("BOOKSHOP_ARTIFACTS_DIR", target_dir.join("artifacts"))
            .env("BOOKSHOP_GATEWAY_API_CRDS", tools.gateway_api_crds()?),
    )
}

fn script(tools: &Tools, target_dir: &Path) -> anyhow::Result<Command> {
    let mut script = tools.command("python")?;
    script
        .arg("tests/cluster/run_cluster.py")
        .arg("--bin-dir")
        .arg(tools_bin(target_dir))
        .arg("--folder")
        .arg(target_dir.join("cluster"));
    Ok(script)
}

pub fn tools_bin(target_dir: &Path) -> std::path::PathBuf {
    target_dir.join("tools").join("bin")
}

/// The control plane's programs, built from the module that pins istioctl (`Tool::Cluster`).
#[rustfmt::skip]
pub const PROGRAMS: Programs = &[
    ("etcd", "./etcd"),
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ("kwok", "sigs.k8s.io/kwok/cmd/kwok"),
    ("pilot-discovery", "istio.io/istio/pilot/cmd/pilot-discovery"),
    // `pilot-agent istio-iptables`: the capture istio-init or Istio CNI would set up.
    ("pilot-agent", "istio.io/istio/pilot/cmd/pilot-agent"),
];

/// `-X` flags that stamp the Kubernetes release a tools module pins into its binaries (a plain
/// build says v0.0.0, and kubectl and istiod check the server's version); none for a module
/// without k8s.io/kubernetes. `go` runs in that module.
pub fn kubernetes_version_flags(go: anyhow::Result<Command>) -> String {
    let list = ["list", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes"];
    let Ok(version) = go.and_then(|mut go| workspace::stdout(go.args(list))) else {
        return String::new();
    };
    let minor = version.split('.').nth(1).unwrap_or_default();
    let flag = |package| {
        format!(
            " -X {package}.gitVersion={version} -X {package}.gitMajor=1 -X {package}.gitMinor={minor} -X {package}.gitTreeState=clean"
        )
    };
    flag("k8s.io/component-base/version") + &flag("k8s.io/client-go/pkg/version")
}
