"""Real programs on loopback ports: free ports, GETs, bounded waits, and a process that is
started and waited on until ready (`Process.start_ready`: how every suite starts a program it
then talks to), and stopped (SIGTERM, then SIGKILL)."""

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
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import pytest

# Every wait is bounded by one of these; generous, for a loaded 2-core machine.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on. All are held open until all are chosen, so
    the kernel cannot hand out the same one twice."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: str


def http_get(url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None) -> Reply:
    """Status, headers and body text of a GET; HTTP errors are answers too, not exceptions."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read().decode())


def get_json(url: str, *, timeout: float = 10.0) -> Any:
    """The JSON body of a GET that must answer 200."""
    status, _, body = http_get(url, timeout=timeout)
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
    """One program, its output in a log file: written afresh at the first start, appended to
    at a restart. Its environment is the caller's with `env` over it; `isolated`, only PATH
    and `env` (nothing from the caller's shell, an OTLP endpoint say)."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 *, isolated: bool = False) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} if isolated else dict(os.environ)
        self.env = {**base, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb" if self.popen is None else "ab") as log:
            self.popen = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        return self

    def start_ready(self, *urls: str, timeout: float = READY_TIMEOUT,
                    via: Callable[..., Reply] = http_get) -> Process:
        """Start, then wait until each of `urls` answers 200, in order (GET by `via`: another
        network namespace's addresses need a GET made from inside it). If it never gets ready
        it is stopped again before the test fails (with the log's tail): a failed start leaves
        nothing running."""
        self.start()
        try:
            for url in urls:
                self._wait_ready(url, timeout, via)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, url: str, timeout: float, via: Callable[..., Reply]) -> None:
        """Poll `url` until it answers 200; fail, with the log's tail, if the process exits
        or the deadline passes."""
        def ready() -> bool:
            assert self.popen is not None, f"{self.name} was never started"
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.popen.returncode} before it was ready ({url}):\n"
                            f"{self.log_tail()}", pytrace=False)
            return via(url, timeout=2).status == 200
        try:
            wait_until(f"{self.name} at {url}", ready, timeout=timeout, interval=0.1)
        except AssertionError as err:
            pytest.fail(f"{err}:\n{self.log_tail()}", pytrace=False)

    def stop(self) -> int | None:
        """SIGTERM, as Kubernetes sends it; SIGKILL only if it outlives STOP_TIMEOUT. The exit
        code (None if it never started)."""
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

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"
