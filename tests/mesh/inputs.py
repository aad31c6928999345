"""What Istio's translation is fed: the dev overlay as rendered, plus the objects a cluster and
`istioctl install` would add and the loopback needs (docs/mesh.md, "The loopback harness",
lists each one), plus the policy flips the twin cases run under.

Nothing here touches the policies under test (PeerAuthentication, AuthorizationPolicies,
VirtualServices, DestinationRules, Gateway, Telemetry, EnvoyFilter) except a flip, which changes
exactly one thing in a copy."""

from __future__ import annotations

import copy
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from outside_tools import REPO_ROOT, require_tool, run

Doc = dict[str, Any]

OVERLAY = REPO_ROOT / "kustomize/overlays/dev"
INSTALL_CONFIG = REPO_ROOT / "istio/install/istio-operator.yaml"
PROBES = REPO_ROOT / "istio/verify/probes.yaml"
NAMESPACE = "bookshop"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY = "istio-ingressgateway"
# The ports Istio's config names: the containers' ports (Services' targetPorts), which each
# Envoy binds on its pod's address, as a pod's own network namespace would let it.
MARKETPLACE_PORT = 8080
RECOMMENDATIONS_PORT = 50051
OTLP_PORT = 4317
HTTP_SERVICE_PORT = 80
# The istio-proxy container's own ports (the gateway's Service maps 80 -> 8080 to them).
GATEWAY_HTTP_PORT = 8080


def parse(text: str) -> list[Doc]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


def find(docs: list[Doc], kind: str, name: str, namespace: str | None = None) -> Doc:
    """The one object of that kind and name (and namespace); an error naming it if there is none."""
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name
             and (namespace is None or doc["metadata"].get("namespace") == namespace)]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {namespace or '*'}/{name}, found {len(found)}")
    return found[0]


