"""Fixtures: the built binaries and a log directory that is printed when a test fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import required_dir


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    path = required_dir("BOOKSHOP_BIN_DIR", "the directory holding the built recommendations and marketplace binaries")
    for name in ("recommendations", "marketplace"):
        if not (path / name).is_file():
            pytest.fail(f"{path / name} is missing: build the workspace first", pytrace=False)
    return path


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
