"""The NetworkPolicies evaluated as Kubernetes would: which pods a policy and its peers select,
whether a flow gets through, and the flows the bookshop needs (DNS, istiod, its upstreams, OTLP,
Prometheus, the ingress gateway). check_network_policies returns a list of problems."""

from __future__ import annotations

import re

from manifests import (Doc, containers_of, effective_env, is_istio_api, namespace_labels, of_kind, pods_of,
                       pods_selected, selects)

# Pods outside the render that the policies name as peers: how Istio, kube-dns and the
# observability stack label them, and the ports they serve. istiod and the ingress gateway as
# Istio's charts label them (manifests/charts/istio-control/istio-discovery and
# gateways/istio-ingress in the istio.io/istio module); kube-dns as kubeadm, GKE, EKS and AKS do.
# When the render itself defines one of these namespaces, its own pods are used instead.
OUTSIDE_PODS: dict[str, list[tuple[str, dict[str, str], set[tuple[int, str]]]]] = {
    "istio-system": [
        # 15010 plaintext xDS, 15012 xDS and certificates over mTLS (what sidecars use),
        # 15014 monitoring, 15017 the webhook (called by the API server), 8080 debug.
        ("istiod", {"app": "istiod", "istio": "pilot"},
         {(8080, "TCP"), (15010, "TCP"), (15012, "TCP"), (15014, "TCP"), (15017, "TCP")}),
        ("istio-ingressgateway", {"app": "istio-ingressgateway", "istio": "ingressgateway"},
         {(8080, "TCP"), (8443, "TCP"), (15021, "TCP"), (15090, "TCP")}),
    ],
    "kube-system": [
        ("kube-dns", {"k8s-app": "kube-dns"}, {(53, "UDP"), (53, "TCP"), (9153, "TCP")}),
    ],
    "observability": [
        ("prometheus", {"app.kubernetes.io/name": "prometheus"}, {(9090, "TCP")}),
        # The OTLP/gRPC collector the overlays send traces to (Jaeger in dev, the platform's
        # OpenTelemetry Collector in prod): 4317 gRPC, 4318 HTTP.
        ("otlp-collector", {"app.kubernetes.io/component": "collector"}, {(4317, "TCP"), (4318, "TCP")}),
    ],
}

# The sidecar agent's port: merged Prometheus metrics and the rewritten probes.
ISTIO_AGENT_PORT = 15020

# The peers every sidecar needs (sidecar mode): DNS, and istiod for its config and certificate.
ISTIOD = ("istio-system", {"app": "istiod", "istio": "pilot"}, 15012, "TCP")
KUBE_DNS = ("kube-system", {"k8s-app": "kube-dns"}, 53, "UDP")


class _Pod:
    """A pod the policies can select: in the render, or one of OUTSIDE_PODS."""

    def __init__(self, name: str, namespace: str | None, labels: dict[str, str],
                 ports: dict[str, tuple[int, str]], numbers: set[tuple[int, str]]) -> None:
        self.name, self.namespace, self.labels = name, namespace, labels
        self.ports = ports  # container port name -> (number, protocol)
        self.numbers = numbers  # (number, protocol) it serves


def _render_pods(docs: list[Doc]) -> list[_Pod]:
    pods = []
    for workload, namespace, pod in pods_of(docs):
        named: dict[str, tuple[int, str]] = {}
        numbers: set[tuple[int, str]] = set()
        for container in containers_of(pod):
            for port in container.get("ports", []):
                protocol = port.get("protocol", "TCP")
                numbers.add((port["containerPort"], protocol))
                if "name" in port:
                    named[port["name"]] = (port["containerPort"], protocol)
        pods.append(_Pod(workload, namespace, pod["metadata"].get("labels", {}), named, numbers))
    return pods


def _all_pods(docs: list[Doc]) -> list[_Pod]:
    pods = _render_pods(docs)
    defined = namespace_labels(docs)
    for namespace, known in OUTSIDE_PODS.items():
        if namespace in defined:
            continue
        for name, labels, numbers in known:
            pods.append(_Pod(f"{namespace}/{name}", namespace, labels, {}, numbers))
    return pods


