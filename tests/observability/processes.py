"""Starting the real programs on loopback ports, waiting (bounded) until they are ready, and
stopping them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Every wait is bounded by one of these; generous, for a loaded 2-core machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers too, not exceptions."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def get_json(url: str, *, timeout: float = 10.0) -> Any:
    status, body = http_get(url, timeout=timeout)
    if status != 200:
        raise AssertionError(f"GET {url}: {status} {body[:500]}")
    return json.loads(body)


def wait_until(what: str, check: Callable[[], Any], *, timeout: float, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, AssertionError, ValueError) as err:
            last_error = err
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}"
                                 + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


class Process:
    """One running program, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.popen = subprocess.Popen(self.args, env={**os.environ, **self.env}, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return self

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT) -> Process:
        def ready() -> bool:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            return http_get(url, timeout=2)[0] == 200
        try:
            wait_until(f"{self.name} at {url}", ready, timeout=timeout)
        except RuntimeError as err:
            raise AssertionError(str(err)) from None
        return self

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it outlives STOP_TIMEOUT; the exit code."""
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout=STOP_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Bookshop:
    """Both real services on free loopback ports, optionally exporting spans over OTLP."""

    def __init__(self, bin_dir: Path, log_dir: Path, otlp_endpoint: str | None = None) -> None:
        self.bin_dir = bin_dir
        self.log_dir = log_dir
        self.grpc_port, self.recommendations_admin = free_port(), free_port()
        self.http_port, self.marketplace_admin = free_port(), free_port()
        common = {"SHUTDOWN_DELAY_SECONDS": "0", "SHUTDOWN_TIMEOUT_SECONDS": "5", "LOG_FORMAT": "json",
                  "RUST_LOG": "info"}
        if otlp_endpoint:
            common["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
            common["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
        self.recommendations_env = {**common, "GRPC_PORT": str(self.grpc_port),
                                    "ADMIN_PORT": str(self.recommendations_admin)}
        self.marketplace_env = {**common, "HTTP_PORT": str(self.http_port),
                                "ADMIN_PORT": str(self.marketplace_admin),
                                "RECOMMENDATIONS_HOST": "127.0.0.1",
                                "RECOMMENDATIONS_PORT": str(self.grpc_port)}
        self.recommendations: Process | None = None
        self.marketplace: Process | None = None

    def start_recommendations(self) -> None:
        self.recommendations = Process("recommendations", [str(self.bin_dir / "recommendations")],
                                       self.recommendations_env, self.log_dir).start()
        self.recommendations.wait_ready(f"http://127.0.0.1:{self.recommendations_admin}/readyz")

    def start(self) -> Bookshop:
        self.start_recommendations()
        self.marketplace = Process("marketplace", [str(self.bin_dir / "marketplace")],
                                   self.marketplace_env, self.log_dir).start()
        self.marketplace.wait_ready(f"http://127.0.0.1:{self.marketplace_admin}/readyz")
        return self

    def stop(self) -> None:
        for process in (self.marketplace, self.recommendations):
            if process is not None:
                process.stop()

    def page(self, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.http_port}/{query}", headers=headers)
