"""A pytest hook for a suite's conftest (`from failure_logs import pytest_runtest_makereport`):
a failed test's report ends with the tails of the logs its processes wrote to tmp_path/logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TAIL_CHARS = 4000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        tmp = item.funcargs.get("tmp_path")
        if tmp is not None:
            attach(report, Path(tmp) / "logs")


def attach(report: Any, logs: Path, newest: int | None = None) -> None:
    """Appends the tail of each log in `logs` (only the `newest` written to, if given) to a
    test's report."""
    found = sorted(logs.glob("*.log"), key=lambda log: log.stat().st_mtime)[-(newest or 0):]
    for log in sorted(found):
        report.sections.append((f"log {logs.name}/{log.name}", log.read_text(errors="replace")[-TAIL_CHARS:]))
