"""What tests/mesh's cases ask of `mesh.callers`, on the pods: a call to a Service's cluster IP
is made from inside the marketplace's pod, where its app makes it (captured to its Envoy, which
gives it the marketplace's identity); a call to a pod IP is made from the control plane's
namespace, from outside the mesh (plaintext to an inbound port, captured there to 15006)."""

from __future__ import annotations

import base64
import ipaddress
import json
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import netns
import podnet
from clients import Answer, Callers

CALLER = Path(__file__).with_name("pod_caller.py")
CALL_TIMEOUT = 60


def is_cluster_ip(target: str) -> bool:
    return ipaddress.ip_address(target.rsplit(":", 1)[0]) in ipaddress.ip_network(netns.SERVICE_RANGE)


class PodCallers:
    """clients.Callers' single calls, from inside `pod` for a cluster IP. The caller runs as
    root there (captured like the app's uid; only the proxy's is not): the app's uid cannot read
    this venv."""

    def __init__(self, pod: podnet.PodNetwork, stubs_dir: Path) -> None:
        self.pod = pod
        self.stubs_dir = stubs_dir
        self.outside = Callers(stubs_dir)

    def _inside(self, method: str, message: type, target: str, *authority: str) -> Answer:
        result = self.pod.run([sys.executable, CALLER, self.stubs_dir, method, target, *authority],
                              timeout=CALL_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"{method} from {self.pod.name} failed:\n{result.stderr[-3000:]}")
        answer = json.loads(result.stdout)
        body = None if answer["body"] is None else message.FromString(base64.b64decode(answer["body"]))
        return Answer(answer["code"], body, answer["detail"])

    def recommend(self, target: str, authority: str | None = None) -> Answer:
        if not is_cluster_ip(target):
            return self.outside.recommend(target, authority)
        return self._inside("recommend", self.outside.messages.RecommendationResponse, target,
                            *([authority] if authority else []))

    def health(self, target: str) -> Answer:
        if not is_cluster_ip(target):
            return self.outside.health(target)
        return self._inside("health", health_pb2.HealthCheckResponse, target)

    def list_services(self, target: str) -> Answer:
        if not is_cluster_ip(target):
            return self.outside.list_services(target)
        return self._inside("list_services", reflection_pb2.ServerReflectionResponse, target)
