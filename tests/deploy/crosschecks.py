"""Checks that two places agree. Each takes rendered manifests (and what the binaries accept)
and returns a list of problems, empty when all is well, so tests can run it on the real render
and on a deliberately broken copy."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

from clihelp import Settings

Doc = dict[str, Any]

# Which container port the binary's listener setting must equal.
LISTENER_PORTS = {"GRPC_PORT": "grpc", "HTTP_PORT": "http", "ADMIN_PORT": "http-admin"}

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _kind(docs: list[Doc], kind: str) -> Iterator[Doc]:
    return (d for d in docs if d.get("kind") == kind)


def _workloads(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(Kind/name, pod template) of every workload."""
    for d in docs:
        if d.get("kind") in WORKLOAD_KINDS:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]


def _containers(pod: Doc) -> list[Doc]:
    return pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])


def _ports(container: Doc) -> dict[str, int]:
    """name (or the number as text) -> number, for every container port."""
    ports: dict[str, int] = {}
    for port in container.get("ports", []):
        ports[str(port["containerPort"])] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


def _selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a label selector matches the labels. A Service's selector is a bare map; the
    others have matchLabels and matchExpressions. An empty or missing selector matches nothing
    here (select-all policies are not what these checks are about)."""
    if not selector:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return all(labels.get(k) == v for k, v in selector.items())
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, operator, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": labels.get(key) not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def _pods_selected(docs: list[Doc], selector: Doc | None) -> list[tuple[str, Doc]]:
    return [(name, pod) for name, pod in _workloads(docs) if _selects(selector, pod["metadata"].get("labels", {}))]


def effective_env(docs: list[Doc], container: Doc, accepted: Settings) -> tuple[dict[str, str | None], list[str]]:
    """The value each accepted setting takes in this container (env, then envFrom ConfigMaps,
    then the binary's default), and the problems met resolving envFrom."""
    values: dict[str, str | None] = dict(accepted)
    problems: list[str] = []
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in _kind(docs, "ConfigMap")}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None:
            continue
        if ref["name"] not in configmaps:
            if not ref.get("optional", False):
                problems.append(f"container {container['name']}: envFrom names ConfigMap {ref['name']}, "
                                "which the render does not contain")
            continue
        prefix = source.get("prefix", "")
        for key, value in configmaps[ref["name"]].items():
            values[prefix + key] = value
    for var in container.get("env", []):
        values[var["name"]] = var.get("value")
    return values, problems