def render_overlay(overlay: Path = OVERLAY) -> list[Doc]:
    """`kubectl kustomize OVERLAY`, parsed."""
    result = run([require_tool("kubectl"), "kustomize", str(overlay)], timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{result.stderr[-3000:]}")
    return parse(result.stdout)


def install_manifest(config: Path = INSTALL_CONFIG) -> list[Doc]:
    """What `istioctl install -f CONFIG` would apply (`istioctl manifest generate`), parsed."""
    result = run([require_tool("istioctl"), "manifest", "generate", "-f", str(config)], timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"istioctl manifest generate -f {config} failed:\n{result.stderr[-3000:]}")
    return parse(result.stdout)


def _bindable(address: str, ports: tuple[int, ...]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


@dataclass(frozen=True)
class Plan:
    """The loopback addresses of one run: a /24 of 127.0.0.0/8 picked at random (so two runs on
    one machine do not meet), one address per pod and per Service's cluster IP."""

    block: str  # "127.A.B"
    cluster_ips: dict[tuple[str, str], str] = field(default_factory=dict)

    def ip(self, host: int) -> str:
        return f"{self.block}.{host}"

    @property
    def marketplace_pod(self) -> str:
        return self.ip(10)

    @property
    def recommendations_pod(self) -> str:
        return self.ip(11)

    @property
    def gateway_pod(self) -> str:
        return self.ip(12)

    @property
    def probe_pod(self) -> str:
        return self.ip(13)

    @property
    def jaeger_pod(self) -> str:
        return self.ip(30)

    def cluster_ip(self, namespace: str, name: str) -> str:
        return self.cluster_ips[(namespace, name)]

    @staticmethod
    def pick(services: list[tuple[str, str]]) -> Plan:
        """A block whose pod addresses can bind the ports their Envoys will (tried a few times)."""
        for _ in range(20):
            block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
            wanted = {10: (MARKETPLACE_PORT, OTLP_PORT), 11: (RECOMMENDATIONS_PORT, OTLP_PORT), 12: (GATEWAY_HTTP_PORT,),
                      13: (RECOMMENDATIONS_PORT, HTTP_SERVICE_PORT), 30: (OTLP_PORT,)}
            cluster_ips = {service: f"{block}.{100 + index}" for index, service in enumerate(sorted(services))}
            if all(_bindable(f"{block}.{host}", ports) for host, ports in wanted.items()) and all(
                    _bindable(address, (RECOMMENDATIONS_PORT,)) for address in cluster_ips.values()):
                return Plan(block, cluster_ips)
        raise RuntimeError("found no 127.x.y.0/24 whose addresses can bind ports 80, 4317, 8080 and 50051: "
                           "are they taken on 0.0.0.0 by something else, or is this not root (port 80 needs root, "
                           "or sysctl net.ipv4.ip_unprivileged_port_start=80)?")


def _pod_from(template: Doc, name: str, namespace: str, pod_ip: str, *, sidecar: bool) -> Doc:
    """The Pod a controller would make from a pod template, scheduled and ready at `pod_ip`. A
    sidecar pod is marked for interception NONE (no iptables on the loopback); the labels the
    injector adds (tlsMode, canonical name and revision) mesh-xds adds, as the injector would."""
    metadata = copy.deepcopy(template.get("metadata", {}))
    labels = dict(metadata.get("labels", {}))
    annotations = dict(metadata.get("annotations", {}))
    if sidecar:
        annotations["sidecar.istio.io/interceptionMode"] = "NONE"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": copy.deepcopy(template["spec"]),
        "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _sidecar(name: str, selector: dict[str, str], egress: list[Doc], ingress: list[Doc] | None = None,
             outbound: Doc | None = None) -> Doc:
    spec: Doc = {"workloadSelector": {"labels": selector}, "egress": egress}
    if ingress:
        spec["ingress"] = ingress
    if outbound:
        spec["outboundTrafficPolicy"] = outbound
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def _port(number: int, protocol: str, name: str) -> Doc:
    return {"number": number, "protocol": protocol, "name": name}


def _otlp_egress(pod_ip: str, hosts: list[str]) -> Doc:
    """An egress listener for the collector's port. Istio gives an Envoy the clusters of its
    egress listeners' ports only, and its tracer needs the collector's. Explicit (port and bind)
    because a catch-all egress in NONE mode binds every port of every service on 127.0.0.1."""
    return {"port": _port(OTLP_PORT, "GRPC", "grpc-otlp"), "bind": pod_ip, "captureMode": "NONE", "hosts": hosts}


def loopback_inputs(rendered: list[Doc], install: list[Doc], probes: list[Doc], plan: Plan, *,
                    app_ports: tuple[int, int]) -> list[Doc]:
    """The render with the loopback's additions (see the module's docstring). `app_ports`: the
    127.0.0.1 ports the marketplace and recommendations listen on, which their Sidecars'
    defaultEndpoint names."""
    marketplace_app_port, recommendations_app_port = app_ports
    docs = copy.deepcopy(rendered)
    # Cluster IPs, as the API server assigns them; the marketplace calls recommendations at its
    # cluster IP, and Istio lists that address among the route's domains.
    for doc in docs:
        if doc["kind"] == "Service":
            doc["spec"]["clusterIP"] = plan.cluster_ip(doc["metadata"]["namespace"], doc["metadata"]["name"])

    # Pods, one per Deployment that the tests run, as the controllers would make them.
    pods = [("marketplace", NAMESPACE, plan.marketplace_pod, True),
            ("recommendations", NAMESPACE, plan.recommendations_pod, True),
            ("jaeger", "observability", plan.jaeger_pod, False)]
    for name, namespace, pod_ip, sidecar in pods:
        template = find(docs, "Deployment", name, namespace)["spec"]["template"]
        docs.append(_pod_from(template, f"{name}-loopback", namespace, pod_ip, sidecar=sidecar))

    # The ingress gateway as `istioctl install -f istio/install/istio-operator.yaml` installs it.
    docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}})
    for kind, name in (("ServiceAccount", f"{GATEWAY}-service-account"), ("Service", GATEWAY)):
        obj = copy.deepcopy(find(install, kind, name, GATEWAY_NAMESPACE))
        if kind == "Service":
            obj["spec"]["type"] = "ClusterIP"
            obj["spec"]["clusterIP"] = plan.cluster_ip(GATEWAY_NAMESPACE, GATEWAY)
        docs.append(obj)
    gateway = find(install, "Deployment", GATEWAY, GATEWAY_NAMESPACE)["spec"]["template"]
    docs.append(_pod_from(gateway, f"{GATEWAY}-loopback", GATEWAY_NAMESPACE, plan.gateway_pod, sidecar=False))

    # The caller with another identity: istio/verify/probes.yaml's mesh-probe (service account
    # `default`), in the mesh.
    probe = find(probes, "Pod", "mesh-probe", NAMESPACE)
    docs.append(_pod_from(probe, "mesh-probe", NAMESPACE, plan.probe_pod, sidecar=True))

    # Sidecars: ours, with explicit listeners instead of iptables capture. Same egress hosts.
    ours = {name: find(docs, "Sidecar", name, NAMESPACE) for name in ("marketplace", "recommendations")}
    docs = [doc for doc in docs if not (doc["kind"] == "Sidecar" and doc["metadata"].get("namespace") == NAMESPACE)]
    hosts = {name: ours[name]["spec"]["egress"][0]["hosts"] for name in ours}
    selector = {name: ours[name]["spec"]["workloadSelector"]["labels"] for name in ours}
    outbound = {name: ours[name]["spec"].get("outboundTrafficPolicy") for name in ours}
    docs.append(_sidecar(
        "marketplace", selector["marketplace"],
        ingress=[{"port": _port(MARKETPLACE_PORT, "HTTP", "http"), "bind": plan.marketplace_pod,
                  "defaultEndpoint": f"127.0.0.1:{marketplace_app_port}", "captureMode": "NONE"}],
        # The app dials recommendations' cluster IP, which this listener holds; the second
        # listener gives the Envoy the collector's cluster, where its tracer sends spans.
        egress=[{"port": _port(RECOMMENDATIONS_PORT, "GRPC", "grpc"),
                 "bind": plan.cluster_ip(NAMESPACE, "recommendations"), "captureMode": "NONE",
                 "hosts": hosts["marketplace"]}, _otlp_egress(plan.marketplace_pod, hosts["marketplace"])],
        outbound=outbound["marketplace"]))
    docs.append(_sidecar(
        "recommendations", selector["recommendations"],
        ingress=[{"port": _port(RECOMMENDATIONS_PORT, "GRPC", "grpc"), "bind": plan.recommendations_pod,
                  "defaultEndpoint": f"127.0.0.1:{recommendations_app_port}", "captureMode": "NONE"}],
        # It calls nothing in the mesh but the collector (its Envoy's tracer does).
        egress=[_otlp_egress(plan.recommendations_pod, hosts["recommendations"])],
        outbound=outbound["recommendations"]))
    docs.append(_sidecar(
        "mesh-probe", probe["metadata"]["labels"],
        egress=[{"port": _port(RECOMMENDATIONS_PORT, "GRPC", "grpc"), "bind": plan.probe_pod,
                 "captureMode": "NONE", "hosts": ["./*"]},
                {"port": _port(HTTP_SERVICE_PORT, "HTTP", "http"), "bind": plan.probe_pod,
                 "captureMode": "NONE", "hosts": ["./*"]}]))
    return docs


