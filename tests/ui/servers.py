"""The real recommendations and marketplace binaries, started on free ports and stopped again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.1
# Given to the shop so its footer links each page's trace; never followed (nothing listens).
JAEGER_UI = "http://127.0.0.1:16686"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on. All are held open until all are chosen, so
    the kernel cannot hand out the same one twice."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], str]:
    """Status, headers and body text of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


class Server:
    """One binary running with the given settings, its output in a log file."""

    def __init__(self, binary: Path, env: dict[str, str], admin_port: int, log_path: Path):
        self.name = binary.name
        self.binary = binary
        self.admin_port = admin_port
        self.log_path = log_path
        # Only what the test sets: nothing from the caller's shell (an OTLP endpoint, say).
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_FORMAT": "json",
                    "RUST_LOG": "info", "SHUTDOWN_DELAY_SECONDS": "0", **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(self.binary)], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self) -> None:
        """Poll /readyz on the admin port until it answers 200; fail (with the log) if the
        process exits or the deadline passes."""
        assert self.process is not None
        url = f"http://127.0.0.1:{self.admin_port}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode} before it was ready:\n"
                            f"{self.log_tail()}", pytrace=False)
            try:
                status, _, _ = http_get(url, timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass  # Not listening yet.
            time.sleep(POLL_INTERVAL_SECONDS)
        pytest.fail(f"{self.name} was not ready within {READY_TIMEOUT_SECONDS:.0f} s ({url}):\n"
                    f"{self.log_tail()}", pytrace=False)

    def stop(self) -> None:
        """SIGTERM, as Kubernetes sends it; SIGKILL only if it outlives the timeout."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start(binary: Path, env: dict[str, str], admin_port: int, log_path: Path) -> Server:
    """A started and ready server; stopped again if it never gets ready."""
    server = Server(binary, env, admin_port, log_path)
    server.start()
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def running_shop(bin_dir: Path, logs: Path, label: str, catalog: Path | None = None) -> Iterator[str]:
    """Both services, wired together, recommendations serving `catalog` (default: the
    embedded one); the marketplace's base URL. `label` names their log files in `logs`."""
    grpc, recommendations_admin, http, marketplace_admin = free_ports(4)
    recommendations_env = {"GRPC_PORT": str(grpc), "ADMIN_PORT": str(recommendations_admin)}
    if catalog is not None:
        recommendations_env["CATALOG_PATH"] = str(catalog)
    recommendations = start(bin_dir / "recommendations", recommendations_env,
                            recommendations_admin, logs / f"{label}-recommendations.log")
    try:
        marketplace = start(
            bin_dir / "marketplace",
            {"HTTP_PORT": str(http), "ADMIN_PORT": str(marketplace_admin),
             "RECOMMENDATIONS_HOST": "127.0.0.1", "RECOMMENDATIONS_PORT": str(grpc),
             "JAEGER_UI_URL": JAEGER_UI},
            marketplace_admin, logs / f"{label}-marketplace.log")
        try:
            yield f"http://127.0.0.1:{http}"
        finally:
            marketplace.stop()
    finally:
        recommendations.stop()