def _all_namespaces(docs: list[Doc]) -> dict[str, dict[str, str]]:
    outside = {name: {"kubernetes.io/metadata.name": name} for name in OUTSIDE_PODS}
    return {**outside, **namespace_labels(docs)}


def _peer_pods(peer: Doc, policy_namespace: str | None, pods: list[_Pod],
               namespaces: dict[str, dict[str, str]]) -> list[_Pod] | None:
    """The pods a `from`/`to` peer selects; None for an ipBlock (not about pods)."""
    if "ipBlock" in peer:
        return None
    if "namespaceSelector" in peer:
        selector = peer["namespaceSelector"]
        chosen = {name for name, labels in namespaces.items() if _selects_all_if_empty(selector, labels)}
    else:
        chosen = {policy_namespace}
    pod_selector = peer.get("podSelector")
    return [p for p in pods if p.namespace in chosen
            and (pod_selector is None or _selects_all_if_empty(pod_selector, p.labels))]


def _selects_all_if_empty(selector: Doc, labels: dict[str, str]) -> bool:
    """NetworkPolicy semantics: an empty selector ({}) selects everything."""
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    return selects(selector, labels)


def _port_matches(rule_port: Doc, pod: _Pod, number: int, protocol: str) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    port = rule_port.get("port")
    if port is None:
        return True
    if isinstance(port, str):
        return pod.ports.get(port) == (number, protocol)
    return port <= number <= rule_port.get("endPort", port)


def _opens_everything(rule: Doc, peers_key: str) -> bool:
    """A rule that lets any peer through on any port."""
    if rule.get("ports"):
        return False
    peers = rule.get(peers_key) or []
    if not peers:
        return True
    for peer in peers:
        if "ipBlock" in peer and peer["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0") and not peer["ipBlock"].get("except"):
            return True
        if (peer.get("namespaceSelector") == {} and not peer.get("podSelector", {}).get("matchLabels")
                and not peer.get("podSelector", {}).get("matchExpressions")):
            return True
    return False


def _policy_selects(policy: Doc, pod: _Pod) -> bool:
    return (policy["metadata"].get("namespace") == pod.namespace
            and _selects_all_if_empty(policy["spec"].get("podSelector") or {}, pod.labels))


def _direction_types(policy: Doc) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def flow_allowed(docs: list[Doc], source: _Pod, destination: _Pod, number: int, protocol: str) -> bool:
    """Whether the render's NetworkPolicies let `source` open `number`/`protocol` on `destination`
    (Kubernetes semantics: a pod that no policy selects for a direction is open in it)."""
    policies = list(of_kind(docs, "NetworkPolicy"))
    pods = _all_pods(docs)
    namespaces = _all_namespaces(docs)

    def allowed(direction: str, subject: _Pod, other: _Pod, port_pod: _Pod) -> bool:
        peers_key, rules_key = ("from", "ingress") if direction == "Ingress" else ("to", "egress")
        governing = [p for p in policies if direction in _direction_types(p) and _policy_selects(p, subject)]
        if not governing:
            return True
        for policy in governing:
            for rule in policy["spec"].get(rules_key) or []:
                peers = rule.get(peers_key) or []
                if peers and not any(other in (_peer_pods(peer, policy["metadata"].get("namespace"), pods, namespaces)
                                               or []) for peer in peers):
                    continue
                ports = rule.get("ports") or []
                if not ports or any(_port_matches(p, port_pod, number, protocol) for p in ports):
                    return True
        return False

    def same(a: _Pod, b: _Pod) -> bool:
        return a.name == b.name and a.namespace == b.namespace

    # Identity through the lists built above: compare by name and namespace.
    source = next((p for p in pods if same(p, source)), source)
    destination = next((p for p in pods if same(p, destination)), destination)
    return allowed("Egress", source, destination, destination) and allowed("Ingress", destination, source, destination)


def _find_pods(docs: list[Doc], namespace: str, labels: dict[str, str]) -> list[_Pod]:
    return [p for p in _all_pods(docs) if p.namespace == namespace and selects(labels, p.labels)]


def _injected(docs: list[Doc], pod: _Pod, template: Doc) -> bool:
    namespace = namespace_labels(docs).get(pod.namespace or "", {})
    annotation = template["metadata"].get("labels", {}).get("sidecar.istio.io/inject")
    if annotation is not None:
        return annotation == "true"
    return namespace.get("istio-injection") == "enabled" or "istio.io/rev" in namespace


