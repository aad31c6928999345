"""Prod's path on prod's cluster, run as its pods (shop_pods.py, as dev's are): Istio installed
with production.yaml, the prod overlay applied, every marketplace and recommendations replica
(three each) with its app and Envoy in its own network namespace behind Istio CNI's capture,
one ingress gateway pod, each configured by the real istiod and identified by its CA, and a real
Jaeger at the pod of the collector the platform provides (cluster.provide_collector).

- HTTPS at the edge: the certificate of the Secret `credentialName` names (the platform's test CA
  issued it, cluster.provide_tls_secrets) reaches the gateway's Envoy as a real gateway's does,
  over SDS on its ADS stream to istiod (`mesh-xds istiod` asks for it there and writes it as
  the SDS file the bootstrap reads); a page over TLS, verified against that CA with the host as
  SNI, is served, with mTLS on both hops behind. Twins: another host as SNI, and the Secret
  deleted, get no handshake.
- Sampling at prod's ratio, decided at the gateway: of a few hundred pages, the sampled fraction
  within a binomial bound of it, every sampled page one whole trace across the gateway, both
  sidecars and both services, nothing else traced. Twin: at dev's ratio the fraction is outside.
- The collector: the mesh's tracing provider and the apps' OTLP endpoint name one Service, the
  one Jaeger answers behind, and spans of both arrive there. Twin: the provider pointed at
  another name (prod's before the fix), no mesh span arrives there."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import yaml

from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with the other suites)
from cases import PAGE_TRIES, TRACE_TIMEOUT, _books
from conftest import Overlay, rendered
from inputs import BASE, Doc, Flip, find
from loopback import wait_until
from outside_tools import REPO_ROOT
from pod_apps import app_container, container_env
from prod_edge import Edge, handshake, pages, sampled, service_of, tracing_service, whole
from istio import otel_collector
from shop_pods import GATEWAY_NAMESPACE, ShopPods, collector_endpoint, role

pytestmark = pytest.mark.parametrize("overlay", ["prod"], indirect=True)

GATEWAY = "istio-ingressgateway"
# How many pages the sampling is judged on, and how far from the expected count (in standard
# deviations of the binomial count) the sampled ones may be. At prod's 10% of 300: 30 expected,
# sigma = sqrt(300 * 0.1 * 0.9) = 5.2, so 7 to 53 pass; a fair run falls outside with a
# probability of about 1e-5, and dev's 100% (300 of 300) is 52 sigmas out.
PAGES = 300
SIGMAS = 4.5
# The pages under the provider flip: at the apps' own 10% for traces that start in them, the
# chance that none of 100 is sampled (and the flip shows nothing) is 0.9**100, 3e-5.
FLIP_PAGES = 100
# Where prod's tracing provider pointed before one collector name served mesh and apps alike.
ELSEWHERE = "jaeger-collector.observability.svc.cluster.local"


def _telemetry_percent(docs: list[Doc]) -> float:
    return find(docs, "Telemetry", "ingressgateway", GATEWAY_NAMESPACE)["spec"]["tracing"][0]["randomSamplingPercentage"]


def _applicable(doc: Doc) -> Doc:
    """An object read from the API server as it could be applied again after a delete."""
    meta = doc["metadata"]
    kept = {k: v for k, v in doc.items() if k not in ("metadata", "status")}
    return {**kept, "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": meta.get("labels", {})}}


def _https_server(docs: list[Doc]) -> dict:
    return next(s for s in find(docs, "Gateway", "bookshop")["spec"]["servers"] if s["port"]["protocol"] == "HTTPS")


def _with_percent(percent: float):
    def change(docs: list[Doc]) -> list[Doc]:
        docs = copy.deepcopy(docs)
        find(docs, "Telemetry", "ingressgateway", GATEWAY_NAMESPACE)["spec"]["tracing"][0]["randomSamplingPercentage"] = percent
        return docs
    return change


def _provider_at(service: str):
    def change(docs: list[Doc]) -> list[Doc]:
        docs = copy.deepcopy(docs)
        config = find(docs, "ConfigMap", "istio", GATEWAY_NAMESPACE)
        mesh = yaml.safe_load(config["data"]["mesh"])
        next(p for p in mesh["extensionProviders"] if p["name"] == "otel")["opentelemetry"]["service"] = service
        config["data"]["mesh"] = yaml.safe_dump(mesh)
        return docs
    return change


DEV_PERCENT = _telemetry_percent(list(yaml.safe_load_all((REPO_ROOT / "istio/telemetry.yaml").read_text())))
DEV_RATIO = Flip("dev's ratio", f"Telemetry ingressgateway at dev's randomSamplingPercentage ({DEV_PERCENT})",
                 _with_percent(DEV_PERCENT))
MESH_ELSEWHERE = Flip("provider elsewhere", f"the mesh config's otel provider at {ELSEWHERE}", _provider_at(ELSEWHERE))


@dataclass
class Prod:
    shop: ShopPods
    edge: Edge
    docs: list[Doc]  # as rendered, plus the platform's objects the flips change
    secret: str


@pytest.fixture(scope="module")
def prod(overlay: Overlay, bin_dir, tmp_path_factory) -> Iterator[Prod]:  # noqa: F811
    cluster = overlay.cluster
    secret = _https_server(rendered(overlay))["tls"]["credentialName"]
    # The platform's objects the flips change, as the API server holds them: the TLS Secret and
    # the install's mesh config.
    platform = [_applicable(cluster.get("secret", secret, "-n", GATEWAY_NAMESPACE)),
                _applicable(cluster.get("configmap", "istio", "-n", GATEWAY_NAMESPACE))]
    docs = rendered(overlay) + platform
    https = _https_server(docs)
    service = cluster.get("service", GATEWAY, "-n", GATEWAY_NAMESPACE)["spec"]
    port = next(p["targetPort"] for p in service["ports"] if p["port"] == https["port"]["number"])
    with ShopPods(cluster, docs, bin_dir, tmp_path_factory.mktemp("prod-pods")) as shop:
        edge = Edge(shop.plan.gateway_pod, port, https["hosts"][0], cluster.folder / "tls" / f"{secret}.ca.crt")
        yield Prod(shop, edge, docs, secret)


def _inbound(prod: Prod, app: str, since: dict[str, int]) -> list[dict]:
    """The access lines of every `app` replica's Envoy on its inbound side after `since`."""
    shop = prod.shop
    return [line for key, envoy in shop.envoys.items() if role(shop.proxies[key]) == app
            for line in envoy.access_log()[since[key]:]
            if str(line.get("downstream_local_address", "")).startswith(f"{shop.pod_ip(key)}:")]


