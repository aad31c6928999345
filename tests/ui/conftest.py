"""Session fixtures: the two real binaries (and a marketplace whose recommendations is down),
one headless Chromium, and where screenshots and logs go."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import browser
import servers

BINARIES = ("recommendations", "marketplace")


@cache
def artifacts_dir() -> Path:
    """BOOKSHOP_ARTIFACTS_DIR, else `ui/` under the cargo target dir, else a fresh temp dir."""
    if value := os.environ.get("BOOKSHOP_ARTIFACTS_DIR"):
        path = Path(value)
    elif value := os.environ.get("CARGO_TARGET_DIR"):
        path = Path(value) / "ui"
    else:
        path = Path(tempfile.mkdtemp(prefix="bookshop-ui-"))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if artifacts_dir.cache_info().currsize:  # Only when a test made some.
        terminalreporter.write_line(f"tests/ui: screenshots and logs in {artifacts_dir()}")


@pytest.fixture(scope="session")
def screenshots() -> Path:
    return artifacts_dir() / "screenshots"


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    value = os.environ.get("BOOKSHOP_BIN_DIR")
    what = "the directory holding the built recommendations and marketplace binaries"
    if not value:
        pytest.fail(f"set BOOKSHOP_BIN_DIR to {what}", pytrace=False)
    path = Path(value).resolve()
    for name in BINARIES:
        if not os.access(path / name, os.X_OK):
            pytest.fail(f"BOOKSHOP_BIN_DIR={value} has no executable `{name}` ({what}; "
                        "cargo build -p marketplace -p recommendations)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    return artifacts_dir() / "logs"


@pytest.fixture(scope="session")
def shop(bin_dir: Path, logs_dir: Path) -> Iterator[str]:
    """The shop as shipped, with the embedded catalog."""
    with servers.running_shop(bin_dir, logs_dir, "shop") as url:
        yield url


@pytest.fixture(scope="session")
def degraded_shop(bin_dir: Path, logs_dir: Path) -> Iterator[str]:
    """A marketplace whose recommendations port has nothing behind it; its base URL."""
    nobody, http, admin = servers.free_ports(3)
    marketplace = servers.start(
        bin_dir / "marketplace",
        {"HTTP_PORT": str(http), "ADMIN_PORT": str(admin),
         "RECOMMENDATIONS_HOST": "127.0.0.1", "RECOMMENDATIONS_PORT": str(nobody)},
        admin, logs_dir / "degraded-marketplace.log")
    try:
        yield f"http://127.0.0.1:{http}"
    finally:
        marketplace.stop()


@pytest.fixture(scope="session")
def driver(logs_dir: Path) -> Iterator[Any]:
    session = browser.chrome(logs_dir / "chromedriver.log")
    try:
        yield session
    finally:
        session.quit()
