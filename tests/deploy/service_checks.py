"""How the pods serve: Service port names Istio can classify, ServiceAccounts, probes that ask
the listener that answers them, disruption budgets that let a node drain, and scrape
annotations on the admin port. Each check returns a list of problems."""

from __future__ import annotations

from clihelp import Settings
from manifests import (WORKLOAD_KINDS, Doc, containers_of, effective_env, image_binary, of_kind, pods_of,
                       pods_selected, ports_of, settings_of)

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
    for service in of_kind(docs, "Service"):
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
    accounts = {(d["metadata"]["name"], d["metadata"].get("namespace")) for d in of_kind(docs, "ServiceAccount")}
    problems: list[str] = []
    for workload, namespace, pod in pods_of(docs):
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
            number = ports_of(container).get(str(port)) if port is not None else None
            return handler, number, probe[handler].get("path")
    return "none", None, None


def check_probes(docs: list[Doc], accepted: dict[str, Settings]) -> list[str]:
    """Each probe asks the listener that answers it. Our binaries (by image): readiness is `/readyz` on the
    admin port (ADMIN_PORT) or gRPC health on GRPC_PORT, both of which turn NOT_SERVING when
    shutdown begins; liveness is `/healthz` on the admin port, which stays 200 through the drain
    (a liveness probe on /readyz or on gRPC health would have a draining pod killed). Any
    container: liveness is never `/readyz`."""
    problems: list[str] = []
    for workload, _, pod in pods_of(docs):
        for container in pod["spec"].get("containers", []):
            where = f"{workload} container {container['name']}"
            liveness = container.get("livenessProbe")
            if liveness and _probe_target(liveness, container)[2] == "/readyz":
                problems.append(f"{where}: livenessProbe on /readyz: a draining pod would be restarted")
            if image_binary(container, accepted) is None:
                continue
            values, _ = effective_env(docs, container, settings_of(container, accepted))
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
            h["spec"].get("minReplicas", 1) for h in of_kind(docs, "HorizontalPodAutoscaler")}
    workloads = {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if d.get("kind") in WORKLOAD_KINDS}
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        name = f"PodDisruptionBudget/{pdb['metadata']['name']}"
        spec = pdb["spec"]
        for workload, _ in pods_selected(docs, spec.get("selector")):
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
    for workload, _, pod in pods_of(docs):
        annotations = pod["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        ours = [c for c in containers_of(pod) if image_binary(c, accepted)]
        if not ours:
            continue  # another image's metrics port is its maker's business
        admin_ports = set()
        for container in ours:
            values, _ = effective_env(docs, container, settings_of(container, accepted))
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