def _required_flows(docs: list[Doc]) -> list[tuple[str, _Pod, list[_Pod], int, str]]:
    """(why, source, destinations, port, protocol) the bookshop needs, read from the render:
    sidecars to DNS and istiod, each upstream a container is configured with, OTLP to the
    collector, Prometheus to each scrape port."""
    flows = []
    render_pods = {p.name: p for p in _render_pods(docs)}
    services = {(s["metadata"]["name"], s["metadata"].get("namespace")): s for s in of_kind(docs, "Service")}
    for workload, namespace, template in pods_of(docs):
        pod = render_pods[workload]
        if _injected(docs, pod, template):
            for why, (ns, labels, number, protocol) in (("DNS", KUBE_DNS), ("istiod (xDS, certificates)", ISTIOD)):
                flows.append((why, pod, _find_pods(docs, ns, labels), number, protocol))
        for container in containers_of(template):
            values, _ = effective_env(docs, container, {})
            for host_var in [v for v in values if v.endswith("_HOST")]:
                host, port = values[host_var], values.get(host_var[: -len("_HOST")] + "_PORT")
                if host is None or port is None:
                    continue
                labels = host.split(".")
                service = services.get((labels[0], labels[1] if len(labels) > 1 else namespace))
                if service is None:
                    continue  # check_upstreams reports it
                for service_port in service["spec"].get("ports", []):
                    if str(service_port["port"]) != str(port):
                        continue
                    destinations = [render_pods[w] for w, _ in pods_selected(docs, service["spec"].get("selector"))]
                    target = service_port.get("targetPort", service_port["port"])
                    for destination in destinations:
                        number = destination.ports.get(target, (target, "TCP"))[0] if isinstance(target, str) else target
                        flows.append((f"{host_var}={host}", pod, [destination], int(number),
                                      service_port.get("protocol", "TCP")))
            endpoint = values.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            match = re.match(r"^https?://([^/:]+)(?::(\d+))?", endpoint or "")
            if match:
                host_labels = match.group(1).split(".")
                target_ns = host_labels[1] if len(host_labels) > 1 else namespace
                number = int(match.group(2) or 4317)
                collectors = [p for p in _all_pods(docs) if p.namespace == target_ns and (number, "TCP") in p.numbers]
                flows.append(("OTEL_EXPORTER_OTLP_ENDPOINT", pod, collectors, number, "TCP"))
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true" and str(annotations.get("prometheus.io/port", "")).isdigit():
            # Under a sidecar, Istio's injector points the annotations at the agent's merged
            # metrics on 15020 (unless merging is turned off for the pod).
            merged = (_injected(docs, pod, template)
                      and annotations.get("prometheus.istio.io/merge-metrics", "true") != "false")
            number = ISTIO_AGENT_PORT if merged else int(annotations["prometheus.io/port"])
            for prometheus in _find_pods(docs, "observability", {"app.kubernetes.io/name": "prometheus"}):
                flows.append(("Prometheus scrape", prometheus, [pod], number, "TCP"))
    flows += _gateway_flows(docs, render_pods, services)
    return flows


def _service_by_host(host: str, namespace: str | None, services: dict[tuple[str, str | None], Doc]) -> Doc | None:
    """The Service a host name means (short, name.namespace, or the full cluster name)."""
    labels = host.split(".")
    return services.get((labels[0], labels[1] if len(labels) > 1 else namespace))


