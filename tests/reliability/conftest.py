"""Fixtures: the built binaries (bookshop.bin_dir), Istio's translation of the marketplace
sidecar's call to recommendations, and the page counts of each run, printed at the end of the session and written to BOOKSHOP_ARTIFACTS_DIR. A failed
test shows the logs of the processes it started."""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with the other suites)
from failure_logs import pytest_runtest_makereport  # noqa: F401 (a failed test shows its processes' logs)
from istio_sidecar import SidecarConfig, translate_marketplace_sidecar

# Each run's summary line and numbers, in the order the tests ran.
RESULTS: list[dict[str, Any]] = []


@cache
def artifacts_dir() -> Path:
    """`reliability/` under BOOKSHOP_ARTIFACTS_DIR, else a fresh temp dir."""
    base = os.environ.get("BOOKSHOP_ARTIFACTS_DIR")
    path = Path(base) / "reliability" if base else Path(tempfile.mkdtemp(prefix="bookshop-reliability-"))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


@pytest.fixture(scope="session")
def sidecar() -> SidecarConfig:
    """Istio's translation, once per session; its files stay under the artifacts' istio/."""
    return translate_marketplace_sidecar(artifacts_dir() / "istio")


@pytest.fixture
def record() -> Any:
    """record(name, line, **numbers): one run's summary, printed with -q too."""
    def add(name: str, line: str, **numbers: Any) -> None:
        RESULTS.append({"run": name, "summary": line, **numbers})
        (artifacts_dir() / "page-counts.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("page loads through Envoy")
        for result in RESULTS:
            terminalreporter.write_line(f"{result['run']}: {result['summary']}")
        terminalreporter.write_line(f"(also in {artifacts_dir() / 'page-counts.json'})")
