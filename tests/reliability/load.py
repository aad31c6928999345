"""Steady load on the marketplace: a few threads loading `GET /` one after another, each page
judged whole, degraded (the notice instead of recommendations) or failed, with when it ran."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType

from loopback import http_get

WHOLE, DEGRADED, FAILED = "whole", "degraded", "failed"
# What marketplace/templates/recommendations.html shows instead of the books.
NOTICE = "recommendations are unavailable"
BOOKS_PER_PAGE = 3
# Generous: a page answers within the marketplace's 500 ms deadline on a quiet machine.
PAGE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Page:
    start: float  # time.monotonic()
    end: float
    outcome: str
    detail: str

    def overlaps(self, start: float, end: float) -> bool:
        return self.start <= end and self.end >= start


def judge(status: int, body: str) -> tuple[str, str]:
    """A page's outcome and, unless whole, why."""
    if status != 200:
        return FAILED, f"status {status}: {body[:200]!r}"
    if NOTICE in body:
        return DEGRADED, "the notice instead of recommendations"
    if body.count("<li>") != BOOKS_PER_PAGE:
        return FAILED, f"200 with {body.count('<li>')} <li> and no notice"
    return WHOLE, ""


def load_page(url: str) -> Page:
    start = time.monotonic()
    try:
        status, _, body = http_get(url, timeout=PAGE_TIMEOUT)
        outcome, detail = judge(status, body)
    except OSError as err:  # refused, reset, timed out: the user sees an error
        outcome, detail = FAILED, f"{type(err).__name__}: {err}"
    return Page(start, time.monotonic(), outcome, detail)


class SteadyLoad:
    """`threads` clients, each loading `url` and pausing `pause` seconds between pages, from
    `__enter__` until `__exit__` (or `stop`)."""

    def __init__(self, url: str, *, threads: int = 3, pause: float = 0.01) -> None:
        self.url = url
        self.pause = pause
        self.pages: list[Page] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True) for i in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            page = load_page(self.url)
            with self._lock:
                self.pages.append(page)
            self._stop.wait(self.pause)

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Page]:
        self._stop.set()
        for thread in self._threads:
            # A page takes at most PAGE_TIMEOUT; a thread still running after that is stuck.
            thread.join(timeout=PAGE_TIMEOUT + 5)
            if thread.is_alive():
                raise AssertionError(f"{thread.name} still loading a page {PAGE_TIMEOUT + 5:.0f}s after the load stopped")
        with self._lock:
            return sorted(self.pages, key=lambda page: page.start)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def snapshot(self) -> list[Page]:
        with self._lock:
            return list(self.pages)


def counts(pages: list[Page]) -> Counter[str]:
    tally = Counter({WHOLE: 0, DEGRADED: 0, FAILED: 0})
    tally.update(page.outcome for page in pages)
    return tally
