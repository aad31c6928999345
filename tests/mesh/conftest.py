"""The loopback mesh, started once for the suite (the Envoys restart per flip of the manifests),
and the logs of every process it ran, attached to a failing test's report."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import failure_logs
from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with the other suites)
from loopback_mesh import LoopbackMesh


@pytest.fixture(scope="session")
def mesh(bin_dir, tmp_path_factory) -> Iterator[LoopbackMesh]:  # noqa: F811
    with LoopbackMesh(bin_dir, tmp_path_factory.mktemp("mesh").resolve()) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure of a test that used the mesh, attach the tails of its processes' logs."""
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("mesh")
    if report.when == "call" and report.failed and isinstance(running, LoopbackMesh):
        failure_logs.attach(report, running.logs)
