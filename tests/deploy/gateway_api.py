"""Checks of the Gateway API ingress (istio/gateway-api): its objects against the Gateway API
CRDs of the version the pinned Istio requires, the identity istiod will give the gateway it
deploys, the route against the Istio ingress it replaces, retries against the services'
shedding answers, and the Pod Security customisation of the generated Deployment. Each returns
a list of problems, empty when all is well, like mesh_checks."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

import mesh_checks
import schemas
from mesh_checks import Doc

GROUP = "gateway.networking.k8s.io"
# The GatewayClass istiod's deployment controller serves (it makes the class itself).
ISTIO_CLASS = "istio"
# Istio's annotations that rename what it deploys (pilot/pkg/config/kube/gatewaycommon/
# deploymentcontroller.go: GatewayServiceAccount, GatewayNameOverride).
SERVICE_ACCOUNT_ANNOTATION = "gateway.istio.io/service-account"


def is_gateway_api(doc: Doc) -> bool:
    return doc.get("apiVersion", "").split("/")[0] == GROUP


@cache
def crd_schemas(crds_dir: Path) -> dict[tuple[str, str, str], Doc]:
    """(group, version, kind) -> strict schema, from every CRD file of the channel's folder
    (`config/crd/standard` of the sigs.k8s.io/gateway-api module)."""
    found: dict[tuple[str, str, str], Doc] = {}
    for path in sorted(crds_dir.glob("*.yaml")):
        found.update(schemas.istio_schemas(path))
    if not found:
        raise FileNotFoundError(f"no Gateway API CRDs in {crds_dir}")
    return found


def crd_problems(docs: list[Doc], crds_dir: Path) -> list[str]:
    """Every Gateway API object validates, unknown fields rejected, against the channel's CRDs."""
    return [p for d in docs if is_gateway_api(d) for p in schemas.crd_problems(d, crd_schemas(crds_dir), "the Gateway API")]


def _gateways(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] == "Gateway" and is_gateway_api(d)]


def service_account(gateway: Doc) -> str:
    """The ServiceAccount istiod's deployment controller makes for a Gateway of its class and runs
    the gateway's pods as: the annotation's, else `<name>-<class>`."""
    annotations = gateway["metadata"].get("annotations", {})
    return annotations.get(SERVICE_ACCOUNT_ANNOTATION) or f"{gateway['metadata']['name']}-{gateway['spec']['gatewayClassName']}"


def gateway_principals(docs: list[Doc], trust_domain: str = "cluster.local") -> set[str]:
    """The identities of the gateways istiod will deploy for the render's Gateways."""
    return {f"{trust_domain}/ns/{g['metadata']['namespace']}/sa/{service_account(g)}"
            for g in _gateways(docs) if g["spec"]["gatewayClassName"] == ISTIO_CLASS}


def gateway_pod_labels(gateway: Doc) -> dict[str, str]:
    """The label istiod's template gives every pod of a Gateway's Deployment."""
    return {f"{GROUP}/gateway-name": gateway["metadata"]["name"]}


def _backends(docs: list[Doc], route: Doc) -> list[tuple[Doc, Doc | None]]:
    """(rule, the Service its backendRef names) of each backend of an HTTPRoute."""
    return [(rule, mesh_checks._service(docs, ref["name"], route["metadata"].get("namespace")))
            for rule in route["spec"].get("rules", []) for ref in rule.get("backendRefs", [])
            if ref.get("kind", "Service") == "Service"]


