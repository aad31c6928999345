//! Installs the outside tools the checks use, each only when a step needs it,
//! under the cargo target dir so later runs reuse them: a Python venv (pinned
//! in `tests/*/requirements.txt`), buf (npm), Go tools built from the pinned
//! `tools/*/go.mod` (istioctl, Jaeger), pinned cargo subcommands from
//! crates.io and, as root on Debian only, apt packages.

use crate::workspace;
use anyhow::{Context, bail};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// buf, for `buf lint` and `buf breaking` on the proto contract.
const BUF: &str = "@bufbuild/buf@1.75.0";
/// The Python requirement files, one per test suite; one venv serves all.
const PYTHON_REQUIREMENTS: [&str; 7] = [
    "tests/deploy/requirements.txt",
    "tests/observability/requirements.txt",
    "tests/ui/requirements.txt",
    "tests/mesh/requirements.txt",
    "tests/reliability/requirements.txt",
    "tests/cluster/requirements.txt",
    "bench/requirements.txt",
];
/// The Go modules (under `tools/`) that pin the upstream tools the tests build.
const GO_TOOLS: &str = "tools";

/// Something a step needs from outside the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The Python venv: pytest and the deploy, observability and UI suites' tools.
    Python,
    /// buf, from npm.
    Buf,
    /// `istioctl`, `mesh-analyze` and `mesh-xds`, built from the pinned istio.io/istio module
    /// (whose source also holds Istio's CRDs and standard metric names).
    Istioctl,
    /// Jaeger v2 (all-in-one), built from the pinned Go module.
    Jaeger,
    /// A Kubernetes control plane (etcd, kube-apiserver, -controller-manager, -scheduler,
    /// kubectl, kwok) and istiod, from the module that pins istioctl.
    Cluster,
    /// A Debian package, by the command that shows it is there.
    Debian {
        command: &'static str,
        package: &'static str,
    },
    /// A cargo subcommand from crates.io (`cargo install --locked`).
    Cargo {
        name: &'static str,
        version: &'static str,
    },
}

impl Tool {
    pub const fn debian(command: &'static str, package: &'static str) -> Tool {
        Tool::Debian { command, package }
    }

    pub const fn cargo(name: &'static str, version: &'static str) -> Tool {
        Tool::Cargo { name, version }
    }
}

/// Unused dependencies: a whole crate in a manifest that no code names.
pub const CARGO_MACHETE: Tool = Tool::cargo("cargo-machete", "0.9.2");

/// The Go programs a tool is: (module under `tools/`, [(binary, package)]).
fn go_programs(tool: Tool) -> (&'static str, &'static [(&'static str, &'static str)]) {
    match tool {
        // mesh-analyze: Istio's analyzers fed the files as a cluster would hold them.
        // mesh-xds: Istio's config generation, each pod's proxy config as an Envoy bootstrap
        // (from the in-memory discovery server, or from the real istiod with istio-agent's code).
        Tool::Istioctl => (
            "istio",
            &[
                ("istioctl", "istio.io/istio/istioctl/cmd/istioctl"),
                ("mesh-analyze", "./mesh-analyze"),
                ("mesh-xds", "./mesh-xds"),
            ],
        ),
        Tool::Jaeger => (
            "jaeger",
            &[("jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger")],
        ),
        Tool::Cluster => (
            "istio",
            &[
                ("etcd", "./etcd"),
                ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
                (
                    "kube-controller-manager",
                    "k8s.io/kubernetes/cmd/kube-controller-manager",
                ),
                ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
                ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
                ("kwok", "sigs.k8s.io/kwok/cmd/kwok"),
                (
                    "pilot-discovery",
                    "istio.io/istio/pilot/cmd/pilot-discovery",
                ),
                // `pilot-agent istio-iptables`: the capture istio-init or Istio CNI would set up.
                ("pilot-agent", "istio.io/istio/pilot/cmd/pilot-agent"),
            ],
        ),
        _ => unreachable!("only Go tools are built"),
    }
}