# --- the flips: each changes one thing of the policies under test, in a copy ---------------

def _without(docs: list[Doc], kind: str, name: str, namespace: str) -> list[Doc]:
    find(docs, kind, name, namespace)
    return [doc for doc in docs if not (doc["kind"] == kind and doc["metadata"]["name"] == name
                                        and doc["metadata"].get("namespace") == namespace)]


def _edit(kind: str, name: str, namespace: str, change: Callable[[Doc], None]) -> Callable[[list[Doc]], list[Doc]]:
    def flip(docs: list[Doc]) -> list[Doc]:
        docs = copy.deepcopy(docs)
        change(find(docs, kind, name, namespace))
        return docs
    return flip


def _permissive(policy: Doc) -> None:
    assert policy["spec"]["mtls"]["mode"] == "STRICT", policy
    policy["spec"]["mtls"]["mode"] = "PERMISSIVE"


def _any_caller(policy: Doc) -> None:
    """Every rule of an AuthorizationPolicy without its `from`: any identity matches."""
    for rule in policy["spec"]["rules"]:
        assert "from" in rule, policy
        del rule["from"]


def _any_path(policy: Doc) -> None:
    """Every rule of an AuthorizationPolicy without its operations' `paths`: any method matches."""
    for rule in policy["spec"]["rules"]:
        for to in rule["to"]:
            assert "paths" in to["operation"], policy
            del to["operation"]["paths"]


