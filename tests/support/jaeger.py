"""A real Jaeger v2 (all-in-one, built from the pinned Go module under tools/jaeger) on loopback,
configured by observability/jaeger/config.yaml, and its query API: traces by service or by id."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

from loopback import Process, free_ports, get_json, http_get
from outside_tools import REPO_ROOT, require_tool

JAEGER_CONFIG = REPO_ROOT / "observability/jaeger/config.yaml"
PORT_NAMES = ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "health", "metrics")


class Jaeger:
    """A Jaeger v2 process on free 127.0.0.1 ports (or `ports`, to come back on the same ones).
    `otlp_grpc_address` puts its OTLP/gRPC receiver elsewhere, e.g. on a pod's loopback address."""

    def __init__(self, log_dir: Path, ports: dict[str, int] | None = None, *,
                 otlp_grpc_address: tuple[str, int] | None = None) -> None:
        self.ports = ports or dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        otlp_host, otlp_port = otlp_grpc_address or ("127.0.0.1", self.ports["otlp_grpc"])
        env = {
            "OTLP_GRPC_ENDPOINT": f"{otlp_host}:{otlp_port}",
            "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['otlp_http']}",
            "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['query_http']}",
            "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{self.ports['query_grpc']}",
            "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{self.ports['health']}",
            "JAEGER_METRICS_HOST": "127.0.0.1",
            "JAEGER_METRICS_PORT": str(self.ports["metrics"]),
        }
        self.process = Process("jaeger", [require_tool("jaeger"), f"--config={JAEGER_CONFIG}"],
                               log_dir / "jaeger.log", env)
        self.otlp_endpoint = f"http://{otlp_host}:{otlp_port}"
        self.query = f"http://127.0.0.1:{self.ports['query_http']}"

    def start(self) -> Jaeger:
        # Healthy, then its query API up too.
        self.process.start_ready(f"http://127.0.0.1:{self.ports['health']}/status", f"{self.query}/api/services")
        return self

    def stop(self) -> None:
        self.process.stop()

    def traces(self, service: str, since: float, until: float | None = None) -> list[dict]:
        """The service's traces that began between `since` and `until` (default: from now on too)."""
        end = until if until is not None else time.time() + 60
        params = urllib.parse.urlencode({"service": service, "start": int(since * 1e6),
                                         "end": int(end * 1e6), "limit": 1000})
        return get_json(f"{self.query}/api/traces?{params}")["data"]

    def trace(self, trace_id: str) -> dict | None:
        status = http_get(f"{self.query}/api/traces/{trace_id}").status
        if status == 404:
            return None
        data = get_json(f"{self.query}/api/traces/{trace_id}")["data"]
        return data[0] if data else None
