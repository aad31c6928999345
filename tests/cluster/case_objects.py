"""What tests/mesh's cases need of the dev cluster beyond the overlay, made through the API
server as a developer would make it, and undone at the end: `mesh-probe` from
istio/verify/probes.yaml (in the mesh as sa/default: the "another identity" cases), which the
scheduler places, kwok runs and istiod's webhook injects; and recommendations' concurrency limit
lowered in its Deployment's env (the shedding case), so the pod the rollout makes is what runs
with it (pod_apps.py reads the pod spec)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import yaml

from controlplane import Client
from inputs import NAMESPACE, PROBES, find, parse
from loopback_mesh import RECOMMENDATIONS_CONCURRENCY

PROBE = "mesh-probe"
LIMITED = "recommendations"
LIMIT = f"GRPC_MAX_CONCURRENT_CALLS={RECOMMENDATIONS_CONCURRENCY}"
TIMEOUT = "90s"


def _rolled_out(cluster: Client) -> None:
    cluster.kubectl("rollout", "status", f"deployment/{LIMITED}", "-n", NAMESPACE, f"--timeout={TIMEOUT}")


@contextmanager
def made(cluster: Client) -> Iterator[None]:
    """The probe Running and Ready (so it has a pod IP) and recommendations rolled out with the
    lower limit, until the block ends; then the probe deleted and the Deployment's env as
    rendered again (its first ReplicaSet back), rolled out."""
    probe = find(parse(PROBES.read_text()), "Pod", PROBE, NAMESPACE)
    start = time.monotonic()
    try:
        cluster.apply(yaml.safe_dump(probe))
        cluster.kubectl("set", "env", f"deployment/{LIMITED}", "-n", NAMESPACE, LIMIT)
        cluster.kubectl("wait", "--for=condition=Ready", f"pod/{PROBE}", "-n", NAMESPACE, f"--timeout={TIMEOUT}")
        _rolled_out(cluster)
        cluster.progress(f"{PROBE} ready and {LIMITED} rolled out with {LIMIT} in {time.monotonic() - start:.1f} s")
        yield
    finally:
        start = time.monotonic()
        cluster.kubectl("delete", "pod", PROBE, "-n", NAMESPACE, "--ignore-not-found", f"--timeout={TIMEOUT}")
        cluster.kubectl("set", "env", f"deployment/{LIMITED}", "-n", NAMESPACE, f"{LIMIT.split('=')[0]}-")
        _rolled_out(cluster)
        cluster.progress(f"{PROBE} deleted and {LIMITED} rolled back in {time.monotonic() - start:.1f} s")
