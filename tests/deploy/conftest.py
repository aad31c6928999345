"""Session fixtures: the renders, the binaries' --help, the one checkov run per render, and Istio's
side of the mesh (istioctl, the install it renders, the pinned CRDs, the proto's methods)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

import clihelp
import istio_tools
import protos
import render
from clihelp import Settings
from mesh_renders import MESH_RENDERS
from outside_tools import REPO_ROOT, istio_crds_path, require_tool, required_dir


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return required_dir("BOOKSHOP_BIN_DIR", "the directory holding the built recommendations and marketplace binaries")


@pytest.fixture(scope="session")
def istio_crds() -> Path:
    """Istio's CRDs, from the istio.io/istio Go module that tools/istio/go.mod pins (the one istioctl
    is built from): `manifests/charts/base/files/crd-all.gen.yaml` inside it."""
    return istio_crds_path()


@pytest.fixture(scope="session")
def accepted(bin_dir: Path) -> dict[str, Settings]:
    """binary -> the env variables its --help lists, with their defaults."""
    return {name: clihelp.parse_help(clihelp.binary_help(bin_dir, name)) for name in clihelp.BINARIES}


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """Every entry of render.RENDERS, rendered once."""
    return {name: render.render(name) for name in render.RENDERS}


@pytest.fixture(scope="session")
def docs(rendered: dict[str, str]) -> dict[str, list[dict]]:
    return {name: render.parse(text) for name, text in rendered.items()}


@pytest.fixture(scope="session")
def checkov_results(rendered: dict[str, str]) -> dict[str, dict]:
    """checkov's JSON report for each render. checkov is slow to start, so the runs go in
    parallel, each on its own file (graph checks must not see another render's objects)."""
    checkov = require_tool("checkov")
    with tempfile.TemporaryDirectory(prefix="checkov-") as tmp:
        running = {}
        for name, text in rendered.items():
            folder = Path(tmp) / name
            folder.mkdir()
            (folder / "rendered.yaml").write_text(text)
            running[name] = subprocess.Popen(
                [checkov, "--skip-download", "--framework", "kubernetes", "-o", "json",
                 "--directory", str(folder)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        results = {}
        for name, process in running.items():
            out, err = process.communicate(timeout=600)
            results[name] = _checkov_report(out, err, name)
    return results


def _checkov_report(out: str, err: str, what: str) -> dict:
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"checkov gave no JSON for {what}:\n{err[-2000:]}") from None
    # One framework gives a dict; a list when several ran.
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="session")
def istioctl() -> str:
    return istio_tools.istioctl()


@pytest.fixture(scope="session")
def analyzer() -> str:
    return istio_tools.mesh_analyze()


@pytest.fixture(scope="session")
def crds() -> Path:
    return istio_tools.env_file("BOOKSHOP_ISTIO_CRDS", "Istio's CRDs of the pinned module "
                                "(<module>/manifests/charts/base/files/crd-all.gen.yaml)")


@pytest.fixture(scope="session")
def install_text(istioctl: str) -> str:
    return istio_tools.install_manifest(istioctl)


@pytest.fixture(scope="session")
def install(install_text: str) -> list[dict]:
    return istio_tools.parse(install_text)


@pytest.fixture(scope="session")
def mesh_config(install: list[dict]) -> dict:
    return istio_tools.mesh_config(install)


@pytest.fixture(scope="session")
def trust_domain(mesh_config: dict) -> str:
    return mesh_config.get("trustDomain", "cluster.local")


@pytest.fixture(scope="session")
def gateways(install: list[dict], trust_domain: str) -> set[str]:
    return istio_tools.gateway_principals(install, trust_domain)


@pytest.fixture(scope="session")
def methods() -> frozenset[str]:
    return protos.grpc_methods()


@pytest.fixture(scope="session")
def injected(rendered, istioctl: str, install: list[dict]) -> dict[str, list[dict]]:
    """Each mesh render as the install's sidecar injector admits it."""
    return {name: istio_tools.parse(istio_tools.inject(istioctl, rendered[name], install)) for name in MESH_RENDERS}
