"""The network namespace the control plane lives in. Pod IPs cannot be loopback addresses (the
API server rejects an EndpointSlice address in 127.0.0.0/8), so the control plane, its nodes'
and pods' addresses sit on the `lo` of a namespace of our own: every address of the ranges below
is local there, and nothing leaves it. `ip netns add` names it, so a second shell can join it
(`ip netns exec NAME …`); this process enters it with setns(2), so everything it starts does too."""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

# The API server and the kwok nodes' InternalIPs.
HOST_RANGE = "10.240.0.0/24"
API_IP = "10.240.0.1"
# The nodes' InternalIP (kwok gives them all one; nothing here dials a node).
NODE_IP = "10.240.0.10"
# Pod IPs (kwok's --cidr) and Services' cluster IPs (the API server's range).
POD_RANGE = "10.244.0.0/16"
SERVICE_RANGE = "10.96.0.0/16"
# The `kubernetes` Service's cluster IP: the first of SERVICE_RANGE.
KUBERNETES_SERVICE_IP = "10.96.0.1"

CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def namespace(name: str) -> Iterator[None]:
    """Creates `name`, moves this process into it, and on exit back to where it was before
    removing it."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    create(name)
    try:
        enter(name)
        yield
    finally:
        _setns_fd(home)
        os.close(home)
        delete(name)


def create(name: str) -> None:
    """A new namespace `name` with `lo` up, carrying the host and pod ranges. (A dummy link would
    do, but this kernel has no `dummy` module; `lo` holds a whole prefix as local addresses.)
    The pod range is a `local` route rather than an address: no pod IP is an address of the
    namespace's own (kwok hands out 10.244.0.1 first), so a pod given its own namespace
    (podnet.py) takes its IP over with a more specific route."""
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{API_IP}/24", "dev", "lo")
        _ip("-n", name, "route", "add", "local", POD_RANGE, "dev", "lo", "table", "local")
    except subprocess.CalledProcessError:
        delete(name)
        raise


def enter(name: str) -> None:
    """Moves this process into the namespace `name` (for good)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


def current() -> str:
    """The name (`ip netns add`'s) of the namespace this process is in."""
    here = os.stat("/proc/self/ns/net")
    for name in os.listdir("/run/netns"):
        there = os.stat(f"/run/netns/{name}")
        if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino):
            return name
    raise RuntimeError("this process is in no named network namespace")


def _setns_fd(fd: int) -> None:
    """setns(2) for this thread (the main one: pytest and our scripts start no other); the
    children it starts from then on are in that namespace too. Python 3.11 has no os.setns."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def delete(name: str) -> None:
    """Removes the name; the namespace goes when its last process does."""
    subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
