"""Fixtures: the built binaries (bookshop.bin_dir) and a log directory that is printed when a
test fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with tests/ui)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the logs of the processes the test started (tmp_path/logs)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        tmp = item.funcargs.get("tmp_path")
        if tmp is not None:
            for log in sorted(Path(tmp).glob("logs/*.log")):
                report.sections.append((f"log {log.name}", log.read_text(errors="replace")[-4000:]))