def _retry_shedding(service: Doc) -> None:
    """recommendations' route retrying RESOURCE_EXHAUSTED too, as its retryOn did before."""
    [route] = service["spec"]["http"]
    assert "resource-exhausted" not in route["retries"]["retryOn"], service
    route["retries"]["retryOn"] += ",resource-exhausted"


@dataclass(frozen=True)
class Flip:
    name: str
    what: str
    apply: Callable[[list[Doc]], list[Doc]]


BASE = Flip("as rendered", "the dev overlay's policies as they are", lambda docs: docs)
FLIPS = {flip.name: flip for flip in (
    BASE,
    Flip("PERMISSIVE", "PeerAuthentication default: PERMISSIVE instead of STRICT",
         _edit("PeerAuthentication", "default", NAMESPACE, _permissive)),
    Flip("no marketplace allow", "AuthorizationPolicy marketplace removed",
         lambda docs: _without(docs, "AuthorizationPolicy", "marketplace", NAMESPACE)),
    Flip("marketplace: any caller", "AuthorizationPolicy marketplace without `from` (any identity)",
         _edit("AuthorizationPolicy", "marketplace", NAMESPACE, _any_caller)),
    Flip("no recommendations allow", "AuthorizationPolicy recommendations removed",
         lambda docs: _without(docs, "AuthorizationPolicy", "recommendations", NAMESPACE)),
    Flip("recommendations: any caller", "AuthorizationPolicy recommendations without `from` (any identity)",
         _edit("AuthorizationPolicy", "recommendations", NAMESPACE, _any_caller)),
    Flip("recommendations: any path", "AuthorizationPolicy recommendations without `paths` (any method)",
         _edit("AuthorizationPolicy", "recommendations", NAMESPACE, _any_path)),
    Flip("no gateway tracing", "Telemetry ingressgateway (istio-system) removed",
         lambda docs: _without(docs, "Telemetry", "ingressgateway", GATEWAY_NAMESPACE)),
    Flip("clients' trace headers kept", "EnvoyFilter edge-trace-context (istio-system) removed",
         lambda docs: _without(docs, "EnvoyFilter", "edge-trace-context", GATEWAY_NAMESPACE)),
    Flip("retry on shedding", "VirtualService recommendations retrying resource-exhausted too (its retryOn before)",
         _edit("VirtualService", "recommendations", NAMESPACE, _retry_shedding)),
)}


def write_inputs(docs: list[Doc], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def services_of(docs: list[Doc], install: list[Doc]) -> list[tuple[str, str]]:
    """(namespace, name) of every Service the inputs will hold."""
    names = [(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in docs if doc["kind"] == "Service"]
    find(install, "Service", GATEWAY, GATEWAY_NAMESPACE)
    return names + [(GATEWAY_NAMESPACE, GATEWAY)]
