"""Checks that the Istio mesh (istio/) agrees with its sources of truth: the proto's methods, the
rendered ServiceAccounts, Services and pods, the callers' deadlines and samplers, and the install's
mesh config. Each takes parsed objects and returns a list of problems, empty when all is well, so
the tests run it on the real renders and on copies broken on purpose."""

from __future__ import annotations

import re
from typing import Any

import manifests

Doc = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

# Istio's access-log provider that needs no extension provider: it writes to stdout in the
# mesh's accessLogEncoding (pilot/pkg/model/telemetry_logging.go, builtinEnvoyAccessLogProvider).
BUILTIN_ACCESS_LOG_PROVIDERS = {"envoy"}


# --- what the render holds -------------------------------------------------------------------

def _kind(docs: list[Doc], *kinds: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") in kinds]


def _ns(doc: Doc) -> str | None:
    return doc["metadata"].get("namespace")


def _name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _pods(docs: list[Doc]) -> list[tuple[str, str | None, Doc]]:
    """(Kind/name, namespace, pod template) of every workload."""
    return [(_name(d), _ns(d), d["spec"]["template"]) for d in _kind(docs, *WORKLOAD_KINDS)]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _selected(docs: list[Doc], namespace: str | None, match_labels: dict[str, str] | None) -> list[Doc]:
    """Pod templates of the namespace that the labels select (None: all of them)."""
    return [pod for _, ns, pod in _pods(docs) if ns == namespace
            and (match_labels is None or _matches(match_labels, pod["metadata"].get("labels", {})))]


def _container_ports(pod: Doc) -> dict[str, int]:
    ports: dict[str, int] = {}
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports", []):
            ports[str(port["containerPort"])] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def _service(docs: list[Doc], host: str, namespace: str | None) -> Doc | None:
    """The Service a mesh host names: `name`, `name.ns`, `name.ns.svc` or
    `name.ns.svc.cluster.local` (a short name is relative to the referring object's namespace)."""
    parts = host.split(".")
    if len(parts) > 2 and ".".join(parts[2:]) not in ("svc", "svc.cluster.local"):
        return None  # not a Kubernetes Service host
    name, ns = parts[0], parts[1] if len(parts) > 1 else namespace
    for service in _kind(docs, "Service"):
        if service["metadata"]["name"] == name and _ns(service) == ns:
            return service
    return None


def _is_grpc_pod(pod: Doc) -> bool:
    return any(p.get("name", "").split("-")[0] == "grpc"
               for c in pod["spec"].get("containers", []) for p in c.get("ports", []))


def _is_grpc_service(service: Doc) -> bool:
    return any(p.get("appProtocol") == "grpc" or p.get("name", "").split("-")[0] == "grpc"
               for p in service["spec"].get("ports", []))


def _operations(policy: Doc) -> list[Doc]:
    return [to["operation"] for rule in policy["spec"].get("rules", []) for to in rule.get("to", [])
            if "operation" in to]


def _http_routes(vs: Doc) -> list[Doc]:
    return vs["spec"].get("http", [])


# --- cross-checks ----------------------------------------------------------------------------

def check_grpc_paths(docs: list[Doc], methods: frozenset[str]) -> list[str]:
    """Every path an AuthorizationPolicy on a gRPC workload or a route to a gRPC Service names
    is a method of the proto (`/pkg.Service/*` for a whole service of it)."""
    services = {m.rsplit("/", 1)[0] + "/*" for m in methods}

    def known(path: str) -> bool:
        return path in methods or path in services

    problems: list[str] = []
    for policy in _kind(docs, "AuthorizationPolicy"):
        selector = policy["spec"].get("selector", {}).get("matchLabels")
        if not any(_is_grpc_pod(pod) for pod in _selected(docs, _ns(policy), selector)):
            continue
        for operation in _operations(policy):
            for path in operation.get("paths", []) + operation.get("notPaths", []):
                if not known(path):
                    problems.append(f"{_name(policy)}: path {path} is not a method of the proto "
                                    f"({sorted(methods)})")
    for vs in _kind(docs, "VirtualService"):
        if not any((s := _service(docs, h, _ns(vs))) is not None and _is_grpc_service(s)
                   for h in vs["spec"].get("hosts", [])):
            continue
        for route in _http_routes(vs):
            for match in route.get("match", []):
                uri = match.get("uri", {})
                for kind in ("exact", "prefix"):
                    if kind in uri and not (known(uri[kind]) or (kind == "prefix" and any(
                            m.startswith(uri[kind]) for m in methods))):
                        problems.append(f"{_name(vs)}: uri {kind} {uri[kind]} is no method of the proto")
    return problems


def check_principals(docs: list[Doc], gateways: set[str], trust_domain: str = "cluster.local") -> list[str]:
    """Every principal a policy names is a ServiceAccount of the render (namespace included)
    or an installed gateway's identity."""
    accounts = {f"{trust_domain}/ns/{_ns(sa)}/sa/{sa['metadata']['name']}" for sa in _kind(docs, "ServiceAccount")}
    problems: list[str] = []
    for policy in _kind(docs, "AuthorizationPolicy"):
        for rule in policy["spec"].get("rules", []):
            for source in (f.get("source", {}) for f in rule.get("from", [])):
                for principal in source.get("principals", []) + source.get("notPrincipals", []):
                    if principal not in accounts | gateways:
                        problems.append(f"{_name(policy)}: principal {principal} is neither a ServiceAccount "
                                        f"of the render nor an installed gateway's ({sorted(gateways)})")
    return problems


def check_mesh_ports(docs: list[Doc]) -> list[str]:
    """Every port a policy, route or DestinationRule names exists: an AuthorizationPolicy's
    ports are container ports of the pods it selects (and it selects some); a route's
    destination is a Service of the render and its port one of that Service's; a
    DestinationRule's host is such a Service and its port-level settings name its ports."""
    problems: list[str] = []
    for policy in _kind(docs, "AuthorizationPolicy"):
        selector = policy["spec"].get("selector", {}).get("matchLabels")
        pods = _selected(docs, _ns(policy), selector)
        if selector is not None and not pods:
            problems.append(f"{_name(policy)}: its selector {selector} matches no pod of namespace {_ns(policy)}")
        for operation in _operations(policy):
            for port in operation.get("ports", []) + operation.get("notPorts", []):
                for pod in pods:
                    if str(port) not in {str(p) for p in _container_ports(pod).values()}:
                        problems.append(f"{_name(policy)}: port {port} is not a container port of the pods "
                                        f"labelled {pod['metadata'].get('labels', {}).get('app.kubernetes.io/name')}")
    for vs in _kind(docs, "VirtualService"):
        for route in _http_routes(vs) + vs["spec"].get("tcp", []) + vs["spec"].get("tls", []):
            for destination in (r["destination"] for r in route.get("route", [])):
                service = _service(docs, destination["host"], _ns(vs))
                if service is None:
                    problems.append(f"{_name(vs)}: destination {destination['host']} is not a Service of the render")
                    continue
                number = destination.get("port", {}).get("number")
                if number is not None and number not in [p["port"] for p in service["spec"]["ports"]]:
                    problems.append(f"{_name(vs)}: port {number} is not a port of Service/{service['metadata']['name']}")
    for rule in _kind(docs, "DestinationRule"):
        service = _service(docs, rule["spec"]["host"], _ns(rule))
        if service is None:
            problems.append(f"{_name(rule)}: host {rule['spec']['host']} is not a Service of the render")
            continue
        for setting in rule["spec"].get("trafficPolicy", {}).get("portLevelSettings", []):
            number = setting.get("port", {}).get("number")
            if number not in [p["port"] for p in service["spec"]["ports"]]:
                problems.append(f"{_name(rule)}: port {number} is not a port of Service/{service['metadata']['name']}")
    return problems


def _allows_nothing(policy: Doc) -> bool:
    spec = policy.get("spec") or {}
    return (not spec.get("selector") and not spec.get("targetRef") and not spec.get("targetRefs")
            and spec.get("action", "ALLOW") == "ALLOW" and not spec.get("rules") and not spec.get("provider"))


def mesh_namespaces(docs: list[Doc]) -> set[str]:
    """The render's namespaces whose pods get a sidecar (labelled for injection)."""
    return {d["metadata"]["name"] for d in _kind(docs, "Namespace")
            if d["metadata"].get("labels", {}).get("istio-injection") == "enabled"
            or "istio.io/rev" in d["metadata"].get("labels", {})}


def check_allow_nothing(docs: list[Doc]) -> list[str]:
    """Each mesh namespace with workloads has an allow-nothing policy (ALLOW, no selector, no
    rules): a workload no other policy names is closed."""
    namespaces = {ns for _, ns, _ in _pods(docs)} & mesh_namespaces(docs)
    covered = {_ns(p) for p in _kind(docs, "AuthorizationPolicy") if _allows_nothing(p)}
    return [f"namespace {ns}: no allow-nothing AuthorizationPolicy (ALLOW, no selector, no rules)"
            for ns in sorted(n for n in namespaces - covered if n)]


def _attached_to_a_gateway(docs: list[Doc], policy: Doc) -> bool:
    """The policy is attached (targetRefs) to Gateway API Gateways of the render only: the
    internet's way in, whose callers have no mesh identity to name."""
    refs = policy["spec"].get("targetRefs", [])
    gateways = {(_ns(g), g["metadata"]["name"]) for g in _kind(docs, "Gateway")
                if g["apiVersion"].startswith("gateway.networking.k8s.io/")}
    return bool(refs) and all(r.get("group") == "gateway.networking.k8s.io" and r.get("kind") == "Gateway"
                              and (_ns(policy), r["name"]) in gateways for r in refs)


def check_allow_rules_name_principals(docs: list[Doc]) -> list[str]:
    """Every rule of an ALLOW policy says who: each of its `from` entries names
    `source.principals` (the mTLS identity), so no rule allows anyone who reaches the port; but
    for a policy attached to a Gateway API gateway of the render (the edge)."""
    problems: list[str] = []
    for policy in _kind(docs, "AuthorizationPolicy"):
        if (policy.get("spec") or {}).get("action", "ALLOW") != "ALLOW" or _attached_to_a_gateway(docs, policy):
            continue
        for i, rule in enumerate(policy["spec"].get("rules", [])):
            sources = [f.get("source", {}) for f in rule.get("from", [])]
            if not sources or not all(s.get("principals") for s in sources):
                problems.append(f"{_name(policy)}: rule {i} allows without naming from.source.principals")
    return problems


def check_telemetry_providers(docs: list[Doc], mesh: Doc) -> list[str]:
    """Every provider a Telemetry names is an extension provider of the install's mesh config
    (access logs may use Istio's built-in `envoy`), and tracing goes to an OpenTelemetry one:
    it propagates W3C traceparent, the only trace header the services read."""
    providers = {p["name"]: p for p in mesh.get("extensionProviders", [])}
    problems: list[str] = []
    for telemetry in _kind(docs, "Telemetry"):
        for section in ("tracing", "accessLogging", "metrics"):
            for entry in telemetry.get("spec", {}).get(section, []):
                for name in (p["name"] for p in entry.get("providers", [])):
                    if section == "accessLogging" and name in BUILTIN_ACCESS_LOG_PROVIDERS and name not in providers:
                        continue
                    if name not in providers:
                        problems.append(f"{_name(telemetry)}: {section} provider {name} is not an extension provider "
                                        f"of the install config ({sorted(providers)})")
                    elif section == "tracing" and "opentelemetry" not in providers[name]:
                        kind = next((k for k in providers[name] if k != "name"), "?")
                        problems.append(f"{_name(telemetry)}: tracing provider {name} is {kind}, not opentelemetry: "
                                        "the services read only W3C traceparent")
    return problems


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"not a duration: {duration}")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def check_retry_budget(docs: list[Doc], deadlines: dict[tuple[str, str | None], float]) -> list[str]:
    """A route to a Service its callers give a deadline ((service, namespace) -> seconds, the
    smallest of the callers') times out before that deadline, and its tries fit in its
    timeout: (1 + attempts) x perTryTimeout <= timeout."""
    problems: list[str] = []
    for vs in _kind(docs, "VirtualService"):
        for route in _http_routes(vs):
            for destination in (r["destination"] for r in route.get("route", [])):
                service = _service(docs, destination["host"], _ns(vs))
                if service is None:
                    continue
                deadline = deadlines.get((service["metadata"]["name"], _ns(service)))
                if deadline is None:
                    continue
                if "timeout" not in route:
                    problems.append(f"{_name(vs)}: no timeout for {destination['host']}, whose caller gives up "
                                    f"after {deadline:g}s")
                    continue
                timeout = seconds(route["timeout"])
                if not timeout < deadline:
                    problems.append(f"{_name(vs)}: timeout {route['timeout']} is not inside the caller's "
                                    f"{deadline:g}s deadline")
                retries = route.get("retries", {})
                if retries.get("attempts", 0) and "perTryTimeout" in retries:
                    tries = (1 + retries["attempts"]) * seconds(retries["perTryTimeout"])
                    if tries > timeout + 1e-9:
                        problems.append(f"{_name(vs)}: {1 + retries['attempts']} tries of {retries['perTryTimeout']} "
                                        f"do not fit in the timeout {route['timeout']}")
    return problems