def _gateway_flows(docs: list[Doc], render_pods: dict[str, _Pod],
                   services: dict[tuple[str, str | None], Doc]) -> list[tuple[str, _Pod, list[_Pod], int, str]]:
    """The ingress gateway's pods to the pods behind each VirtualService route it serves."""
    flows = []
    gateways = {(g["metadata"]["name"], g["metadata"].get("namespace")): g for g in docs
                if g.get("kind") == "Gateway" and is_istio_api(g)}
    for service in (v for v in docs if v.get("kind") == "VirtualService"):
        namespace = service["metadata"].get("namespace")
        for gateway_ref in service["spec"].get("gateways", []):
            if gateway_ref == "mesh":
                continue
            gw_namespace, name = gateway_ref.split("/", 1) if "/" in gateway_ref else (namespace, gateway_ref)
            gateway = gateways.get((name, gw_namespace))
            if gateway is None:
                continue
            sources = [p for p in _all_pods(docs) if selects(gateway["spec"].get("selector", {}), p.labels)]
            for route in service["spec"].get("http", []) + service["spec"].get("tcp", []) + service["spec"].get("tls", []):
                for destination in route.get("route", []):
                    target = _service_by_host(destination["destination"]["host"], namespace, services)
                    if target is None:
                        continue
                    number = destination["destination"].get("port", {}).get("number")
                    for service_port in target["spec"].get("ports", []):
                        if number is not None and service_port["port"] != number:
                            continue
                        port = service_port.get("targetPort", service_port["port"])
                        for workload, _ in pods_selected(docs, target["spec"].get("selector")):
                            pod = render_pods[workload]
                            resolved = pod.ports.get(port, (port, "TCP"))[0] if isinstance(port, str) else port
                            for source in sources:
                                flows.append((f"VirtualService/{service['metadata']['name']} via Gateway/{name}",
                                              source, [pod], int(resolved), "TCP"))
    return flows


def check_network_policies(docs: list[Doc]) -> list[str]:
    """NetworkPolicies say what they mean: every pod and namespace a policy names exists (in the
    render, or as one of OUTSIDE_PODS), a named port is one the pods it applies to declare, a
    port on a known outside pod is one it serves, no rule opens a pod to everything, and the
    flows the bookshop needs (DNS, istiod's 15012, its upstreams, OTLP, Prometheus) get through."""
    policies = list(of_kind(docs, "NetworkPolicy"))
    if not policies:
        return []
    problems: list[str] = []
    pods = _all_pods(docs)
    namespaces = _all_namespaces(docs)
    for policy in policies:
        name = f"NetworkPolicy/{policy['metadata']['name']}"
        namespace = policy["metadata"].get("namespace")
        spec = policy["spec"]
        selected = [p for p in pods if _policy_selects(policy, p)]
        for direction, rules_key, peers_key in (("ingress", "ingress", "from"), ("egress", "egress", "to")):
            for index, rule in enumerate(spec.get(rules_key) or []):
                where = f"{name} {direction} rule {index + 1}"
                if _opens_everything(rule, peers_key):
                    problems.append(f"{where}: allows every peer on every port")
                peer_pods: list[_Pod] = []
                for peer in rule.get(peers_key) or []:
                    if "namespaceSelector" in peer:
                        selector = peer["namespaceSelector"]
                        if (selector.get("matchLabels") or selector.get("matchExpressions")) and not any(
                                selects(selector, labels) for labels in namespaces.values()):
                            problems.append(f"{where}: namespaceSelector {selector} matches no namespace of the render "
                                            f"nor a known one {sorted(OUTSIDE_PODS)}")
                            continue
                    found = _peer_pods(peer, namespace, pods, namespaces)
                    if found is None:
                        continue
                    if not found and peer.get("podSelector"):
                        problems.append(f"{where}: podSelector {peer['podSelector']} matches no pod "
                                        f"(of the render, or known outside it) in the namespaces it names")
                    peer_pods += found
                # Ingress ports are the selected pods'; egress ports the destinations'.
                port_owners = selected if direction == "ingress" else peer_pods
                for port in rule.get("ports") or []:
                    value = port.get("port")
                    if isinstance(value, str):
                        if not any(value in p.ports for p in port_owners):
                            problems.append(f"{where}: port {value} is not a container port name of "
                                            f"{sorted(p.name for p in port_owners) or 'any pod'}")
                    elif value is not None and direction == "egress" and port_owners and not any(
                            (value, port.get("protocol", "TCP")) in p.numbers for p in port_owners):
                        problems.append(f"{where}: no destination pod serves {value}/{port.get('protocol', 'TCP')} "
                                        f"({sorted(p.name for p in port_owners)})")
    for why, source, destinations, number, protocol in _required_flows(docs):
        if not destinations:
            continue
        if not any(flow_allowed(docs, source, d, number, protocol) for d in destinations):
            problems.append(f"{source.name} cannot reach {number}/{protocol} on "
                            f"{sorted(d.name for d in destinations)} ({why}): the NetworkPolicies block it")
    return problems
