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
from bookshop import Bookshop, bin_dir  # noqa: F401 (bin_dir: the session fixture, shared with tests/observability)


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
def logs_dir() -> Path:
    return artifacts_dir() / "logs"


@pytest.fixture(scope="session")
def jaeger_ui() -> str:
    """Given to the shop so its footer links each page's trace; never followed (nothing listens)."""
    return "http://127.0.0.1:16686"


@pytest.fixture(scope="session")
def shop(bin_dir: Path, logs_dir: Path, jaeger_ui: str) -> Iterator[str]:
    """The shop as shipped, with the embedded catalog; its base URL."""
    with Bookshop(bin_dir, logs_dir, label="shop", jaeger_ui_url=jaeger_ui) as running:
        yield running.url


@pytest.fixture(scope="session")
def degraded_shop(bin_dir: Path, logs_dir: Path) -> Iterator[str]:
    """A marketplace whose recommendations port has nothing behind it, and no Jaeger UI
    address; its base URL."""
    with Bookshop(bin_dir, logs_dir, label="degraded", recommendations_down=True) as running:
        yield running.url


@pytest.fixture(scope="session")
def driver(logs_dir: Path) -> Iterator[Any]:
    session = browser.chrome(logs_dir / "chromedriver.log")
    try:
        yield session
    finally:
        session.quit()
