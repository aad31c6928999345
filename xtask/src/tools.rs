//! Installs the outside tools the checks use, each only when a step needs it,
//! under the cargo target dir so later runs reuse them: a Python venv (pinned
//! in `tests/*/requirements.txt`), buf (npm), Go tools built from the pinned
//! `tools/*/go.mod`, pinned cargo subcommands and, as root on Debian, apt packages.

use crate::workspace;
use anyhow::{Context, bail};
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

/// buf, for `buf lint` and `buf breaking` on the proto contract.
const BUF: &str = "@bufbuild/buf@1.75.0";

/// Something a step needs from outside the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The Python venv: pytest and the suites' tools.
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
    /// A Debian package (command that shows it is there, package).
    Debian(&'static str, &'static str),
    /// A cargo subcommand from crates.io, `cargo install --locked` (name, version).
    Cargo(&'static str, &'static str),
}

/// Unused dependencies: a whole crate in a manifest that no code names.
pub const CARGO_MACHETE: Tool = Tool::Cargo("cargo-machete", "0.9.2");

/// The Go programs of each Go tool: (tool, module under `tools/`, [(binary, package)]).
/// mesh-analyze runs Istio's analyzers; mesh-xds writes each pod's Envoy bootstrap with
/// Istio's config generation.
pub type Programs = &'static [(&'static str, &'static str)];
#[rustfmt::skip]
const GO_PROGRAMS: [(Tool, &str, Programs); 3] = [
    (Tool::Istioctl, "istio", &[
        ("istioctl", "istio.io/istio/istioctl/cmd/istioctl"),
        ("mesh-analyze", "./mesh-analyze"),
        ("mesh-xds", "./mesh-xds"),
    ]),
    (Tool::Jaeger, "jaeger", &[("jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger")]),
    (Tool::Cluster, "istio", crate::cluster::PROGRAMS),
];

