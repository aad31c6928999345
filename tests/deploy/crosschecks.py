"""Checks that two places agree. Each takes rendered manifests (and what the binaries accept)
and returns a list of problems, empty when all is well, so tests can run it on the real render
and on a deliberately broken copy."""

from __future__ import annotations

import re
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


def check_env(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """Every environment variable a container is given is one its binary accepts. The binary is
    the one the container is named after."""
    problems: list[str] = []
    for workload, pod in _workloads(docs):
        for container in _containers(pod):
            binary = container["name"]
            if binary not in accepted:
                problems.append(f"{workload}: container {binary} is not one of the binaries {sorted(accepted)}")
                continue
            values, resolve_problems = effective_env(docs, container, {})
            problems += [f"{workload}: {p}" for p in resolve_problems]
            for name in sorted(values):
                if name not in accepted[binary]:
                    problems.append(f"{workload}: {binary} does not accept {name} (not in its --help)")
    return problems


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
            values, _ = effective_env(docs, container, accepted.get(container["name"], {}))
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
            values, _ = effective_env(docs, container, accepted.get(container["name"], {}))
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
            values, _ = effective_env(docs, container, accepted.get(container["name"], {}))
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


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}


def check_namespaces(docs: list[Doc]) -> list[str]:
    """Every namespaced object lands in the render's one Namespace (an object without a
    namespace would go wherever the user's kubeconfig points)."""
    namespaces = [d["metadata"]["name"] for d in _kind(docs, "Namespace")]
    if len(namespaces) != 1:
        return [f"the render should hold exactly one Namespace, not {namespaces}"]
    return [f"{d['kind']}/{d['metadata']['name']}: namespace {d['metadata'].get('namespace')}, not {namespaces[0]}"
            for d in docs if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != namespaces[0]]


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


def check_images(docs: list[Doc]) -> list[str]:
    """Every container image is pinned: explicit tag (not latest) or digest."""
    problems: list[str] = []
    for workload, pod in _workloads(docs):
        for container in _containers(pod):
            problem = image_problem(container.get("image", ""))
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