def test_a_page_over_https_is_served_with_the_secrets_certificate(prod: Prod) -> None:
    """The handshake verifies against the test CA under the host's name; the page is 200 with
    3 books; the gateway logged it on its HTTPS listener with that SNI; both hops behind it came
    in over Istio mTLS (the inbound lines carry the SNI Istio's client side sets, and STRICT
    leaves those listeners no other filter chain)."""
    shop = prod.shop.use(BASE)
    assert handshake(prod.edge) == "verified"
    since = {key: len(envoy.access_log()) for key, envoy in shop.envoys.items()}
    for _ in range(PAGE_TRIES):
        [answer] = pages(prod.edge, 1)
        if answer.code != "200" or _books(answer.body) == 3:
            break
    assert (answer.code, _books(answer.body)) == ("200", 3), answer.body[:200]

    def logged() -> tuple[list, list, list] | None:
        edge = [line for line in shop.envoys["gateway"].access_log()[since["gateway"]:]
                if line.get("downstream_local_address") == f"{prod.edge.address}:{prod.edge.port}"]
        hops = (edge, _inbound(prod, "marketplace", since), _inbound(prod, "recommendations", since))
        return hops if all(hops) else None
    edge, marketplace, recommendations = wait_until("the page's access lines", logged, timeout=15)
    assert {line["requested_server_name"] for line in edge} == {prod.edge.host}
    for hop in (marketplace, recommendations):
        assert all(str(line["requested_server_name"]).startswith("outbound_.") for line in hop), hop


def test_another_host_gets_no_handshake(prod: Prod) -> None:
    """The HTTPS server is for the Gateway's host only: another name as SNI matches no filter
    chain, and the gateway closes the connection before any certificate."""
    prod.shop.use(BASE)
    assert handshake(prod.edge, "shop.example.org").startswith("handshake failed")


def test_without_the_secret_the_gateway_has_no_certificate(prod: Prod) -> None:
    """The Secret deleted through the API server: istiod sends the gateway nothing for it, and
    the same page's handshake fails. So the certificate the page verified came from the Secret,
    through istiod."""
    flip = Flip("no TLS Secret", f"the Secret {prod.secret} ({GATEWAY_NAMESPACE}) deleted",
                lambda docs: [d for d in docs if not (d["kind"] == "Secret" and d["metadata"]["name"] == prod.secret)])
    try:
        prod.shop.use(flip)
        assert handshake(prod.edge).startswith("handshake failed")
    finally:
        prod.shop.use(BASE)


@dataclass
class Sample:
    pages: int
    sampled: list[str]  # the trace ids of the pages sampled
    problems: dict[str, str]  # trace id: why it is not one whole trace
    services: set[str]  # every service whose spans those traces hold
    stray: set[str]  # traces of pages in Jaeger since the pages began that no sampled page has