def caller_deadlines(docs: list[Doc], accepted: dict[str, dict[str, str | None]]) -> dict[tuple[str, str | None], float]:
    """(Service, namespace) -> the smallest deadline its callers give it: a container that calls
    X_HOST also gives up after X_TIMEOUT_MS (as set, or its binary's default)."""
    deadlines: dict[tuple[str, str | None], float] = {}
    for d in _kind(docs, *WORKLOAD_KINDS):
        for container in d["spec"]["template"]["spec"].get("containers", []):
            values, _ = manifests.effective_env(docs, container, accepted.get(container["name"], {}))
            for host_var in [v for v in values if v.endswith("_HOST")]:
                prefix = host_var[: -len("_HOST")]
                host, timeout = values[host_var], values.get(prefix + "_TIMEOUT_MS")
                if host is None or timeout is None:
                    continue
                service = _service(docs, host, _ns(d))
                if service is not None:
                    key = (service["metadata"]["name"], _ns(service))
                    deadlines[key] = min(deadlines.get(key, float("inf")), float(timeout) / 1000)
    return deadlines


def istio_objects(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d.get("apiVersion", "").split("/")[0].endswith("istio.io")]


def check_container_metrics(docs: list[Doc]) -> list[str]:
    """An HPA scales on its target's app container (ContainerResource), never on the whole pod
    (`Resource` would average in the sidecar's CPU): the container exists in the target's
    template and requests the resource."""
    problems: list[str] = []
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in _kind(docs, *WORKLOAD_KINDS)}
    for hpa in _kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        workload = workloads.get((target["kind"], target["name"]))
        containers = {c["name"]: c for c in workload["spec"]["template"]["spec"].get("containers", [])} if workload else {}
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] == "Resource":
                problems.append(f"{_name(hpa)}: a Resource metric counts the sidecar's "
                                f"{metric['resource']['name']} too; use ContainerResource")
            elif metric["type"] == "ContainerResource":
                spec = metric["containerResource"]
                container = containers.get(spec["container"])
                if container is None:
                    problems.append(f"{_name(hpa)}: container {spec['container']} is not in "
                                    f"{target['kind']}/{target['name']} ({sorted(containers)})")
                elif spec["name"] not in container.get("resources", {}).get("requests", {}):
                    problems.append(f"{_name(hpa)}: container {spec['container']} requests no {spec['name']}")
    return problems