def check_ports(docs: list[Doc]) -> list[str]:
    """Every port that a Service (targetPort), a probe or a scrape annotation names is a port
    of the container(s) it reaches."""
    problems: list[str] = []
    for service in _kind(docs, "Service"):
        name = f"Service/{service['metadata']['name']}"
        pods = _pods_selected(docs, service["spec"].get("selector"))
        if not pods:
            problems.append(f"{name}: its selector matches no pod template")
        for port in service["spec"].get("ports", []):
            target = str(port.get("targetPort", port["port"]))
            for workload, pod in pods:
                if not any(target in _ports(c) for c in _containers(pod)):
                    problems.append(f"{name} port {port.get('name', port['port'])}: targetPort {target} "
                                    f"is not a container port of {workload}")
    for workload, pod in _workloads(docs):
        all_ports: dict[str, int] = {}
        for container in _containers(pod):
            ports = _ports(container)
            all_ports.update(ports)
            for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_kind)
                if not probe:
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe and str(probe[handler]["port"]) not in ports:
                        problems.append(f"{workload} container {container['name']}: {probe_kind} {handler} port "
                                        f"{probe[handler]['port']} is not one of its ports {sorted(ports)}")
        annotations = pod["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            port = annotations.get("prometheus.io/port")
            if port is None or port not in all_ports:
                problems.append(f"{workload}: prometheus.io/port {port} is not a container port")
            if not annotations.get("prometheus.io/path", "/").startswith("/"):
                problems.append(f"{workload}: prometheus.io/path must start with /")
    return problems


def image_binary(container: Doc, accepted: dict[str, Settings]) -> str | None:
    """Which of our binaries a container runs: the one its image is named after
    (…/bookshop/recommendations:tag, …@sha256:…), or None for anyone else's image."""
    repository = container.get("image", "").split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return repository if repository in accepted else None


def _settings_of(container: Doc, accepted: dict[str, Settings]) -> Settings:
    """The binary's settings with their defaults, or nothing for another image."""
    binary = image_binary(container, accepted)
    return accepted[binary] if binary else {}


def check_env(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """Every environment variable a container of ours is given is one its binary accepts (or one
    the OpenTelemetry SDK reads). Ours: the image is named after the binary, and so must the
    container be. Other images (the observability stack) accept what their makers say."""
    problems: list[str] = []
    for workload, pod in _workloads(docs):
        for container in _containers(pod):
            binary = image_binary(container, accepted)
            if binary is None:
                if container["name"] in accepted:
                    problems.append(f"{workload}: container {container['name']} runs {container.get('image')}, "
                                    f"not the {container['name']} image")
                continue
            if container["name"] != binary:
                problems.append(f"{workload}: container {container['name']} runs the {binary} image; name it {binary}")
            values, resolve_problems = effective_env(docs, container, {})
            problems += [f"{workload}: {p}" for p in resolve_problems]
            for name in sorted(values):
                if name in accepted[binary] or name in OTEL_SDK_ENV:
                    continue
                if name in OTEL_SDK_ENV_WITHOUT_EFFECT:
                    problems.append(f"{workload}: {binary} ignores {name}: {OTEL_SDK_ENV_WITHOUT_EFFECT[name]}")
                else:
                    problems.append(f"{workload}: {binary} does not accept {name} (not in its --help, "
                                    "nor a variable the OpenTelemetry SDK reads)")
    return problems


# What the OpenTelemetry SDK itself reads from the environment, beyond the settings the binaries
# parse (their --help lists OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER…).
# Read from opentelemetry_sdk / opentelemetry-otlp 0.33 (the versions Cargo.lock pins) against
# how platform/src/telemetry.rs builds the tracer provider: `Resource::builder()` (its env
# detector), `SdkTracerProvider::builder()` (span limits), `BatchConfigBuilder::default()` and
# the tonic `SpanExporter`. Re-read both when bumping opentelemetry or changing telemetry.rs.
OTEL_SDK_ENV = {
    "OTEL_RESOURCE_ATTRIBUTES": "extra resource attributes (key=value,…), e.g. deployment.environment.name",
    "OTEL_EXPORTER_OTLP_HEADERS": "headers on every OTLP export (key=value,…)",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "headers on trace exports",
    "OTEL_BSP_SCHEDULE_DELAY": "milliseconds between batch exports",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "spans per export",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "attributes kept per span",
    "OTEL_SPAN_EVENT_COUNT_LIMIT": "events kept per span",
    "OTEL_SPAN_LINK_COUNT_LIMIT": "links kept per span",
}

# Variables the SDK would read, but that have no effect in these binaries: setting them is a
# mistake the check names.
OTEL_SDK_ENV_WITHOUT_EFFECT = {
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "the binary passes OTEL_EXPORTER_OTLP_ENDPOINT to the exporter in code",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "the binary sets the export timeout in code",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "the binary sets the export timeout in code",
    "OTEL_BSP_MAX_QUEUE_SIZE": "the binary sets the span queue's size in code",
    "OTEL_BSP_EXPORT_TIMEOUT": "the SDK's batch span processor reads it but never uses it",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "the binary exports OTLP over gRPC only",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "the binary exports OTLP over gRPC only",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "the exporter is built without compression (warned and ignored)",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "the exporter is built without compression (warned and ignored)",
    "OTEL_METRICS_EXPORTER": "metrics are Prometheus /metrics on the admin port, not OTLP",
    "OTEL_LOGS_EXPORTER": "logs go to stdout, not OTLP",
}


# The most time the final trace flush may take at exit (FLUSH_TIMEOUT, platform/src/telemetry.rs);
# spent only when traces are exported.
TRACE_FLUSH_SECONDS = 5


def check_grace_period(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """terminationGracePeriodSeconds exceeds SHUTDOWN_DELAY_SECONDS + SHUTDOWN_TIMEOUT_SECONDS,
    as each container will really see them (set, or the binary's default), plus the final trace
    flush when the container exports traces (OTEL_EXPORTER_OTLP_ENDPOINT set, SDK not disabled)."""
    problems: list[str] = []
    for workload, pod in _workloads(docs):
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
        for container in _containers(pod):
            if image_binary(container, accepted) is None:
                continue  # another image: its shutdown settings are not ours to know
            values, _ = effective_env(docs, container, _settings_of(container, accepted))
            try:
                delay = float(values["SHUTDOWN_DELAY_SECONDS"])  # type: ignore[arg-type]
                timeout = float(values["SHUTDOWN_TIMEOUT_SECONDS"])  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError):
                problems.append(f"{workload} container {container['name']}: cannot tell its shutdown delay and "
                                "timeout (set them, or the binary must show their defaults in --help)")
                continue
            exports = bool(values.get("OTEL_EXPORTER_OTLP_ENDPOINT")) and \
                str(values.get("OTEL_SDK_DISABLED") or "false").lower() != "true"
            flush = TRACE_FLUSH_SECONDS if exports else 0
            if not grace > delay + timeout + flush:
                problems.append(f"{workload}: terminationGracePeriodSeconds {grace} is not more than "
                                f"SHUTDOWN_DELAY_SECONDS {delay:g} + SHUTDOWN_TIMEOUT_SECONDS {timeout:g}"
                                + (f" + the trace flush {flush}" if flush else ""))
    return problems


def check_listener_ports(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """The port each listener really binds (GRPC_PORT, HTTP_PORT, ADMIN_PORT: set, or the
    binary's default) is the container port named for it."""
    problems: list[str] = []
    for workload, pod in _workloads(docs):
        for container in _containers(pod):
            if image_binary(container, accepted) is None:
                continue
            values, _ = effective_env(docs, container, _settings_of(container, accepted))
            ports = _ports(container)
            for setting, port_name in LISTENER_PORTS.items():
                if setting not in values:
                    continue
                if port_name not in ports:
                    problems.append(f"{workload} container {container['name']}: it listens on {setting} "
                                    f"but has no container port named {port_name}")
                elif str(values[setting]) != str(ports[port_name]):
                    problems.append(f"{workload} container {container['name']}: {setting} is {values[setting]} "
                                    f"but container port {port_name} is {ports[port_name]}")
    return problems


def check_upstreams(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """Each FOO_HOST / FOO_PORT pair a container uses names a Service of the render and one of
    its ports (the short name, or name.namespace[.svc.cluster.local])."""
    problems: list[str] = []
    services = {(s["metadata"]["name"], s["metadata"].get("namespace")): s for s in _kind(docs, "Service")}
    for workload, pod in _workloads(docs):
        namespace = _namespace_of(docs, workload)
        for container in _containers(pod):
            values, _ = effective_env(docs, container, _settings_of(container, accepted))
            for host_var in [v for v in values if v.endswith("_HOST")]:
                port_var = host_var[: -len("_HOST")] + "_PORT"
                host, port = values[host_var], values.get(port_var)
                if host is None or port is None:
                    continue
                labels = host.split(".")
                key = (labels[0], labels[1] if len(labels) > 1 else namespace)
                service = services.get(key)
                if service is None:
                    problems.append(f"{workload}: {host_var}={host} is not a Service of the render")
                elif int(port) not in [p["port"] for p in service["spec"]["ports"]]:
                    problems.append(f"{workload}: {port_var}={port} is not a port of Service/{key[0]}")
    return problems


def _namespace_of(docs: list[Doc], workload: str) -> str | None:
    kind, name = workload.split("/", 1)
    for d in _kind(docs, kind):
        if d["metadata"]["name"] == name:
            return d["metadata"].get("namespace")
    return None


def check_selectors(docs: list[Doc]) -> list[str]:
    """PodDisruptionBudgets, NetworkPolicies (other than select-all ones) and topology spread
    constraints select pods of the render; HPAs target a Deployment whose containers request
    CPU (utilization is relative to the request)."""
    problems: list[str] = []
    for pdb in _kind(docs, "PodDisruptionBudget"):
        if not _pods_selected(docs, pdb["spec"].get("selector")):
            problems.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: its selector matches no pod template")
    for policy in _kind(docs, "NetworkPolicy"):
        selector = policy["spec"].get("podSelector") or {}
        if selector and not _pods_selected(docs, selector):
            problems.append(f"NetworkPolicy/{policy['metadata']['name']}: its podSelector matches no pod template")
    for workload, pod in _workloads(docs):
        labels = pod["metadata"].get("labels", {})
        for constraint in pod["spec"].get("topologySpreadConstraints", []):
            if not _selects(constraint.get("labelSelector"), labels):
                problems.append(f"{workload}: a topologySpreadConstraint's labelSelector does not match its own pods")
    deployments = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    for hpa in _kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        deployment = deployments.get(target["name"]) if target["kind"] == "Deployment" else None
        if deployment is None:
            problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: no {target['kind']}/{target['name']}")
            continue
        for container in _containers(deployment["spec"]["template"]):
            if "cpu" not in container.get("resources", {}).get("requests", {}):
                problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: container "
                                f"{container['name']} has no CPU request to scale on")
        if "replicas" in deployment["spec"]:
            problems.append(f"Deployment/{target['name']}: sets replicas although an HPA owns the count")
    return problems


# Kinds without a namespace (the Kubernetes API's and Istio's cluster-scoped kinds a render may
# hold); every other kind is namespaced.
CLUSTER_SCOPED = {"Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "APIService", "PriorityClass", "StorageClass", "CSIDriver",
                  "CSINode", "VolumeAttachment", "IngressClass", "RuntimeClass", "GatewayClass",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy",
                  "MutatingAdmissionPolicyBinding", "FlowSchema", "PriorityLevelConfiguration"}


# Namespaces a render may put objects in without defining them: the prerequisites the README
# names create them. istio-system is where Istio's install puts istiod and the ingress gateway,
# so an object that must sit beside the gateway (its Telemetry) lives there.
PREREQUISITE_NAMESPACES = {"istio-system"}


def check_namespaces(docs: list[Doc]) -> list[str]:
    """Every namespaced object lands in a Namespace that the render itself defines, or in one of
    PREREQUISITE_NAMESPACES (an object without a namespace would go wherever the user's
    kubeconfig points; one in a namespace nobody creates fails to apply). A render may define
    several."""
    defined = {d["metadata"]["name"] for d in _kind(docs, "Namespace")} | PREREQUISITE_NAMESPACES
    problems = [] if any(True for _ in _kind(docs, "Namespace")) else ["the render defines no Namespace"]
    for d in docs:
        if d["kind"] in CLUSTER_SCOPED:
            continue
        namespace = d["metadata"].get("namespace")
        if namespace not in defined:
            problems.append(f"{d['kind']}/{d['metadata']['name']}: namespace {namespace}, not one the render "
                            f"defines {sorted(defined)}")
    return problems


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned (an explicit tag other than latest, or a digest)."""
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag or digest"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image} uses the tag latest"
    return None


def check_images(docs: list[Doc], require_digest: bool = False) -> list[str]:
    """Every container image is pinned: explicit tag (not latest) or digest. A tag can be moved
    to another image, so where `require_digest` (prod) only a digest counts as pinned."""
    problems: list[str] = []
    for workload, pod in _workloads(docs):
        for container in _containers(pod):
            image = container.get("image", "")
            problem = image_problem(image)
            if problem is None and require_digest and not _DIGEST.search(image):
                problem = f"image {image} is not pinned by digest (@sha256:…)"
            if problem:
                problems.append(f"{workload} container {container['name']}: {problem}")
    return problems


def check_dockerfile_bases(dockerfile: str) -> list[str]:
    """Every FROM of an outside image is pinned by digest (FROMs naming earlier stages aside)."""
    problems: list[str] = []
    stages: set[str] = set()
    for match in re.finditer(r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.MULTILINE | re.IGNORECASE):
        image, stage = match.group(1), match.group(2)
        if image not in stages and not _DIGEST.search(image):
            problems.append(f"FROM {image} is not pinned by digest")
        if stage:
            stages.add(stage)
    return problems


def dockerfile_exposed(dockerfile: str) -> set[int]:
    return {int(p.split("/")[0]) for line in re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.MULTILINE)
            for p in line.split()}


def check_exposed_ports(dockerfile: str, docs: list[Doc], container_name: str) -> list[str]:
    """The Dockerfile EXPOSEs exactly the container's ports in the manifests."""
    exposed = dockerfile_exposed(dockerfile)
    declared = {p["containerPort"] for _, pod in _workloads(docs) for c in _containers(pod)
                if c["name"] == container_name for p in c.get("ports", [])}
    if exposed != declared:
        return [f"{container_name}: the Dockerfile EXPOSEs {sorted(exposed)}, the manifests declare {sorted(declared)}"]
    return []


# ---------------------------------------------------------------------------------------------
# Pods and their namespaces

def _pods(docs: list[Doc]) -> list[tuple[str, str | None, Doc]]:
    """(Kind/name, namespace, pod template) of every workload."""
    return [(f"{d['kind']}/{d['metadata']['name']}", d["metadata"].get("namespace"), d["spec"]["template"])
            for d in docs if d.get("kind") in WORKLOAD_KINDS]


def _namespace_labels(docs: list[Doc]) -> dict[str, dict[str, str]]:
    """namespace -> its labels, with the kubernetes.io/metadata.name label the API server adds."""
    return {d["metadata"]["name"]: {**d["metadata"].get("labels", {}), "kubernetes.io/metadata.name": d["metadata"]["name"]}
            for d in _kind(docs, "Namespace")}


# ---------------------------------------------------------------------------------------------
# NetworkPolicies

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
    for workload, namespace, pod in _pods(docs):
        named: dict[str, tuple[int, str]] = {}
        numbers: set[tuple[int, str]] = set()
        for container in _containers(pod):
            for port in container.get("ports", []):
                protocol = port.get("protocol", "TCP")
                numbers.add((port["containerPort"], protocol))
                if "name" in port:
                    named[port["name"]] = (port["containerPort"], protocol)
        pods.append(_Pod(workload, namespace, pod["metadata"].get("labels", {}), named, numbers))
    return pods


def _all_pods(docs: list[Doc]) -> list[_Pod]:
    pods = _render_pods(docs)
    defined = _namespace_labels(docs)
    for namespace, known in OUTSIDE_PODS.items():
        if namespace in defined:
            continue
        for name, labels, numbers in known:
            pods.append(_Pod(f"{namespace}/{name}", namespace, labels, {}, numbers))
    return pods


def _all_namespaces(docs: list[Doc]) -> dict[str, dict[str, str]]:
    outside = {name: {"kubernetes.io/metadata.name": name} for name in OUTSIDE_PODS}
    return {**outside, **_namespace_labels(docs)}


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
    return _selects(selector, labels)


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
    policies = list(_kind(docs, "NetworkPolicy"))
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
    return [p for p in _all_pods(docs) if p.namespace == namespace and _selects(labels, p.labels)]


def _injected(docs: list[Doc], pod: _Pod, template: Doc) -> bool:
    namespace = _namespace_labels(docs).get(pod.namespace or "", {})
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
    services = {(s["metadata"]["name"], s["metadata"].get("namespace")): s for s in _kind(docs, "Service")}
    for workload, namespace, template in _pods(docs):
        pod = render_pods[workload]
        if _injected(docs, pod, template):
            for why, (ns, labels, number, protocol) in (("DNS", KUBE_DNS), ("istiod (xDS, certificates)", ISTIOD)):
                flows.append((why, pod, _find_pods(docs, ns, labels), number, protocol))
        for container in _containers(template):
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
                    destinations = [render_pods[w] for w, _ in _pods_selected(docs, service["spec"].get("selector"))]
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
            sources = [p for p in _all_pods(docs) if _selects(gateway["spec"].get("selector", {}), p.labels)]
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
                        for workload, _ in _pods_selected(docs, target["spec"].get("selector")):
                            pod = render_pods[workload]
                            resolved = pod.ports.get(port, (port, "TCP"))[0] if isinstance(port, str) else port
                            for source in sources:
                                flows.append((f"VirtualService/{service['metadata']['name']} via Gateway/{name}",
                                              source, [pod], int(resolved), "TCP"))
    return flows


def is_istio_api(doc: Doc) -> bool:
    return doc.get("apiVersion", "").split("/")[0].endswith("istio.io")


def check_network_policies(docs: list[Doc]) -> list[str]:
    """NetworkPolicies say what they mean: every pod and namespace a policy names exists (in the
    render, or as one of OUTSIDE_PODS), a named port is one the pods it applies to declare, a
    port on a known outside pod is one it serves, no rule opens a pod to everything, and the
    flows the bookshop needs (DNS, istiod's 15012, its upstreams, OTLP, Prometheus) get through."""
    policies = list(_kind(docs, "NetworkPolicy"))
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
                                _selects(selector, labels) for labels in namespaces.values()):
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


# ---------------------------------------------------------------------------------------------
# Services, identities, probes, disruption budgets, scraping

# How Istio classifies a Service port (pkg/config/kube/conversion.go ConvertProtocol in the
# istio.io/istio module): appProtocol if set, else the name's prefix before the first "-"
# ("grpc-web" whole). An unrecognised name is plain TCP at best: no L7 metrics, retries or
# per-method authorization.
ISTIO_PROTOCOLS = {"grpc": "GRPC", "grpc-web": "GRPC-Web", "http": "HTTP", "http2": "HTTP2", "https": "HTTPS",
                   "tcp": "TCP", "tls": "TLS", "udp": "UDP", "mongo": "Mongo", "redis": "Redis", "mysql": "MySQL"}
_APP_PROTOCOLS = {"kubernetes.io/h2c": "HTTP2", "kubernetes.io/ws": "HTTP", "kubernetes.io/wss": "HTTPS"}


def istio_protocol(name: str, is_app_protocol: bool = False) -> str | None:
    """Istio's protocol for a port name (or appProtocol), None when it recognises none."""
    if is_app_protocol and name in _APP_PROTOCOLS:
        return _APP_PROTOCOLS[name]
    lowered = name.lower()
    if lowered.startswith("grpc-web"):
        return ISTIO_PROTOCOLS["grpc-web"]
    return ISTIO_PROTOCOLS.get(lowered.split("-", 1)[0])


def check_service_ports(docs: list[Doc]) -> list[str]:
    """Every Service port is named `<protocol>[-suffix]` as Istio classifies them, and an
    appProtocol, where set, names the same protocol."""
    problems: list[str] = []
    for service in _kind(docs, "Service"):
        for port in service["spec"].get("ports", []):
            where = f"Service/{service['metadata']['name']} port {port.get('name', port['port'])}"
            by_name = istio_protocol(port.get("name", ""))
            if by_name is None:
                problems.append(f"{where}: the name does not start with a protocol Istio knows "
                                f"({', '.join(sorted(ISTIO_PROTOCOLS))})")
            if "appProtocol" in port:
                by_app = istio_protocol(port["appProtocol"], is_app_protocol=True)
                if by_app is None:
                    problems.append(f"{where}: appProtocol {port['appProtocol']} is no protocol Istio knows")
                elif by_name is not None and by_app != by_name:
                    problems.append(f"{where}: appProtocol {port['appProtocol']} ({by_app}) disagrees with "
                                    f"the name ({by_name})")
    return problems


def check_service_accounts(docs: list[Doc]) -> list[str]:
    """Every pod runs as a ServiceAccount of the render, in its own namespace (Istio's identity
    and the AuthorizationPolicies hang on it; `default` would be shared and unnamed)."""
    accounts = {(d["metadata"]["name"], d["metadata"].get("namespace")) for d in _kind(docs, "ServiceAccount")}
    problems: list[str] = []
    for workload, namespace, pod in _pods(docs):
        account = pod["spec"].get("serviceAccountName")
        if account is None:
            problems.append(f"{workload}: no serviceAccountName (it would run as the namespace's default)")
        elif (account, namespace) not in accounts:
            problems.append(f"{workload}: serviceAccountName {account} is no ServiceAccount of the render in "
                            f"namespace {namespace}")
    return problems


def _probe_target(probe: Doc, container: Doc) -> tuple[str, int | None, str | None]:
    """(handler, port number, HTTP path) of a probe."""
    for handler in ("httpGet", "grpc", "tcpSocket", "exec"):
        if handler in probe:
            port = probe[handler].get("port")
            number = _ports(container).get(str(port)) if port is not None else None
            return handler, number, probe[handler].get("path")
    return "none", None, None


def check_probes(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """Each probe asks the listener that answers it. Our binaries (by image): readiness is `/readyz` on the
    admin port (ADMIN_PORT) or gRPC health on GRPC_PORT, both of which turn NOT_SERVING when
    shutdown begins; liveness is `/healthz` on the admin port, which stays 200 through the drain
    (a liveness probe on /readyz or on gRPC health would have a draining pod killed). Any
    container: liveness is never `/readyz`."""
    problems: list[str] = []
    for workload, _, pod in _pods(docs):
        for container in pod["spec"].get("containers", []):
            where = f"{workload} container {container['name']}"
            liveness = container.get("livenessProbe")
            if liveness and _probe_target(liveness, container)[2] == "/readyz":
                problems.append(f"{where}: livenessProbe on /readyz: a draining pod would be restarted")
            if image_binary(container, accepted) is None:
                continue
            values, _ = effective_env(docs, container, _settings_of(container, accepted))
            admin = int(values["ADMIN_PORT"]) if values.get("ADMIN_PORT") else None
            grpc = int(values["GRPC_PORT"]) if values.get("GRPC_PORT") else None
            readiness = container.get("readinessProbe")
            if not readiness:
                problems.append(f"{where}: no readinessProbe")
            else:
                handler, port, path = _probe_target(readiness, container)
                if not ((handler == "httpGet" and port == admin and path == "/readyz")
                        or (handler == "grpc" and grpc is not None and port == grpc)):
                    problems.append(f"{where}: readinessProbe {handler} {port} {path or ''} is neither /readyz on "
                                    f"the admin port {admin} nor gRPC health on GRPC_PORT {grpc}")
            if not liveness:
                problems.append(f"{where}: no livenessProbe")
            else:
                handler, port, path = _probe_target(liveness, container)
                if not (handler == "httpGet" and port == admin and path == "/healthz"):
                    problems.append(f"{where}: livenessProbe {handler} {port} {path or ''} is not /healthz on the "
                                    f"admin port {admin} (gRPC health and /readyz turn NOT_SERVING during the drain)")
            startup = container.get("startupProbe")
            if startup:
                handler, port, path = _probe_target(startup, container)
                if not ((handler == "httpGet" and port == admin and path in ("/healthz", "/readyz"))
                        or (handler == "grpc" and grpc is not None and port == grpc)):
                    problems.append(f"{where}: startupProbe {handler} {port} {path or ''} asks no listener that "
                                    "answers it")
    return problems


def _percent(value: int | str, of: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * of
    return -(-share // 100) if round_up else share // 100


def check_disruption_budgets(docs: list[Doc]) -> list[str]:
    """A PodDisruptionBudget lets at least one pod be evicted at the workload's smallest size
    (the HPA's minReplicas, else spec.replicas): maxUnavailable ≥ 1, or minAvailable below
    that size. Otherwise a node drain waits for ever."""
    problems: list[str] = []
    hpas = {(h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"], h["metadata"].get("namespace")):
            h["spec"].get("minReplicas", 1) for h in _kind(docs, "HorizontalPodAutoscaler")}
    workloads = {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if d.get("kind") in WORKLOAD_KINDS}
    for pdb in _kind(docs, "PodDisruptionBudget"):
        name = f"PodDisruptionBudget/{pdb['metadata']['name']}"
        spec = pdb["spec"]
        for workload, _ in _pods_selected(docs, spec.get("selector")):
            doc = workloads[workload]
            kind, wname = workload.split("/", 1)
            size = hpas.get((kind, wname, doc["metadata"].get("namespace")), doc["spec"].get("replicas", 1))
            if "maxUnavailable" in spec:
                if _percent(spec["maxUnavailable"], size, round_up=True) < 1:
                    problems.append(f"{name}: maxUnavailable {spec['maxUnavailable']} lets no pod of {workload} "
                                    "be evicted")
            elif "minAvailable" in spec:
                if _percent(spec["minAvailable"], size, round_up=True) >= size:
                    problems.append(f"{name}: minAvailable {spec['minAvailable']} with {workload} at {size} "
                                    "pod(s) lets none be evicted")
    return problems


def check_scrape_annotations(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """On a pod of ours, prometheus.io/port names the port that serves /metrics: the binary's
    admin listener (ADMIN_PORT as the container really sees it), and prometheus.io/path is
    /metrics."""
    problems: list[str] = []
    for workload, _, pod in _pods(docs):
        annotations = pod["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        ours = [c for c in _containers(pod) if image_binary(c, accepted)]
        if not ours:
            continue  # another image's metrics port is its maker's business
        admin_ports = set()
        for container in ours:
            values, _ = effective_env(docs, container, _settings_of(container, accepted))
            if values.get("ADMIN_PORT"):
                admin_ports.add(str(values["ADMIN_PORT"]))
        port = annotations.get("prometheus.io/port")
        if port not in admin_ports:
            problems.append(f"{workload}: prometheus.io/port {port} is not the admin port (ADMIN_PORT "
                            f"{', '.join(sorted(admin_ports)) or 'unknown'}) that serves /metrics")
        path = annotations.get("prometheus.io/path", "/metrics")
        if path != "/metrics":
            problems.append(f"{workload}: prometheus.io/path {path}: the admin listener serves /metrics")
    return problems


# ---------------------------------------------------------------------------------------------
# Dockerfile labels

OCI_LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.version",
              "org.opencontainers.image.title", "org.opencontainers.image.licenses")


def _final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """(instruction, arguments) of the final stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")))
    instructions = [tuple(line.strip().split(None, 1)) + ("",) for line in joined.splitlines() if line.strip()]
    stage: list[tuple[str, str]] = []
    for instruction in instructions:
        if instruction[0].upper() == "FROM":
            stage = []
        stage.append((instruction[0].upper(), instruction[1]))
    return stage


def dockerfile_labels(dockerfile: str) -> tuple[dict[str, str], dict[str, str]]:
    """The final stage's LABELs and its ARG defaults (quotes removed, nothing substituted)."""
    labels: dict[str, str] = {}
    args: dict[str, str] = {}
    for instruction, arguments in _final_stage(dockerfile):
        if instruction == "LABEL":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                labels[key] = value
        elif instruction == "ARG":
            name, _, default = arguments.partition("=")
            args[name.strip()] = shlex.split(default)[0] if default else ""
    return labels, args


def check_oci_labels(dockerfile: str, binary: str, workspace: Doc) -> list[str]:
    """The image carries the OCI labels: its title is the binary, its licence the workspace's,
    its source an https URL, and its version `${VERSION}`, a build ARG whose default is the
    workspace version (`[workspace.package]` of Cargo.toml)."""
    labels, args = dockerfile_labels(dockerfile)
    problems = [f"{binary}: the final stage has no LABEL {key}" for key in OCI_LABELS if key not in labels]
    expected = {"org.opencontainers.image.title": binary,
                "org.opencontainers.image.licenses": workspace["license"],
                "org.opencontainers.image.version": "${VERSION}"}
    for key, value in expected.items():
        if key in labels and labels[key] != value:
            problems.append(f"{binary}: LABEL {key}={labels[key]}, expected {value}")
    source = labels.get("org.opencontainers.image.source", "")
    if source and not source.startswith("https://"):
        problems.append(f"{binary}: LABEL org.opencontainers.image.source={source} is no https URL")
    if args.get("VERSION") != workspace["version"]:
        problems.append(f"{binary}: ARG VERSION defaults to {args.get('VERSION')}, the workspace version is "
                        f"{workspace['version']}")
    return problems


def check_image_overrides(kustomization: Doc, docs: list[Doc]) -> list[str]:
    """Every `images:` entry of a kustomization shows in its render. kustomize silently skips an
    entry whose name matches no image: an overlay naming `recommendations` after base has
    already renamed it to the registry's path would leave the old image (or a placeholder
    digest) deployed."""
    images = {c.get("image", "") for _, pod in _workloads(docs) for c in _containers(pod)}
    problems = []
    for entry in kustomization.get("images", []):
        repository = entry.get("newName", entry["name"])
        suffix = f"@{entry['digest']}" if "digest" in entry else (f":{entry['newTag']}" if "newTag" in entry else "")
        if not any(image.split("@", 1)[0].rsplit(":", 1)[0] == repository and image.endswith(suffix)
                   for image in images):
            problems.append(f"images entry {entry['name']}: no image of the render is {repository}{suffix} "
                            "(kustomize found no image by that name)")
    return problems