/// The tools dir: `venv/`, `node/` (buf), `go/` (caches), `bin/` (Go tools), `cargo/`.
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Where the tools live; nothing is installed until `ensure`.
    pub fn new(target_dir: &Path) -> Self {
        let dir = target_dir.join("tools");
        Self { dir }
    }

    /// Installs each of `needed` that is missing or out of date.
    pub fn ensure(&self, needed: &[Tool]) -> anyhow::Result<()> {
        for &tool in needed {
            match tool {
                Tool::Python => self.install_python()?,
                Tool::Buf => self.install_buf()?,
                Tool::Istioctl | Tool::Jaeger | Tool::Cluster => self.build_go_tool(tool)?,
                Tool::Debian(command, package) => install_debian(command, package)?,
                Tool::Cargo(name, version) => self.install_cargo(name, version)?,
            }
        }
        Ok(())
    }

    fn bin_dirs(&self) -> [PathBuf; 4] {
        ["venv/bin", "node/node_modules/.bin", "bin", "cargo/bin"].map(|dir| self.dir.join(dir))
    }

    /// Where an installed tool is.
    pub fn path(&self, program: &str) -> anyhow::Result<PathBuf> {
        let mut paths = self.bin_dirs().into_iter().map(|dir| dir.join(program));
        let found = paths.find(|path| path.exists());
        found.with_context(|| format!("{program} is not among the installed tools"))
    }

    /// An installed tool, run from the workspace root with the tools first on PATH (pytest
    /// starts hadolint, istioctl… by name).
    pub fn command(&self, program: &str) -> anyhow::Result<Command> {
        let mut path: Vec<PathBuf> = self.bin_dirs().into();
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let mut command = Command::new(self.path(program)?);
        command
            .current_dir(workspace::root())
            .env("PATH", std::env::join_paths(path)?);
        Ok(command)
    }

    /// The standard Gateway API CRDs at the version the pinned Istio requires: what
    /// istio/gateway-api is validated against and the cluster installs.
    pub fn gateway_api_crds(&self) -> anyhow::Result<PathBuf> {
        let module = self.go_module("istio", "sigs.k8s.io/gateway-api")?;
        Ok(module.join("config/crd/standard"))
    }

    /// The source of a module `tools/<tools_module>/go.mod` pins, downloaded if need be.
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
        let venv = self.dir.join("venv");
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args(["install", "--quiet", "--disable-pip-version-check"]);
        // Each test suite's and the bench plot's; one venv serves all.
        let mut files = vec![workspace::root().join("bench/requirements.txt")];
        for suite in fs::read_dir(workspace::root().join("tests"))? {
            files.push(suite?.path().join("requirements.txt"));
        }
        files.sort();
        let mut requirements = Vec::new();
        for file in files.into_iter().filter(|file| file.is_file()) {
            let read = fs::read(&file).with_context(|| format!("cannot read {file:?}"));
            requirements.extend(read?);
            pip.arg("-r").arg(file);
        }
        let stamp = venv.join("installed-requirements.txt");
        stamped(&stamp, &requirements, || {
            require_command(
                "python3",
                "Python 3 (with the venv module) from your OS packages",
            )?;
            eprintln!("xtask: installing the Python tools (the first run takes a few minutes)");
            let mut python = Command::new("python3");
            workspace::run(python.args(["-m", "venv", "--clear"]).arg(&venv))?;
            workspace::run(&mut pip)
        })
    }

    fn install_buf(&self) -> anyhow::Result<()> {
        let node = self.dir.join("node");
        stamped(&node.join("installed.txt"), BUF.as_bytes(), || {
            require_command("npm", "Node.js with npm (for buf) from your OS packages")?;
            eprintln!("xtask: installing {BUF} from npm");
            let npm = ["install", "--no-audit", "--no-fund", "--silent", "--prefix"];
            workspace::run(Command::new("npm").args(npm).arg(&node).arg(BUF))
        })
    }

    /// `name@version` from crates.io, unless that version is installed.
    fn install_cargo(&self, name: &str, version: &str) -> anyhow::Result<()> {
        let root = self.dir.join("cargo");
        let stamp = root.join(format!("{name}.installed"));
        stamped(&stamp, version.as_bytes(), || {
            eprintln!("xtask: installing {name}@{version} (a few minutes, once)");
            let mut install = workspace::cargo();
            install
                .args(["install", "--locked", "--force", "--root"])
                .arg(&root);
            workspace::run(install.arg(format!("{name}@{version}")))
        })
    }

    /// `go` in a tools module, its caches under the tools dir, never switching toolchains.
    pub fn go(&self, module: &str) -> anyhow::Result<Command> {
        require_command("go", "Go 1.26 or later (https://go.dev/doc/install)")?;
        let mut go = Command::new("go");
        go.current_dir(workspace::root().join("tools").join(module))
            .env("GOMODCACHE", self.dir.join("go/mod"))
            .env("GOCACHE", self.dir.join("go/cache"))
            .envs([("GOTOOLCHAIN", "local"), ("GOFLAGS", "-mod=readonly")]);
        Ok(go)
    }

    /// Builds a Go tool's programs unless built from their module's current sources: in one
    /// `go build`, so they share compiled packages, without debug information.
    fn build_go_tool(&self, tool: Tool) -> anyhow::Result<()> {
        let found = GO_PROGRAMS.iter().find(|(t, ..)| *t == tool);
        let (_, module, programs) = *found.expect("a Go tool");
        let mut sources = module_sources(&workspace::root().join("tools").join(module))?;
        // A program added to the list is built even when the module's files did not change.
        sources.extend(programs.iter().flat_map(|(_, package)| package.as_bytes()));
        let (bin, first) = (self.dir.join("bin"), programs[0].0);
        stamped(&bin.join(format!("{first}.built-from")), &sources, || {
            let names: Vec<&str> = programs.iter().map(|(name, _)| *name).collect();
            let names = names.join(", ");
            eprintln!(
                "xtask: building {names} from tools/{module} (the first build takes many minutes)"
            );
            // With several packages, -o names a folder, and each binary is named after its package.
            let out = format!("{}/", bin.display());
            let stamp = crate::cluster::kubernetes_version_flags(self.go(module));
            let ldflags = format!("-s -w{stamp}");
            let mut go = self.go(module)?;
            go.args(["build", "-trimpath", "-ldflags", &ldflags, "-o", &out]);
            workspace::run(go.args(programs.iter().map(|(_, package)| *package)))
        })
    }
}

/// Runs `install` unless `stamp` says it ran from `built_from`; then records that it did.
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

/// Every file of a tools module in a stable order: a change to any rebuilds its tools.
fn module_sources(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let walk = walkdir::WalkDir::new(dir).sort_by_file_name();
    let mut sources = Vec::new();
    for entry in walk {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if !entry.file_type().is_dir() {
            sources.extend(entry.path().strip_prefix(dir)?.to_string_lossy().as_bytes());
            sources.extend(fs::read(entry.path())?);
        }
    }
    Ok(sources)
}

/// Installs a missing command's Debian package as root on Debian; else says what to install.
fn install_debian(command: &str, package: &str) -> anyhow::Result<()> {
    if on_path(command) {
        return Ok(());
    }
    let root = fs::metadata("/proc/self").is_ok_and(|process| process.uid() == 0);
    if !Path::new("/etc/debian_version").is_file() || !root {
        bail!(
            "`{command}` is missing: install it by hand (Debian: `apt-get install --no-install-recommends {package}`), then run again"
        );
    }
    eprintln!("xtask: installing the Debian package {package} (for {command})");
    workspace::run(Command::new("apt-get").args(["update", "-qq"]))?;
    let install = ["install", "-y", "-qq", "--no-install-recommends", package];
    let mut apt_get = Command::new("apt-get");
    workspace::run(
        apt_get
            .args(install)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn require_command(command: &str, what: &str) -> anyhow::Result<()> {
    if !on_path(command) {
        bail!("`{command}` is not on PATH: install {what}")
    }
    Ok(())
}

fn on_path(command: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(command).is_file())
}
