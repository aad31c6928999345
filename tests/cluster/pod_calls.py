"""Calls made from inside a pod's network namespace by a thread that entered it (setns(2) acts
on the calling thread only): what a kubelet's probe through the pod's agent or a `curl
localhost` in the pod would reach, the app's admin port and Envoy's admin on 127.0.0.1, with no
process per call. Sockets such a call opens belong to the pod's namespace; the test process's
other threads stay in the control plane's."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import netns

T = TypeVar("T")


class InsidePod:
    """One thread in the network namespace `name` (`ip netns add`'s name), running what it is given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"in-{name}", initializer=netns.enter,
                                          initargs=(name,))

    def call(self, function: Callable[..., T], *args, **kwargs) -> T:
        return self._thread.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
