"""The Gateway API ingress (istio/gateway-api) on a cluster of its own: dev-gateway-api applied
with the README's command after the Gateway API CRDs (cluster.provide_gateway_api_crds); istiod's
deployment controller makes the gateway's ServiceAccount, Deployment and Service; the Deployment's
pods pass the bookshop namespace's Pod Security `restricted` thanks to the Gateway's parametersRef
(and without it are refused: the twin); the Gateway is Accepted, and Programmed once its
LoadBalancer has an address; the HTTPRoute is Accepted with its backend resolved; the marketplace
admits the identity istiod gave the gateway; a route retrying 503 is refused; istioctl analyze
of the live cluster finds nothing.

And the page served through it: the bookshop as this cluster's pods (shop_pods.py), the gateway's
pod among them, its Envoy on what istiod sends that pod with the certificate its CA issued
sa/ingress-istio; a GET to the pod IP and port the gateway Service's EndpointSlice lists answers
200 with three books, over mTLS on both hops behind it. The twin: the AuthorizationPolicy
`marketplace` admitting the Istio gateway's principal instead (as dev renders it) answers 403."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import yaml

import agent
import cluster
import istio
from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with the other suites)
from cases import BOOKS, page_through
from conftest import Overlay, rendered
from inputs import BASE, Doc, Flip
from shop_pods import ShopPods
from test_identity import chain_of, uri_sans

pytestmark = pytest.mark.parametrize("overlay", [cluster.GATEWAY_API_OVERLAY], indirect=True, scope="session")

NAMESPACE = "bookshop"
GATEWAY = "ingress"
# What istiod names what it deploys for the Gateway: `<name>-<class>`.
DEPLOYED = f"{GATEWAY}-istio"
CONTROLLER = "istio.io/gateway-controller"
# Istio's own Gateway kind has the same plural: the resource by its group.
GATEWAYS = "gateways.gateway.networking.k8s.io"
# How long istiod may take to act on a Gateway (a guard; it takes a second or two here).
ISTIOD_TIMEOUT = 90
# The address the stand-in load-balancer controller gives the Service: in the cluster's own
# namespace (netns.HOST_RANGE), so nothing outside it.
LOAD_BALANCER_IP = "10.240.0.80"


def one(overlay: Overlay, kind: str, name: str, namespace: str = NAMESPACE) -> dict | None:
    found = overlay.cluster.kubectl("get", kind, name, "-n", namespace, "-o", "yaml", check=False)
    return yaml.safe_load(found.stdout) if found.returncode == 0 else None


def conditions(obj: dict | None) -> dict[str, dict]:
    """An object's status conditions by type (or a route parent's, which holds them itself)."""
    obj = obj or {}
    return {c["type"]: c for c in (obj["conditions"] if "conditions" in obj else (obj.get("status") or {}).get("conditions", []))}


def deployed(overlay: Overlay, name: str = DEPLOYED) -> dict[str, dict]:
    """The ServiceAccount, Deployment and Service istiod made for a Gateway, once all three exist."""
    found: dict[str, dict] = {}

    def made() -> bool:
        for kind in ("serviceaccount", "deployment", "service"):
            found[kind] = one(overlay, kind, name)
        return all(found.values())
    overlay.cluster.wait_for(f"istiod to deploy {name}", made, ISTIOD_TIMEOUT)
    return found


def gateway_address(overlay: Overlay) -> tuple[str, int]:
    """Where the gateway's Envoy listens: its pod's IP (a LoadBalancer gets no address of its own
    here) and the listener's port, as the Service's EndpointSlice lists them. The data plane's
    page-through-the-gateway test starts here."""
    slices = overlay.cluster.get("endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={DEPLOYED}")
    ready = [(address, port["port"]) for s in slices["items"] for e in s.get("endpoints") or []
             if e["conditions"].get("ready") for address in e["addresses"]
             for port in s.get("ports") or [] if port["name"] == "http"]
    assert len(ready) == 1, f"the gateway's EndpointSlices: {slices['items']}"
    return ready[0]


def test_the_overlay_is_accepted_with_only_the_envoyfilters_warning(overlay: Overlay):
    applied = overlay.applied
    assert applied.returncode == 0, applied.stderr
    warnings = [line for line in applied.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "EnvoyFilter" in warnings[0], warnings
    assert "gateway.gateway.networking.k8s.io/ingress created" in applied.stdout
    assert "httproute.gateway.networking.k8s.io/marketplace created" in applied.stdout


def test_istiod_deploys_the_gateway_and_pod_security_admits_its_pods(overlay: Overlay):
    objects = deployed(overlay)
    for obj in objects.values():
        [owner] = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("Gateway", GATEWAY)
    assert objects["service"]["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in objects["service"]["spec"]["ports"] if p["name"] == "http"] == [80]
    status = overlay.cluster.kubectl("rollout", "status", f"deployment/{DEPLOYED}", "-n", NAMESPACE,
                                     "--timeout=90s", check=False)
    assert status.returncode == 0, f"{status.stdout}{status.stderr}"
    pods = overlay.cluster.get("pods", "-n", NAMESPACE, "-l", f"gateway.networking.k8s.io/gateway-name={GATEWAY}")["items"]
    assert pods, "no gateway pods"
    for pod in pods:
        # What the parametersRef's ConfigMap added to Istio's template.
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["spec"]["serviceAccountName"] == DEPLOYED
        assert conditions(pod)["Ready"]["status"] == "True"
    address, port = gateway_address(overlay)
    assert address in {p["status"]["podIP"] for p in pods} and address.startswith("10.244.") and port == 80


def test_without_the_parameters_ref_pod_security_refuses_the_gateways_pods(overlay: Overlay):
    """The twin: the same Gateway under another name and without `infrastructure` gets Istio's
    template as is, whose pods lack a seccomp profile: the ReplicaSet's pods are refused."""
    [gateway] = [d for d in rendered_variant(overlay) if d["kind"] == "Gateway"]
    bare = copy.deepcopy(gateway)
    bare["metadata"]["name"] = "bare"
    del bare["spec"]["infrastructure"]
    overlay.cluster.apply(yaml.safe_dump(bare))
    try:
        deployed(overlay, "bare-istio")
        refusals: list[str] = []

        def refused() -> bool:
            sets = overlay.cluster.get("replicasets", "-n", NAMESPACE, "-l", "gateway.networking.k8s.io/gateway-name=bare")
            refusals[:] = [conditions(s).get("ReplicaFailure", {}).get("message", "") for s in sets["items"]]
            return any("violates PodSecurity" in m for m in refusals)
        overlay.cluster.wait_for("the bare gateway's pods to be refused", refused, ISTIOD_TIMEOUT)
        print(f"ReplicaSet: {refusals}")
        assert any('"restricted:latest"' in m and "seccompProfile" in m for m in refusals), refusals
        assert not overlay.cluster.get("pods", "-n", NAMESPACE, "-l", "gateway.networking.k8s.io/gateway-name=bare")["items"]
    finally:
        overlay.cluster.kubectl("delete", GATEWAYS, "bare", "-n", NAMESPACE, "--wait=false", check=False)