def _sample(prod: Prod, count: int, *, judge: bool) -> Sample:
    """`count` pages over HTTPS; if `judge`, each sampled page's trace as Jaeger holds it."""
    shop, start = prod.shop, time.time()
    answers = pages(prod.edge, count)
    assert all(a.code == "200" for a in answers), sorted({a.code for a in answers})
    ids = [i for i in map(sampled, answers) if i]
    if not judge:
        return Sample(count, ids, {}, set(), set())
    proxies = {role(proxy): proxy for proxy in reversed(shop.proxies.values())}
    root = tracing_service(shop.base.xds(proxies["gateway"]))
    services = {tracing_service(shop.base.xds(proxy)) for proxy in proxies.values()} | {"marketplace", "recommendations"}

    def judged() -> dict[str, str]:
        return {i: why for i in ids if (why := whole(shop.jaeger.trace(i), services, root))}
    try:
        wait_until("every sampled page's whole trace in Jaeger", lambda: not judged(), timeout=TRACE_TIMEOUT)
    except AssertionError:
        pass
    problems = judged()
    traces = [t for service in services for t in shop.jaeger.traces(service, start)]
    seen = {service_of(t, span) for t in traces if t["traceID"] in ids for span in t["spans"]}
    # A page's trace holds the gateway's or an app's spans; a sidecar's alone is not a page's
    # (it samples, at the mesh's ratio, the apps' OTLP exports through it, which carry no trace).
    pages_of = {root, "marketplace", "recommendations"}
    stray = {t["traceID"] for t in traces if pages_of & {service_of(t, span) for span in t["spans"]}} - set(ids)
    return Sample(count, ids, problems, seen, stray)


def _bound(percent: float, count: int) -> tuple[float, float]:
    p = percent / 100
    spread = SIGMAS * math.sqrt(count * p * (1 - p))
    return count * p - spread, count * p + spread


@pytest.fixture(scope="module")
def sample(prod: Prod) -> Sample:
    prod.shop.use(BASE)
    return _sample(prod, PAGES, judge=True)


def test_the_gateway_samples_prods_ratio_of_pages_each_one_whole_trace(prod: Prod, sample: Sample) -> None:
    percent = _telemetry_percent(prod.docs)
    low, high = _bound(percent, PAGES)
    assert low <= len(sample.sampled) <= high, f"{len(sample.sampled)} of {PAGES} sampled, outside [{low:.1f}, {high:.1f}]"
    assert sample.problems == {}
    assert sample.stray == set(), "traces in Jaeger that no sampled page has"


def test_at_devs_ratio_the_sampled_fraction_leaves_the_bound(prod: Prod) -> None:
    try:
        prod.shop.use(DEV_RATIO)
        flipped = _sample(prod, PAGES, judge=False)
    finally:
        prod.shop.use(BASE)
    low, high = _bound(_telemetry_percent(prod.docs), PAGES)
    assert not low <= len(flipped.sampled) <= high, f"{len(flipped.sampled)} of {PAGES}"
    assert len(flipped.sampled) == PAGES * DEV_PERCENT / 100


def test_mesh_and_apps_send_to_the_collector_prods_names_give(overlay: Overlay, prod: Prod, sample: Sample) -> None:
    """The tracing provider of production's install and every app's OTLP endpoint name the same
    Service and port; Jaeger listens on that Service's endpoint; and the sampled pages' traces
    hold spans of the gateway, both sidecars and both apps, so each sent its spans there."""
    (namespace, name), port = otel_collector(overlay.cluster)
    for key, network in prod.shop.pods.items():
        if role(prod.shop.proxies[key]) != "gateway":
            env = container_env(overlay.cluster, network.pod, app_container(network.pod))
            endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert (endpoint.hostname, endpoint.port) == (f"{name}.{namespace}.svc.cluster.local", port), key
    address, target = collector_endpoint(overlay.cluster)
    assert prod.shop.jaeger.otlp_endpoint == f"http://{address}:{target}"
    mesh = {tracing_service(prod.shop.base.xds(proxy)) for proxy in prod.shop.proxies.values()}
    assert sample.services >= mesh | {"marketplace", "recommendations"}, sample.services


def _with_both_apps(jaeger, ids: list[str]) -> list[dict] | None:
    """The traces of `ids`, once each holds spans of both apps (each exports in its own batches)."""
    traces = [jaeger.trace(i) for i in ids]
    apps = {"marketplace", "recommendations"}
    return traces if all(t and apps <= {service_of(t, s) for s in t["spans"]} for t in traces) else None


def test_with_the_provider_elsewhere_no_mesh_span_arrives(prod: Prod) -> None:
    """The mesh config's provider at another name: istiod finds no such Service and gives the
    proxies no tracer, so the collector gets the apps' spans only (traces the marketplace starts
    at its own ratio), none of the gateway's or the sidecars'."""
    try:
        prod.shop.use(MESH_ELSEWHERE)
        start = time.time()
        ids = [i for i in map(sampled, pages(prod.edge, FLIP_PAGES)) if i]
        assert ids, "no page sampled by the marketplace itself"
        jaeger = prod.shop.jaeger
        traces = wait_until("the apps' spans of the sampled pages", lambda: _with_both_apps(jaeger, ids), timeout=TRACE_TIMEOUT)
        mesh = {tracing_service(prod.shop.base.xds(proxy)) for proxy in prod.shop.proxies.values()}
        services = {service_of(t, span) for t in traces for span in t["spans"]}
        later = [t["traceID"] for service in mesh for t in jaeger.traces(service, start)]
    finally:
        prod.shop.use(BASE)
    assert not services & mesh and later == [], (services, later)
