"""What tests/mesh's cases ask of `mesh.callers`, on the pods. Who makes a call follows from its
address, as in the loopback mesh, where each listener is bound where the case addresses it:
- a Service's cluster IP: from inside the marketplace's pod, where its app makes it (captured
  to its Envoy, which gives it the marketplace's identity);
- the probe's pod IP (in the loopback, mesh-probe's egress listeners are bound there): from
  inside the probe's pod, to the Service the call's authority or Host names, at the same port
  (captured to the probe's Envoy: the identity sa/default);
- any other pod IP: from the control plane's namespace, outside the mesh (plaintext to an
  inbound port, captured there to 15006; the gateway's listener)."""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import clients
import netns
import podnet
from clients import Answer, Callers
from pod_caller import HOLD
from pod_calls import InsidePod

if TYPE_CHECKING:
    from shop_pods import PodPlan

CALLER = Path(__file__).with_name("pod_caller.py")
CALL_TIMEOUT = 60


def is_cluster_ip(target: str) -> bool:
    return ipaddress.ip_address(target.rsplit(":", 1)[0]) in ipaddress.ip_network(netns.SERVICE_RANGE)


class PodCallers:
    """clients.Callers' calls, each made where its address says. A caller in a pod runs as root
    there (captured like the app's uid; only the proxy's is not): the app's uid cannot read this
    venv."""

    def __init__(self, pods: dict[str, podnet.PodNetwork], plan: PodPlan, stubs_dir: Path) -> None:
        self.pods = pods
        self.plan = plan
        self.stubs_dir = stubs_dir
        self.outside = Callers(stubs_dir)
        self._held: subprocess.Popen[str] | None = None

    def _from(self, target: str, authority: str | None) -> tuple[podnet.PodNetwork | None, str]:
        """The pod a call to `target` is made from (None: outside), and the address it dials there."""
        host, port = target.rsplit(":", 1)
        if is_cluster_ip(target):
            return self.pods["marketplace"], target
        if authority and host == self.plan.pods.get("probe"):
            name, namespace = authority.split(":")[0].split(".")[:2]
            return self.pods["probe"], f"{self.plan.cluster_ip(namespace, name)}:{port}"
        return None, target

    def _inside(self, pod: podnet.PodNetwork, method: str, message: type, target: str, *authority: str) -> Answer:
        result = pod.run([sys.executable, CALLER, self.stubs_dir, method, target, *authority], timeout=CALL_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"{method} from {pod.name} failed:\n{result.stderr[-3000:]}")
        answer = json.loads(result.stdout)
        body = None if answer["body"] is None else message.FromString(base64.b64decode(answer["body"]))
        return Answer(answer["code"], body, answer["detail"])

    def recommend(self, target: str, authority: str | None = None) -> Answer:
        pod, dialed = self._from(target, authority)
        if pod is None:
            return self.outside.recommend(target, authority)
        return self._inside(pod, "recommend", self.outside.messages.RecommendationResponse, dialed,
                            *([authority] if authority else []))

    def health(self, target: str) -> Answer:
        pod, dialed = self._from(target, None)
        if pod is None:
            return self.outside.health(target)
        return self._inside(pod, "health", health_pb2.HealthCheckResponse, dialed)

    def list_services(self, target: str) -> Answer:
        pod, dialed = self._from(target, None)
        if pod is None:
            return self.outside.list_services(target)
        return self._inside(pod, "list_services", reflection_pb2.ServerReflectionResponse, dialed)

    def http_get(self, address: str, port: int, path: str, host: str,
                 headers: dict[str, str] | None = None) -> Answer:
        """clients.http_get, from a thread inside the pod when the address says so."""
        pod, dialed = self._from(f"{address}:{port}", host)
        if pod is None:
            return clients.http_get(address, port, path, host, headers)
        inside = InsidePod(pod.name)
        try:
            return inside.call(clients.http_get, dialed.rsplit(":", 1)[0], port, path, host, headers)
        finally:
            inside.close()

    @contextmanager
    def recommend_held_open(self, target: str) -> Iterator[None]:
        """Callers.recommend_held_open, from inside the calling pod: `pod_caller.py hold`, which
        also makes the burst (`recommend_all_at_once`) asked for while it holds."""
        pod, dialed = self._from(target, None)
        if pod is None:
            with self.outside.recommend_held_open(target):
                yield
            return
        self._held = pod.spawn([sys.executable, CALLER, self.stubs_dir, HOLD, dialed], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if self._held.stdout.readline().strip() != "holding":
                raise RuntimeError(f"no held call from {pod.name}: {self._held.stderr.read()[-3000:]}")
            yield
        finally:
            held, self._held = self._held, None
            try:
                if not held.stdin.closed:  # no burst asked for: it lets the held call go at once
                    held.stdin.write("0\n")
                    held.stdin.close()
            except BrokenPipeError:  # it has ended already (its stderr says why)
                pass
            held.wait(CALL_TIMEOUT)

    def recommend_all_at_once(self, target: str, count: int) -> list[str]:
        """Callers.recommend_all_at_once; while a call is held open in a pod, by the process
        holding it (already running: the burst starts at once)."""
        if self._held is None:
            return self.outside.recommend_all_at_once(target, count)
        self._held.stdin.write(f"{count}\n")
        self._held.stdin.close()
        line = self._held.stdout.readline()
        if not line:
            raise RuntimeError(f"no burst from the held caller: {self._held.stderr.read()[-3000:]}")
        return json.loads(line)
