"""Checks that two places agree. Each takes rendered manifests (and what the binaries accept)
and returns a list of problems, empty when all is well, so tests can run it on the real render
and on a deliberately broken copy.

The network policies, the services' serving settings and the Dockerfiles have modules of their
own (network_policies, service_checks, dockerfiles); the render model is manifests."""

from __future__ import annotations

from clihelp import Settings
from manifests import (DIGEST, Doc, containers_of, effective_env, image_binary, namespace_of,
                       of_kind, pods_selected, ports_of, selects, settings_of, workloads_of)

# Which container port the binary's listener setting must equal.
LISTENER_PORTS = {"GRPC_PORT": "grpc", "HTTP_PORT": "http", "ADMIN_PORT": "http-admin"}


def check_ports(docs: list[Doc]) -> list[str]:
    """Every port that a Service (targetPort), a probe or a scrape annotation names is a port
    of the container(s) it reaches."""
    problems: list[str] = []
    for service in of_kind(docs, "Service"):
        name = f"Service/{service['metadata']['name']}"
        pods = pods_selected(docs, service["spec"].get("selector"))
        if not pods:
            problems.append(f"{name}: its selector matches no pod template")
        for port in service["spec"].get("ports", []):
            target = str(port.get("targetPort", port["port"]))
            for workload, pod in pods:
                if not any(target in ports_of(c) for c in containers_of(pod)):
                    problems.append(f"{name} port {port.get('name', port['port'])}: targetPort {target} "
                                    f"is not a container port of {workload}")
    for workload, pod in workloads_of(docs):
        all_ports: dict[str, int] = {}
        for container in containers_of(pod):
            ports = ports_of(container)
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
    """Every environment variable a container of ours is given is one its binary accepts (or one
    the OpenTelemetry SDK reads). Ours: the image is named after the binary, and so must the
    container be. Other images (the observability stack) accept what their makers say."""
    problems: list[str] = []
    for workload, pod in workloads_of(docs):
        for container in containers_of(pod):
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
    for workload, pod in workloads_of(docs):
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
        for container in containers_of(pod):
            if image_binary(container, accepted) is None:
                continue  # another image: its shutdown settings are not ours to know
            values, _ = effective_env(docs, container, settings_of(container, accepted))
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
    for workload, pod in workloads_of(docs):
        for container in containers_of(pod):
            if image_binary(container, accepted) is None:
                continue
            values, _ = effective_env(docs, container, settings_of(container, accepted))
            ports = ports_of(container)
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
    services = {(s["metadata"]["name"], s["metadata"].get("namespace")): s for s in of_kind(docs, "Service")}
    for workload, pod in workloads_of(docs):
        namespace = namespace_of(docs, workload)
        for container in containers_of(pod):
            values, _ = effective_env(docs, container, settings_of(container, accepted))
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


def check_selectors(docs: list[Doc]) -> list[str]:
    """PodDisruptionBudgets, NetworkPolicies (other than select-all ones) and topology spread
    constraints select pods of the render; HPAs target a Deployment whose containers request
    CPU (utilization is relative to the request)."""
    problems: list[str] = []
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        if not pods_selected(docs, pdb["spec"].get("selector")):
            problems.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: its selector matches no pod template")
    for policy in of_kind(docs, "NetworkPolicy"):
        selector = policy["spec"].get("podSelector") or {}
        if selector and not pods_selected(docs, selector):
            problems.append(f"NetworkPolicy/{policy['metadata']['name']}: its podSelector matches no pod template")
    for workload, pod in workloads_of(docs):
        labels = pod["metadata"].get("labels", {})
        for constraint in pod["spec"].get("topologySpreadConstraints", []):
            if not selects(constraint.get("labelSelector"), labels):
                problems.append(f"{workload}: a topologySpreadConstraint's labelSelector does not match its own pods")
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        deployment = deployments.get(target["name"]) if target["kind"] == "Deployment" else None
        if deployment is None:
            problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: no {target['kind']}/{target['name']}")
            continue
        for container in containers_of(deployment["spec"]["template"]):
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
    defined = {d["metadata"]["name"] for d in of_kind(docs, "Namespace")} | PREREQUISITE_NAMESPACES
    problems = [] if any(True for _ in of_kind(docs, "Namespace")) else ["the render defines no Namespace"]
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
    if DIGEST.search(image):
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
    for workload, pod in workloads_of(docs):
        for container in containers_of(pod):
            image = container.get("image", "")
            problem = image_problem(image)
            if problem is None and require_digest and not DIGEST.search(image):
                problem = f"image {image} is not pinned by digest (@sha256:…)"
            if problem:
                problems.append(f"{workload} container {container['name']}: {problem}")
    return problems


def check_image_overrides(kustomization: Doc, docs: list[Doc]) -> list[str]:
    """Every `images:` entry of a kustomization shows in its render. kustomize silently skips an
    entry whose name matches no image: an overlay naming `recommendations` after base has
    already renamed it to the registry's path would leave the old image (or a placeholder
    digest) deployed."""
    images = {c.get("image", "") for _, pod in workloads_of(docs) for c in containers_of(pod)}
    problems = []
    for entry in kustomization.get("images", []):
        repository = entry.get("newName", entry["name"])
        suffix = f"@{entry['digest']}" if "digest" in entry else (f":{entry['newTag']}" if "newTag" in entry else "")
        if not any(image.split("@", 1)[0].rsplit(":", 1)[0] == repository and image.endswith(suffix)
                   for image in images):
            problems.append(f"images entry {entry['name']}: no image of the render is {repository}{suffix} "
                            "(kustomize found no image by that name)")
    return problems
