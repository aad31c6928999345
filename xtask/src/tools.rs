//! Installs the outside tools the checks use, under the cargo target dir so a
//! fresh machine needs nothing but Rust, Python and Node, and later runs reuse
//! them: a Python venv (pinned in tests/deploy/requirements.txt) and buf (npm).

use crate::workspace;
use anyhow::Context;
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// buf, for `buf lint` and `buf breaking` on the proto contract.
const BUF: &str = "@bufbuild/buf@1.75.0";
/// Debian packages, by the command each provides: promtool checks the
/// Prometheus configuration.
const DEBIAN_PACKAGES: [(&str, &str); 1] = [("promtool", "prometheus")];
/// The Python tools of the deployment checks, pinned there.
const PYTHON_REQUIREMENTS: &str = "tests/deploy/requirements.txt";

pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Installs what is missing or out of date, and returns where it is.
    pub fn install(target_dir: &Path) -> anyhow::Result<Self> {
        let tools = Self {
            dir: target_dir.join("tools"),
        };
        fs::create_dir_all(&tools.dir)?;
        install_debian_packages()?;
        tools.install_python()?;
        tools.install_node()?;
        Ok(tools)
    }

    fn venv(&self) -> PathBuf {
        self.dir.join("venv")
    }

    fn node(&self) -> PathBuf {
        self.dir.join("node")
    }

    fn bin_dirs(&self) -> [PathBuf; 2] {
        [
            self.venv().join("bin"),
            self.node().join("node_modules/.bin"),
        ]
    }

    /// A command for an installed tool, run from the workspace root with the
    /// tools first on PATH (pytest starts hadolint, checkov… by name).
    pub fn command(&self, program: &str) -> anyhow::Result<Command> {
        let installed = self
            .bin_dirs()
            .into_iter()
            .map(|dir| dir.join(program))
            .find(|path| path.exists())
            .with_context(|| format!("{program} is not among the installed tools"))?;
        let mut path: Vec<PathBuf> = self.bin_dirs().into();
        if let Some(system) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&system));
        }
        let mut command = Command::new(installed);
        command
            .current_dir(workspace::root())
            .env("PATH", std::env::join_paths(path)?);
        Ok(command)
    }

    fn install_python(&self) -> anyhow::Result<()> {
        let requirements_path = workspace::root().join(PYTHON_REQUIREMENTS);
        let requirements = fs::read_to_string(&requirements_path)
            .with_context(|| format!("cannot read {}", requirements_path.display()))?;
        // The stamp holds the requirements the venv was built from.
        let stamp = self.venv().join("installed-requirements.txt");
        if fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
            return Ok(());
        }
        eprintln!("xtask: installing Python tools (first run takes a few minutes)");
        workspace::run(
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg("--clear")
                .arg(self.venv()),
        )?;
        workspace::run(
            Command::new(self.venv().join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements_path),
        )?;
        fs::write(stamp, requirements)?;
        Ok(())
    }

    fn install_node(&self) -> anyhow::Result<()> {
        let stamp = self.node().join("installed.txt");
        if fs::read_to_string(&stamp).ok().as_deref() == Some(BUF) {
            return Ok(());
        }
        eprintln!("xtask: installing {BUF} from npm");
        fs::create_dir_all(self.node())?;
        workspace::run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(self.node())
                .arg(BUF),
        )?;
        fs::write(stamp, BUF)?;
        Ok(())
    }
}

/// Installs the Debian packages whose commands are missing (CI runs as root).
fn install_debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    workspace::run(Command::new("apt-get").args(["update", "-qq"]))?;
    workspace::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}