def _sampler_percentage(values: dict[str, str | None]) -> float | None:
    """The percentage of root traces an OpenTelemetry sampler setting keeps (None: unknown)."""
    sampler = (values.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").removeprefix("parentbased_")
    if sampler == "always_on":
        return 100.0
    if sampler == "always_off":
        return 0.0
    if sampler == "traceidratio":
        return 100 * float(values.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    return None


def check_sampling(docs: list[Doc], accepted: dict[str, dict[str, str | None]]) -> list[str]:
    """One sampling rate per render: the Telemetry percentages (the gateway's root decision and
    the sidecars') equal the services' own sampler ratio, which applies to the traces they
    start themselves; and the services' samplers are parent-based, so they follow the ingress."""
    problems: list[str] = []
    rates: dict[str, float] = {}
    for d in _kind(docs, *WORKLOAD_KINDS):
        for container in d["spec"]["template"]["spec"].get("containers", []):
            values, _ = manifests.effective_env(docs, container, accepted.get(container["name"], {}))
            if not values.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                continue
            if not (values.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").startswith("parentbased_"):
                problems.append(f"{_name(d)}: OTEL_TRACES_SAMPLER {values.get('OTEL_TRACES_SAMPLER')} ignores the "
                                "ingress's decision (use a parentbased_ sampler)")
            percentage = _sampler_percentage(values)
            if percentage is not None:
                rates[_name(d)] = percentage
    for telemetry in _kind(docs, "Telemetry"):
        for tracing in telemetry["spec"].get("tracing", []):
            percentage = tracing.get("randomSamplingPercentage")
            for workload, rate in rates.items():
                if percentage is not None and abs(percentage - rate) > 1e-9:
                    problems.append(f"{_name(telemetry)} ({_ns(telemetry)}): randomSamplingPercentage {percentage:g} "
                                    f"but {workload} samples {rate:g}%")
    return problems


def check_provider_services(docs: list[Doc], mesh: Doc) -> list[str]:
    """An extension provider that sends to a namespace the render itself deploys (dev's
    observability) names a Service of the render and one of its ports. Providers whose
    namespace the render does not hold (prod's platform collector) are the cluster's business."""
    namespaces = {d["metadata"]["name"] for d in _kind(docs, "Namespace")}
    problems: list[str] = []
    for provider in mesh.get("extensionProviders", []):
        for settings in (v for k, v in provider.items() if k != "name" and isinstance(v, dict)):
            host, port = settings.get("service"), settings.get("port")
            fqdn = (host or "").split("/", 1)[-1]  # "namespace/host" is allowed too
            if len(fqdn.split(".")) < 2 or fqdn.split(".")[1] not in namespaces:
                continue
            service = _service(docs, fqdn, None)
            if service is None:
                problems.append(f"extension provider {provider['name']}: {host} is not a Service of the render")
            elif port not in [p["port"] for p in service["spec"]["ports"]]:
                problems.append(f"extension provider {provider['name']}: port {port} is not a port of "
                                f"Service/{service['metadata']['name']} ({_ns(service)})")
    return problems


def check_release_line(tag: str, module_version: str) -> list[str]:
    """The Istio release installed (the IstioOperator's tag, x.y.z) is of the minor line the
    pinned module's analyzers and CRDs are from (its VERSION file, x.y)."""
    parts = tag.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return [f"tag {tag} is not a release (x.y.z)"]
    if ".".join(parts[:2]) != module_version.strip():
        return [f"tag {tag} is not of the {module_version.strip()} line the checks' Istio module is from"]
    return []


# --- one trace, retries that do not amplify overload, egress per workload ------------------

def _otlp_address(endpoint: str, namespace: str | None) -> str:
    """host:port of an OTLP endpoint URL, a Service's short name made fully qualified (relative
    to the caller's namespace), as Istio names a provider's service."""
    address = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = address.partition(":")
    parts = host.split(".")
    if len(parts) == 1:
        parts.append(namespace or "default")
    if len(parts) == 2:
        parts.append("svc")
    if len(parts) == 3 and parts[2] == "svc":
        parts.append("cluster.local")
    return f"{'.'.join(parts)}:{port or '4317'}"


def check_trace_destinations(docs: list[Doc], mesh: Doc, accepted: dict[str, dict[str, str | None]]) -> list[str]:
    """One collector: every container that exports spans (OTEL_EXPORTER_OTLP_ENDPOINT) sends them
    where the tracing providers its render's Telemetry names send the proxies' spans, so a trace
    that starts at the gateway holds the apps' spans too. A render that exports but names no
    tracing provider (or the reverse) fails as well."""
    providers = {p["name"]: p.get("opentelemetry") for p in mesh.get("extensionProviders", [])}
    mesh_addresses = {}
    for telemetry in _kind(docs, "Telemetry"):
        for entry in telemetry["spec"].get("tracing", []):
            for name in (p["name"] for p in entry.get("providers", [])):
                settings = providers.get(name)
                if settings:
                    host = settings["service"].split("/", 1)[-1]
                    mesh_addresses[f"{host}:{settings['port']}"] = name
    problems: list[str] = []
    apps = {}
    for d in _kind(docs, *WORKLOAD_KINDS):
        for container in d["spec"]["template"]["spec"].get("containers", []):
            values, _ = manifests.effective_env(docs, container, accepted.get(container["name"], {}))
            if values.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                apps[_name(d)] = _otlp_address(values["OTEL_EXPORTER_OTLP_ENDPOINT"], _ns(d))
    for workload, address in apps.items():
        if address not in mesh_addresses:
            problems.append(f"{workload} exports spans to {address}, but the mesh's tracing provider sends "
                            f"to {sorted(mesh_addresses) or 'nothing'}: the gateway's trace and the apps' spans "
                            "end up in different collectors")
    if mesh_addresses and not apps:
        problems.append(f"the mesh traces to {sorted(mesh_addresses)} but no app exports spans")
    return problems


# What each kind of service answers when it sheds load (platform/src/shed.rs; http/mod.rs: 503 with
# Retry-After; grpc/mod.rs: RESOURCE_EXHAUSTED), as the retryOn conditions that
# would retry it. A retry on these feeds the overload it answers.
SHEDDING_RETRY_CONDITIONS = {
    "http": {"503", "5xx", "gateway-error", "retriable-status-codes"},
    "grpc": {"resource-exhausted"},
}


def check_no_retry_on_shedding(docs: list[Doc]) -> list[str]:
    """No route retries its destination's load-shedding answer (503 from an HTTP Service,
    RESOURCE_EXHAUSTED from a gRPC one)."""
    problems: list[str] = []
    for vs in _kind(docs, "VirtualService"):
        for route in _http_routes(vs):
            conditions = set(route.get("retries", {}).get("retryOn", "").split(","))
            for destination in (r["destination"] for r in route.get("route", [])):
                service = _service(docs, destination["host"], _ns(vs))
                if service is None:
                    continue
                kind = "grpc" if _is_grpc_service(service) else "http"
                shed = sorted(conditions & SHEDDING_RETRY_CONDITIONS[kind])
                if shed:
                    problems.append(f"{_name(vs)}: retries {', '.join(shed)} from {destination['host']}: that is "
                                    f"how a {kind} service of ours sheds load, and a retry feeds the overload")
    return problems


def _destination_rule(docs: list[Doc], service: Doc) -> Doc | None:
    for rule in _kind(docs, "DestinationRule"):
        if _service(docs, rule["spec"]["host"], _ns(rule)) is service:
            return rule
    return None


def check_retry_budgets(docs: list[Doc]) -> list[str]:
    """What retries may add is bounded: every Service a route retries has a DestinationRule with
    a retryBudget that Istio applies (it drops one without a connectionPool beside it,
    pilot/pkg/networking/core/cluster_traffic_policy.go applyConnectionPool), and no dead
    maxRetries beside it (Envoy ignores max_retries once a budget is set)."""
    problems: list[str] = []
    retried = {}
    for vs in _kind(docs, "VirtualService"):
        for route in _http_routes(vs):
            if route.get("retries", {}).get("attempts", 0):
                for destination in (r["destination"] for r in route.get("route", [])):
                    service = _service(docs, destination["host"], _ns(vs))
                    if service is not None:
                        retried[id(service)] = (service, _name(vs))
    for service, route in retried.values():
        rule = _destination_rule(docs, service)
        policy = (rule or {}).get("spec", {}).get("trafficPolicy", {})
        name = f"Service/{service['metadata']['name']}"
        if "retryBudget" not in policy:
            problems.append(f"{route} retries {name}, but no DestinationRule gives it a retryBudget: "
                            "nothing bounds what retries add under failure")
        elif "connectionPool" not in policy:
            problems.append(f"{_name(rule)}: a retryBudget without a connectionPool, which Istio drops")
        elif "maxRetries" in policy["connectionPool"].get("http", {}):
            problems.append(f"{_name(rule)}: connectionPool.http.maxRetries beside a retryBudget, which Envoy "
                            "ignores (the budget replaces it)")
    return problems


def check_registry_only(docs: list[Doc]) -> list[str]:
    """Every workload of a mesh namespace is under a Sidecar whose outboundTrafficPolicy is
    REGISTRY_ONLY (the workload's own Sidecar, or its namespace's default one): egress is closed
    per workload, not by a mesh-wide setting that would bind every tenant."""
    problems: list[str] = []
    sidecars = _kind(docs, "Sidecar")
    for name, ns, pod in _pods(docs):
        if ns not in mesh_namespaces(docs):
            continue
        labels = pod["metadata"].get("labels", {})
        mine = [s for s in sidecars if _ns(s) == ns and s["spec"].get("workloadSelector")
                and _matches(s["spec"]["workloadSelector"]["labels"], labels)]
        mine = mine or [s for s in sidecars if _ns(s) == ns and not s["spec"].get("workloadSelector")]
        modes = [s["spec"].get("outboundTrafficPolicy", {}).get("mode", "the mesh's") for s in mine]
        if modes != ["REGISTRY_ONLY"]:
            problems.append(f"{name} ({ns}): outbound policy {modes or ['no Sidecar']}, not REGISTRY_ONLY "
                            "in its own Sidecar")
    return problems


# What a client may send to pick its own trace or force sampling: W3C trace context, and Envoy's
# own x-client-trace-id (Istio sets client_sampling to 100%).
CLIENT_TRACE_HEADERS = ("traceparent", "tracestate", "x-client-trace-id")


def check_edge_drops_client_trace_headers(docs: list[Doc], gateway_labels: dict[str, str],
                                          gateway_namespace: str = "istio-system") -> list[str]:
    """An EnvoyFilter on the ingress gateway (its namespace, a selector matching its pods) removes
    each of CLIENT_TRACE_HEADERS in the connection manager's early header mutation, the only
    place that runs before Envoy joins the incoming trace."""
    removed: set[str] = set()
    for envoy_filter in _kind(docs, "EnvoyFilter"):
        selector = (envoy_filter["spec"].get("workloadSelector") or {}).get("labels", {})
        if _ns(envoy_filter) != gateway_namespace or not selector or not _matches(selector, gateway_labels):
            continue
        for patch in envoy_filter["spec"].get("configPatches", []):
            if patch.get("applyTo") != "NETWORK_FILTER" or patch.get("patch", {}).get("operation") != "MERGE":
                continue
            config = patch["patch"].get("value", {}).get("typed_config", {})
            for extension in config.get("early_header_mutation_extensions", []):
                for mutation in extension.get("typed_config", {}).get("mutations", []):
                    if "remove" in mutation:
                        removed.add(mutation["remove"].lower())
    return [f"the ingress gateway keeps a client's {header} header: a client can choose its trace or force "
            "sampling" for header in CLIENT_TRACE_HEADERS if header not in removed]
