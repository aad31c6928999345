"""Paths, outside tools and environment: a missing one fails the test, never skips it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO_ROOT / "observability"
PROMETHEUS_DIR = OBSERVABILITY / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
COMPOSE_PROMETHEUS = PROMETHEUS_DIR / "prometheus.yml"
KUBERNETES_PROMETHEUS = PROMETHEUS_DIR / "kubernetes.yml"
DASHBOARDS_DIR = OBSERVABILITY / "grafana/dashboards"
DATASOURCES = OBSERVABILITY / "grafana/provisioning/datasources/datasources.yaml"
JAEGER_CONFIG = OBSERVABILITY / "jaeger/config.yaml"
ISTIO_METRICS = OBSERVABILITY / "istio/standard-metrics.yaml"

INSTALL_HINTS = {
    "promtool": "apt-get install --no-install-recommends prometheus",
    "prometheus": "apt-get install --no-install-recommends prometheus",
    "jaeger": "go build github.com/jaegertracing/jaeger/cmd/jaeger from tools/go.mod (cargo xtask test does)",
}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; install it: {INSTALL_HINTS.get(name, name)}", pytrace=False)
    return path


def required_dir(variable: str, what: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.fail(f"set {variable} to {what}", pytrace=False)
    path = Path(value).resolve()
    if not path.is_dir():
        pytest.fail(f"{variable}={value} is not a directory ({what})", pytrace=False)
    return path


def run(args: list[str], *, cwd: Path = REPO_ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; the caller judges the exit code."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
