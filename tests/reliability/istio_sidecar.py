"""What Istio's own translation gives the marketplace's sidecar for its calls to recommendations:
the outbound listener on recommendations' cluster IP (the VirtualService's route: timeout,
retries) and the `outbound|50051||recommendations…` cluster (the DestinationRule: balancing,
connection pool, outlier detection). Made by tools/istio/mesh-xds from the rendered dev overlay,
exactly as tests/mesh makes it (its modules, on the loopback addresses it plans), so a change to
istio/ changes the proxy the reliability tests run behind, and nothing Istio does not configure
(an active health check) is added. Also the recommendations pod's probes, read from the same
render: after a kill, they are what tells the mesh the pod is back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoys import translate
from inputs import (NAMESPACE, PROBES, RECOMMENDATIONS_PORT, Plan, find, install_manifest, loopback_inputs, parse,
                    render_overlay, services_of, write_inputs)

HOST = f"recommendations.{NAMESPACE}.svc.cluster.local"
CLUSTER = f"outbound|{RECOMMENDATIONS_PORT}||{HOST}"
# mesh-xds names each output after the pod tests/mesh's inputs add for the marketplace.
MARKETPLACE_POD = f"{NAMESPACE}.marketplace-loopback"


@dataclass(frozen=True)
class Probes:
    """The recommendations container's probe periods: after a restart the startup probe passes
    within `startup_period` of the server serving, then the readiness probe within
    `readiness_period` marks the pod Ready, and only then is its endpoint listed again."""
    startup_period: float
    readiness_period: float

    @property
    def ready_after_serving(self) -> float:
        """The longest a serving container waits to be Ready."""
        return self.startup_period + self.readiness_period


@dataclass(frozen=True)
class SidecarConfig:
    """Istio's listener and cluster for the call, and the address the app dials (recommendations'
    cluster IP and port, which the listener binds on the loopback as the Sidecar's egress does)."""
    listener: dict[str, Any]
    cluster: dict[str, Any]
    address: tuple[str, int]
    probes: Probes


def _probes(rendered: list[dict[str, Any]]) -> Probes:
    containers = find(rendered, "Deployment", "recommendations", NAMESPACE)["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "recommendations"]
    return Probes(startup_period=float(container["startupProbe"].get("periodSeconds", 10)),
                  readiness_period=float(container["readinessProbe"].get("periodSeconds", 10)))


def translate_marketplace_sidecar(work_dir: Path) -> SidecarConfig:
    """Run Istio's translation over the dev overlay and pick the marketplace sidecar's outbound
    listener and cluster for recommendations out of the bootstrap mesh-xds writes."""
    rendered, install = render_overlay(), install_manifest()
    plan = Plan.pick(services_of(rendered, install))
    # The apps' own ports only shape the inbound listeners, which are not used here.
    docs = loopback_inputs(rendered, install, parse(PROBES.read_text()), plan, app_ports=(1, 1))
    translate([write_inputs(docs, work_dir / "inputs.yaml")], work_dir / "sds", work_dir)
    bootstrap = json.loads((work_dir / f"{MARKETPLACE_POD}.bootstrap.json").read_text())
    address = (plan.cluster_ip(NAMESPACE, "recommendations"), RECOMMENDATIONS_PORT)
    resources = bootstrap["static_resources"]
    listeners = [listener for listener in resources["listeners"]
                 if listener["address"]["socket_address"] == {"address": address[0], "port_value": address[1]}]
    clusters = [cluster for cluster in resources["clusters"] if cluster["name"] == CLUSTER]
    if len(listeners) != 1 or len(clusters) != 1:
        raise AssertionError(f"{work_dir}/{MARKETPLACE_POD}.bootstrap.json: expected one listener on "
                             f"{address[0]}:{address[1]} and one cluster {CLUSTER}, found {len(listeners)} and "
                             f"{len(clusters)}")
    return SidecarConfig(listeners[0], clusters[0], address, _probes(rendered))
