"""The loopback mesh: the real services, a real Jaeger, and one real Envoy per workload running
what Istio's translation (mesh-xds) made of the manifests, with a test CA's identities. One
`LoopbackMesh` lives for a whole run; `use(flip)` translates that variant of the manifests and
restarts the Envoys on it (the services and Jaeger stay up)."""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType

from bookshop import Bookshop
from clients import Callers
from envoys import Envoy, Envoys, translate
from identities import TestCA, spiffe_id
from inputs import (BASE, GATEWAY, GATEWAY_NAMESPACE, NAMESPACE, OTLP_PORT, PROBES, RECOMMENDATIONS_PORT, Doc,
                    Flip, Plan, install_manifest, loopback_inputs, parse, render_overlay, services_of,
                    write_inputs)
from jaeger import Jaeger


RECOMMENDATIONS_CONCURRENCY = 1


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class LoopbackMesh(Envoys):
    """Everything of one run; configs and logs under `work_dir` (left there to be read)."""

    def __init__(self, bin_dir: Path, work_dir: Path) -> None:
        super().__init__()
        self.work_dir = work_dir
        self.logs = work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rendered = render_overlay()
        self.install = install_manifest()
        self.probes = parse(PROBES.read_text())
        self.plan = Plan.pick(services_of(self.rendered, self.install))
        self.jaeger = Jaeger(self.logs, otlp_grpc_address=(self.plan.jaeger_pod, OTLP_PORT))
        # The apps export their spans straight to Jaeger (in a cluster, through their sidecar).
        # Recommendations admits RECOMMENDATIONS_CONCURRENCY calls at once and sheds the rest, so
        # a small burst shows what the mesh's retries do with its shedding (the cases' single
        # calls never meet the limit).
        self.shop = Bookshop(bin_dir, self.logs, otlp_endpoint=self.jaeger.otlp_endpoint,
                             recommendations_address=(self.plan.cluster_ip(NAMESPACE, "recommendations"),
                                                      RECOMMENDATIONS_PORT),
                             recommendations_settings={"GRPC_MAX_CONCURRENT_CALLS": str(RECOMMENDATIONS_CONCURRENCY)})
        # The gRPC callers, with stubs protoc generates from proto/ for this run.
        self.callers = Callers(work_dir / "stubs")
        self.ca = TestCA()
        self.base_inputs: list[Doc] = loopback_inputs(self.rendered, self.install, self.probes, self.plan,
                                                      app_ports=(self.shop.http_port, self.shop.grpc_port))
        # Who runs an Envoy: (key, namespace, pod, service account, pod address).
        self.workloads = [
            ("gateway", GATEWAY_NAMESPACE, f"{GATEWAY}-loopback", f"{GATEWAY}-service-account", self.plan.gateway_pod),
            ("marketplace", NAMESPACE, "marketplace-loopback", "marketplace", self.plan.marketplace_pod),
            ("recommendations", NAMESPACE, "recommendations-loopback", "recommendations",
             self.plan.recommendations_pod),
            ("probe", NAMESPACE, "mesh-probe", "default", self.plan.probe_pod),
        ]
        # mesh-xds points each bootstrap at <sds dir>/<namespace>.<pod>/<secret>.yaml.
        self.sds_root = work_dir / "sds"
        self.sds = {key: self.ca.write_sds(self.sds_root / f"{namespace}.{pod}", spiffe_id(namespace, account))
                    for key, namespace, pod, account, _ in self.workloads}

    def pod_ip(self, key: str) -> str:
        return next(ip for name, *_, ip in self.workloads if name == key)

    def start(self) -> LoopbackMesh:
        try:
            self.jaeger.start()
            self.shop.start()
        except BaseException:
            self.stop()
            raise
        return self

    def use(self, flip: Flip = BASE) -> LoopbackMesh:
        """The Envoys on what Istio makes of the manifests changed by `flip`."""
        return super().use(flip)

    def _envoys_for(self, flip: Flip) -> dict[str, Envoy]:
        out = self.work_dir / slug(flip.name)
        inputs = write_inputs(flip.apply(self.base_inputs), out / "inputs.yaml")
        translate([inputs], self.sds_root, out)
        return {key: Envoy(f"{slug(flip.name)}-{key}", out / f"{namespace}.{pod}.bootstrap.json",
                           pod_ip=pod_ip, sds_dir=self.sds[key], log_dir=self.logs)
                for key, namespace, pod, _, pod_ip in self.workloads}

    def stop(self) -> None:
        self._stop_envoys()
        self.shop.stop()
        self.jaeger.stop()

    def __enter__(self) -> LoopbackMesh:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