def rendered_variant(overlay: Overlay) -> list[dict]:
    return [d for d in rendered(overlay) if d["apiVersion"].startswith("gateway.networking.k8s.io/")]


def test_the_gateway_is_accepted_then_programmed_once_its_load_balancer_has_an_address(overlay: Overlay):
    """Istio reports Programmed only when the gateway's Service has an address; no cloud gives a
    LoadBalancer one here, so the test does what a cloud's load-balancer controller does (writes
    the Service's status), as the cluster step stands in for the platform's TLS Secret."""
    deployed(overlay)
    gateway: dict = {}

    def pending() -> bool:
        """Accepted, and not Programmed only for want of the LoadBalancer's address (its pods
        are the Service's endpoints by then: without them istiod says "no instances found")."""
        gateway.update(one(overlay, GATEWAYS, GATEWAY) or {})
        found = conditions(gateway)
        return (found.get("Accepted", {}).get("status") == "True"
                and "address pending" in found.get("Programmed", {}).get("message", ""))
    overlay.cluster.wait_for("the Gateway to be Accepted, its address pending", pending, ISTIOD_TIMEOUT)
    condition = conditions(gateway)["Programmed"]
    assert (condition["status"], condition["reason"]) == ("False", "AddressNotAssigned"), condition
    overlay.cluster.kubectl("patch", "service", DEPLOYED, "-n", NAMESPACE, "--subresource=status", "--type=merge",
                            "-p", yaml.safe_dump({"status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}}}))

    def programmed() -> bool:
        gateway.update(one(overlay, GATEWAYS, GATEWAY) or {})
        return conditions(gateway).get("Programmed", {}).get("status") == "True"
    overlay.cluster.wait_for("the Gateway to be Programmed", programmed, ISTIOD_TIMEOUT)
    assert [a["value"] for a in gateway["status"]["addresses"]] == [LOAD_BALANCER_IP]
    [listener] = gateway["status"]["listeners"]
    assert listener["attachedRoutes"] == 1
    listened = {c["type"]: c["status"] for c in listener["conditions"]}
    assert {"Accepted": "True", "Programmed": "True", "ResolvedRefs": "True"}.items() <= listened.items(), listened


def test_the_route_is_accepted_with_its_backend_resolved(overlay: Overlay):
    route: dict = {}

    def accepted() -> bool:
        route.update(one(overlay, "httproute", "marketplace") or {})
        parents = (route.get("status") or {}).get("parents", [])
        return any(conditions(p).get("Accepted", {}).get("status") == "True" for p in parents)
    overlay.cluster.wait_for("the HTTPRoute to be Accepted", accepted, ISTIOD_TIMEOUT)
    [parent] = route["status"]["parents"]
    assert parent["controllerName"] == CONTROLLER and parent["parentRef"]["name"] == GATEWAY
    assert conditions(parent)["ResolvedRefs"]["status"] == "True", parent


def test_the_marketplace_admits_the_identity_istiod_gave_the_gateway(overlay: Overlay):
    account = deployed(overlay)["deployment"]["spec"]["template"]["spec"]["serviceAccountName"]
    policy = one(overlay, "authorizationpolicy", "marketplace")
    principals = [p for r in policy["spec"]["rules"] for f in r["from"] for p in f["source"]["principals"]]
    assert principals == [f"cluster.local/ns/{NAMESPACE}/sa/{account}"]


def test_a_route_retrying_503_is_refused_by_the_standard_channel(overlay: Overlay):
    """The twin of the route's retry rule on the server: the standard channel's CRD has no
    `retry`, so a route asking to retry the marketplace's 503 is refused, not half-applied."""
    [route] = [d for d in rendered_variant(overlay) if d["kind"] == "HTTPRoute"]
    route = copy.deepcopy(route)
    route["metadata"]["name"] = "retrying-marketplace"
    route["spec"]["rules"][0]["retry"] = {"attempts": 2, "codes": [503]}
    result = overlay.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(route), check=False)
    assert result.returncode != 0, result.stdout
    print(f"server's error: {result.stderr.strip()}")
    assert 'unknown field "spec.rules[0].retry"' in result.stderr


def test_istioctl_analyze_on_the_live_cluster_reports_nothing(overlay: Overlay):
    """Istio's analyzers (its Gateway API ones included) on the cluster as applied. Suppressed as
    for the other overlays (test_istio.py): the cluster's own `default` namespace, and IST0133 for
    the edge's EnvoyFilter, here in the bookshop namespace with the gateway."""
    report = istio.run_tool(overlay.cluster, "istioctl", "analyze", "--all-namespaces",
                            "--suppress", "IST0102=Namespace default",
                            "--suppress", f"IST0133=EnvoyFilter {NAMESPACE}/edge-trace-context")
    assert report.returncode == 0 and not report.stdout.strip(), report.stdout
    assert "No validation issues found" in report.stderr, report.stderr


# The principal dev's marketplace policy admits: the Istio install's ingress gateway.
ISTIO_GATEWAY = agent.spiffe_id(istio.NAMESPACE, "istio-ingressgateway-service-account").removeprefix("spiffe://")


def _admits_the_istio_gateway(docs: list[Doc]) -> list[Doc]:
    docs = copy.deepcopy(docs)
    [policy] = [d for d in docs if d["kind"] == "AuthorizationPolicy" and d["metadata"]["name"] == "marketplace"]
    for rule in policy["spec"]["rules"]:
        for source in rule["from"]:
            source["source"]["principals"] = [ISTIO_GATEWAY]
    return docs


AT_THE_ISTIO_GATEWAY = Flip("marketplace: the Istio gateway's principal",
                            "AuthorizationPolicy marketplace admitting the Istio gateway's account, "
                            "not the one istiod gave this gateway", _admits_the_istio_gateway)


@pytest.fixture(scope="module")
def shop(overlay: Overlay, bin_dir, tmp_path_factory) -> Iterator[ShopPods]:  # noqa: F811
    deployed(overlay)
    overlay.cluster.kubectl("rollout", "status", f"deployment/{DEPLOYED}", "-n", NAMESPACE, "--timeout=90s")
    # Not the Istio install's gateway: with its Gateway gone, istiod gives it no listener.
    with ShopPods(overlay.cluster, rendered(overlay), bin_dir, tmp_path_factory.mktemp("shop-pods"),
                  frozenset({"marketplace", "recommendations", DEPLOYED})) as running:
        yield running


@pytest.mark.parametrize(("flip", "expected"), [(BASE, f"{BOOKS}, mTLS on both hops"), (AT_THE_ISTIO_GATEWAY, "403")],
                         ids=["as rendered", "twin"])
def test_the_page_through_the_automated_gateways_pod(overlay: Overlay, shop: ShopPods, flip: Flip, expected: str):
    [proxy] = [p for p in shop.proxies.values() if p.service_account == DEPLOYED]
    # The certificate its Envoy presents: istiod's CA issued it for the gateway's account.
    assert uri_sans(chain_of(shop.base.sds_dir / proxy.base)[0]) == [agent.spiffe_id(NAMESPACE, DEPLOYED)]
    address, port = gateway_address(overlay)
    assert address == proxy.ip
    shop.use(flip)
    seen = page_through(shop, address, port)
    assert seen.outcome == expected, f"{seen.outcome!r} ({seen.detail})"
