"""The real recommendations and marketplace binaries, wired together on free loopback ports,
started until ready and stopped again; and the `bin_dir` fixture that finds them."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import pytest

from loopback import Process, Reply, free_ports, http_get
from outside_tools import required_dir

BINARIES = ("recommendations", "marketplace")
# Both services: JSON logs, no shutdown delay (no load balancer to drain), a short bound on it.
SETTINGS = {"LOG_FORMAT": "json", "RUST_LOG": "info", "SHUTDOWN_DELAY_SECONDS": "0",
            "SHUTDOWN_TIMEOUT_SECONDS": "5"}


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """BOOKSHOP_BIN_DIR, holding both binaries, built."""
    what = "the directory holding the built recommendations and marketplace binaries"
    path = required_dir("BOOKSHOP_BIN_DIR", what)
    for name in BINARIES:
        if not os.access(path / name, os.X_OK):
            pytest.fail(f"BOOKSHOP_BIN_DIR={path} has no executable `{name}` ({what}; "
                        "cargo build -p marketplace -p recommendations)", pytrace=False)
    return path


class Bookshop:
    """Both services, the marketplace calling recommendations, with only the settings given
    here (nothing from the caller's shell). Options:
    - otlp_endpoint: both export spans there, every trace sampled;
    - jaeger_ui_url: the marketplace links each page's trace there;
    - catalog_path: recommendations serves that catalog (default: the embedded one);
    - recommendations_down: only the marketplace runs, its recommendations port has nothing behind it;
    - recommendations_address: (host, port) the marketplace calls instead of recommendations' own
      port (a proxy in front of it, say);
    - recommendations_settings: more environment for recommendations (a lower concurrency limit, say);
    - label: prefixes the log files' names in `log_dir` (`<label>-marketplace.log`)."""

    def __init__(self, bin_dir: Path, log_dir: Path, *, otlp_endpoint: str | None = None,
                 jaeger_ui_url: str | None = None, catalog_path: Path | None = None,
                 recommendations_down: bool = False, recommendations_address: tuple[str, int] | None = None,
                 recommendations_settings: dict[str, str] | None = None, label: str | None = None) -> None:
        self.grpc_port, self.recommendations_admin, self.http_port, self.marketplace_admin = free_ports(4)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.recommendations_down = recommendations_down
        both = dict(SETTINGS)
        if otlp_endpoint:
            both |= {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
        recommendations_env = {**both, "GRPC_PORT": str(self.grpc_port), "ADMIN_PORT": str(self.recommendations_admin),
                               **(recommendations_settings or {})}
        if catalog_path is not None:
            recommendations_env["CATALOG_PATH"] = str(catalog_path)
        called_host, called_port = recommendations_address or ("127.0.0.1", self.grpc_port)
        marketplace_env = {**both, "HTTP_PORT": str(self.http_port), "ADMIN_PORT": str(self.marketplace_admin),
                           "RECOMMENDATIONS_HOST": called_host, "RECOMMENDATIONS_PORT": str(called_port)}
        if jaeger_ui_url:
            marketplace_env["JAEGER_UI_URL"] = jaeger_ui_url

        def service(name: str, env: dict[str, str]) -> Process:
            log = log_dir / (f"{label}-{name}.log" if label else f"{name}.log")
            return Process(name, [str(bin_dir / name)], log, env, isolated=True)
        self.recommendations = service("recommendations", recommendations_env)
        self.marketplace = service("marketplace", marketplace_env)

    def start_recommendations(self) -> None:
        """Start (or restart) recommendations and wait until it is ready."""
        self.recommendations.start_ready(f"http://127.0.0.1:{self.recommendations_admin}/readyz")

    def start(self) -> Bookshop:
        """Both services (recommendations first), ready; whatever started is stopped again if
        the rest never gets ready."""
        try:
            if not self.recommendations_down:
                self.start_recommendations()
            self.marketplace.start_ready(f"http://127.0.0.1:{self.marketplace_admin}/readyz")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in (self.marketplace, self.recommendations):
            process.stop()

    def __enter__(self) -> Bookshop:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def page(self, query: str = "", headers: dict[str, str] | None = None) -> Reply:
        """GET the marketplace's `/<query>`."""
        return http_get(f"{self.url}/{query}", headers=headers)