def check_no_retry_on_shedding(docs: list[Doc]) -> list[str]:
    """No HTTPRoute retries its backend's load-shedding answer: `retry.codes` (the experimental
    channel's; istiod adds each code to retryOn) holding 503 for an HTTP Service."""
    problems = []
    for route in (d for d in docs if d["kind"] == "HTTPRoute"):
        for rule, service in _backends(docs, route):
            codes = {str(c) for c in rule.get("retry", {}).get("codes", [])}
            if service is not None and not mesh_checks._is_grpc_service(service):
                shed = sorted(codes & mesh_checks.SHEDDING_RETRY_CONDITIONS["http"])
                if shed:
                    problems.append(f"HTTPRoute/{route['metadata']['name']}: retries {', '.join(shed)} from "
                                    f"Service/{service['metadata']['name']}: that is how an http service of ours "
                                    "sheds load, and a retry feeds the overload")
    return problems


def check_same_routing_as(docs: list[Doc], istio_render: list[Doc]) -> list[str]:
    """Each HTTPRoute sends to what the Istio ingress's VirtualService (in `istio_render`) sends
    to, with the same whole-request timeout, and sets no backendRequest timeout: without a retry
    stanza istiod makes that the route's whole timeout (conversion.go), the VirtualService's 3 s
    cut to its per-try 1 s."""
    destinations = {}
    for vs in (d for d in istio_render if d["kind"] == "VirtualService" and d["spec"].get("gateways")):
        for http in vs["spec"].get("http", []):
            for r in http.get("route", []):
                service = mesh_checks._service(istio_render, r["destination"]["host"], vs["metadata"].get("namespace"))
                if service is not None:
                    key = (service["metadata"]["name"], r["destination"].get("port", {}).get("number"))
                    destinations[key] = http.get("timeout")
    problems = []
    routed = set()
    for route in (d for d in docs if d["kind"] == "HTTPRoute"):
        name = f"HTTPRoute/{route['metadata']['name']}"
        for rule in route["spec"].get("rules", []):
            timeouts = rule.get("timeouts", {})
            if "backendRequest" in timeouts and "retry" not in rule:
                problems.append(f"{name}: backendRequest {timeouts['backendRequest']} without a retry stanza "
                                "becomes istiod's timeout for the whole request")
            for ref in rule.get("backendRefs", []):
                key = (ref["name"], ref.get("port"))
                routed.add(key)
                if key not in destinations:
                    problems.append(f"{name}: sends to {key}, which the Istio ingress does not ({sorted(destinations)})")
                elif timeouts.get("request") != destinations[key]:
                    problems.append(f"{name}: request timeout {timeouts.get('request')} for {key[0]}, the Istio "
                                    f"ingress's is {destinations[key]}")
    problems += [f"the Istio ingress sends to {key}, no HTTPRoute does" for key in sorted(set(destinations) - routed)]
    return problems


def check_restricted_customisation(docs: list[Doc]) -> list[str]:
    """Each Gateway of Istio's class names (infrastructure.parametersRef) a ConfigMap of the
    render whose `deployment` patch gives the generated pods the RuntimeDefault seccomp profile:
    the one setting of Pod Security `restricted` that Istio's kube-gateway template leaves to an
    install-wide value."""
    configmaps = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs if d["kind"] == "ConfigMap"}
    problems = []
    for gateway in _gateways(docs):
        name = f"Gateway/{gateway['metadata']['name']}"
        ref = (gateway["spec"].get("infrastructure") or {}).get("parametersRef")
        if not ref or ref.get("kind") != "ConfigMap" or ref.get("group", "") != "":
            problems.append(f"{name}: no ConfigMap parametersRef, so its pods get Istio's template as is, "
                            "without a seccomp profile, which `restricted` refuses")
            continue
        configmap = configmaps.get((gateway["metadata"].get("namespace"), ref["name"]))
        if configmap is None:
            problems.append(f"{name}: parametersRef names ConfigMap {ref['name']}, not in the render")
            continue
        patch = yaml.safe_load(configmap.get("data", {}).get("deployment", "")) or {}
        pod = (((patch.get("spec") or {}).get("template") or {}).get("spec") or {})
        if (pod.get("securityContext") or {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: ConfigMap {ref['name']}'s deployment patch sets no RuntimeDefault seccomp "
                            "profile on the pod")
    return problems