/// The tools dir: `venv/`, `node/` (buf), `go/` (Go's caches), `bin/` (built
/// Go tools), `cargo/` (the `cargo install --root`).
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Where the tools live; nothing is installed until `ensure`.
    pub fn new(target_dir: &Path) -> Self {
        Self {
            dir: target_dir.join("tools"),
        }
    }

    /// Installs each of `needed` that is missing or out of date.
    pub fn ensure(&self, needed: &[Tool]) -> anyhow::Result<()> {
        for tool in needed {
            match *tool {
                Tool::Python => self.install_python()?,
                Tool::Buf => self.install_buf()?,
                Tool::Istioctl | Tool::Jaeger | Tool::Cluster => self.build_go_tool(*tool)?,
                Tool::Debian { command, package } => install_debian(command, package)?,
                Tool::Cargo { name, version } => self.install_cargo(name, version)?,
            }
        }
        Ok(())
    }

    fn bin_dirs(&self) -> [PathBuf; 4] {
        [
            self.dir.join("venv").join("bin"),
            self.dir.join("node").join("node_modules/.bin"),
            self.dir.join("bin"),
            self.dir.join("cargo").join("bin"),
        ]
    }

    /// Where an installed tool is.
    pub fn path(&self, program: &str) -> anyhow::Result<PathBuf> {
        self.bin_dirs()
            .into_iter()
            .map(|dir| dir.join(program))
            .find(|path| path.exists())
            .with_context(|| format!("{program} is not among the installed tools"))
    }

    /// A command for an installed tool, run from the workspace root with the
    /// tools first on PATH (pytest starts hadolint, istioctl… by name).
    pub fn command(&self, program: &str) -> anyhow::Result<Command> {
        let mut path: Vec<PathBuf> = self.bin_dirs().into();
        if let Some(system) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&system));
        }
        let mut command = Command::new(self.path(program)?);
        command
            .current_dir(workspace::root())
            .env("PATH", std::env::join_paths(path)?);
        Ok(command)
    }

    /// The pinned istio.io/istio module's source directory (Istio's CRDs and
    /// standard metrics are read from there, at the version istioctl is built from).
    pub fn istio_module(&self) -> anyhow::Result<PathBuf> {
        self.go_module("istio", "istio.io/istio")
    }

    /// The source directory of a module that `tools/<tools_module>/go.mod`
    /// pins, downloaded into the Go module cache if it is not there yet.
    pub fn go_module(&self, tools_module: &str, path: &str) -> anyhow::Result<PathBuf> {
        workspace::run(self.go(tools_module)?.args(["mod", "download", path]))?;
        let list = ["list", "-m", "-f", "{{.Dir}}", path];
        let dir = PathBuf::from(workspace::stdout(self.go(tools_module)?.args(list))?);
        if !dir.is_dir() {
            bail!("the {path} module is not downloaded (looked in {dir:?})");
        }
        Ok(dir)
    }

    fn install_python(&self) -> anyhow::Result<()> {
        let files: Vec<PathBuf> = PYTHON_REQUIREMENTS
            .iter()
            .map(|file| workspace::root().join(file))
            .filter(|path| path.is_file())
            .collect();
        let mut requirements = Vec::new();
        for path in &files {
            requirements.extend(fs::read(path).with_context(|| format!("cannot read {path:?}"))?);
        }
        let stamp = self.dir.join("venv").join("installed-requirements.txt");
        stamped(&stamp, &requirements, || {
            let why = "Python 3 (with the venv module) from your OS packages";
            require_command("python3", why)?;
            eprintln!("xtask: installing the Python tools (the first run takes a few minutes)");
            let venv = ["-m", "venv", "--clear"];
            workspace::run(
                Command::new("python3")
                    .args(venv)
                    .arg(self.dir.join("venv")),
            )?;
            let mut pip = Command::new(self.dir.join("venv").join("bin/pip"));
            pip.args(["install", "--quiet", "--disable-pip-version-check"]);
            for path in &files {
                pip.arg("-r").arg(path);
            }
            workspace::run(&mut pip)
        })
    }

    fn install_buf(&self) -> anyhow::Result<()> {
        stamped(
            &self.dir.join("node").join("installed.txt"),
            BUF.as_bytes(),
            || {
                require_command("npm", "Node.js with npm (for buf) from your OS packages")?;
                eprintln!("xtask: installing {BUF} from npm");
                let npm = ["install", "--no-audit", "--no-fund", "--silent", "--prefix"];
                workspace::run(
                    Command::new("npm")
                        .args(npm)
                        .arg(self.dir.join("node"))
                        .arg(BUF),
                )
            },
        )
    }

    /// `name@version` from crates.io, unless that version is installed.
    fn install_cargo(&self, name: &str, version: &str) -> anyhow::Result<()> {
        let stamp = self.dir.join("cargo").join(format!("{name}.installed"));
        stamped(&stamp, version.as_bytes(), || {
            eprintln!("xtask: installing {name}@{version} (a few minutes, once)");
            workspace::run(
                workspace::cargo()
                    .args(["install", "--locked", "--force", "--root"])
                    .arg(self.dir.join("cargo"))
                    .arg(format!("{name}@{version}")),
            )
        })
    }

    /// `go` with its module and build caches under the tools dir, in one
    /// tools module, never switching toolchains behind our back.
    fn go(&self, module: &str) -> anyhow::Result<Command> {
        require_command("go", "Go 1.26 or later (https://go.dev/doc/install)")?;
        let mut go = Command::new("go");
        go.current_dir(workspace::root().join(GO_TOOLS).join(module))
            .env("GOMODCACHE", self.dir.join("go").join("mod"))
            .env("GOCACHE", self.dir.join("go").join("cache"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=readonly");
        Ok(go)
    }

    /// Builds a Go tool's programs unless they were built from the current
    /// sources of their module: in one `go build`, so they share compiled
    /// packages, without debug information (nothing here debugs them).
    fn build_go_tool(&self, tool: Tool) -> anyhow::Result<()> {
        let (module, programs) = go_programs(tool);
        let mut sources = module_sources(&workspace::root().join(GO_TOOLS).join(module))?;
        // A program added to the list is built even when the module's files did not change.
        for (_, package) in programs {
            sources.extend(package.as_bytes());
        }
        let (first, _) = programs[0];
        let stamp = self.dir.join("bin").join(format!("{first}.built-from"));
        stamped(&stamp, &sources, || {
            let names: Vec<&str> = programs.iter().map(|(name, _)| *name).collect();
            eprintln!(
                "xtask: building {} from {GO_TOOLS}/{module} (the first build takes many minutes)",
                names.join(", ")
            );
            // With several packages, -o names a folder, and each binary is named after its package.
            let out = format!("{}/", self.dir.join("bin").display());
            let ldflags = format!("-s -w{}", self.kubernetes_version_flags(module));
            let mut go = self.go(module)?;
            go.args(["build", "-trimpath", "-ldflags", &ldflags, "-o", &out]);
            workspace::run(go.args(programs.iter().map(|(_, package)| *package)))
        })
    }

    /// `-X` flags that stamp the Kubernetes release the module pins into the binaries (a plain
    /// build says v0.0.0, and kubectl and istiod check the server's version); none for a module
    /// without k8s.io/kubernetes.
    fn kubernetes_version_flags(&self, module: &str) -> String {
        let list = ["list", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes"];
        let Some(version) = self
            .go(module)
            .ok()
            .and_then(|mut go| workspace::stdout(go.args(list)).ok())
        else {
            return String::new();
        };
        let minor = version.split('.').nth(1).unwrap_or_default();
        ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]
            .iter()
            .map(|package| {
                format!(
                    " -X {package}.gitVersion={version} -X {package}.gitMajor=1 -X {package}.gitMinor={minor} -X {package}.gitTreeState=clean"
                )
            })
            .collect()
    }
}

/// Runs `install` unless `stamp` says it ran from `built_from` (the
/// requirements, the version, the sources); then records that it did.
fn stamped(
    stamp: &Path,
    built_from: &[u8],
    install: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if fs::read(stamp).ok().as_deref() == Some(built_from) {
        return Ok(());
    }
    // The stamp's folder is where the tool goes, which some installers want to exist.
    fs::create_dir_all(stamp.parent().context("a stamp is in a folder")?)?;
    install()?;
    Ok(fs::write(stamp, built_from)?)
}

/// Every file of a tools module (go.mod, go.sum, our own Go programs), in a
/// stable order: a change to any of them rebuilds the module's tools.
fn module_sources(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in
            fs::read_dir(&folder).with_context(|| format!("cannot read {}", folder.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut sources = Vec::new();
    for file in files {
        sources.extend(file.strip_prefix(dir)?.to_string_lossy().as_bytes());
        sources.extend(fs::read(&file)?);
    }
    Ok(sources)
}

/// Installs a Debian package when its command is missing: with apt-get as root
/// on Debian, otherwise it fails with one line saying what to install.
fn install_debian(command: &str, package: &str) -> anyhow::Result<()> {
    if on_path(command) {
        return Ok(());
    }
    let debian = Path::new("/etc/debian_version").is_file();
    if !debian || !is_root() {
        bail!(
            "`{command}` is missing: install it by hand (Debian: `apt-get install --no-install-recommends {package}`), then run again"
        );
    }
    eprintln!("xtask: installing the Debian package {package} (for {command})");
    workspace::run(Command::new("apt-get").args(["update", "-qq"]))?;
    workspace::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn require_command(command: &str, what: &str) -> anyhow::Result<()> {
    if on_path(command) {
        Ok(())
    } else {
        bail!("`{command}` is not on PATH: install {what}")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}
