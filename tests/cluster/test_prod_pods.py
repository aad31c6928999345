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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with the other suites)
from cases import PAGE_TRIES, TRACE_TIMEOUT, Case, Observation, _books, check
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
# How long the collector case waits for the mesh's spans once the apps' are in (all of it when
# none come: the provider flipped elsewhere).
MESH_SPANS_TIMEOUT = 15.0
# Where prod's tracing provider pointed before one collector name served mesh and apps alike.
ELSEWHERE = "jaeger-collector.observability.svc.cluster.local"


def _gateway_tracing(docs: list[Doc]) -> dict:
    """The tracing stanza of the gateway's Telemetry, where the root sampling ratio is."""
    return find(docs, "Telemetry", "ingressgateway", GATEWAY_NAMESPACE)["spec"]["tracing"][0]


def _telemetry_percent(docs: list[Doc]) -> float:
    return _gateway_tracing(docs)["randomSamplingPercentage"]


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
        _gateway_tracing(docs)["randomSamplingPercentage"] = percent
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
    """What prod's cases observe: the shop, its HTTPS edge, and the objects its flips change."""
    shop: ShopPods
    edge: Edge
    docs: list[Doc]  # as rendered, plus the platform's objects the flips change

    def use(self, flip: Flip = BASE) -> Prod:
        self.shop.use(flip)
        return self


def _without_the_secret(docs: list[Doc]) -> list[Doc]:
    secret = _https_server(docs)["tls"]["credentialName"]
    return [d for d in docs if not (d["kind"] == "Secret" and d["metadata"]["name"] == secret)]


NO_SECRET = Flip("no TLS Secret", f"the Gateway's credentialName Secret ({GATEWAY_NAMESPACE}) deleted",
                 _without_the_secret)


@contextmanager
def prod_shop(overlay: Overlay, bin_dir: Path, work_dir: Path) -> Iterator[Prod]:  # noqa: F811
    """prod's bookshop as its pods, and where a browser reaches its HTTPS server; also
    `cargo xtask mesh`'s (run_mesh.py)."""
    cluster, docs = overlay.cluster, rendered(overlay)
    https = _https_server(docs)
    secret = https["tls"]["credentialName"]
    # The platform's objects the flips change, as the API server holds them: the TLS Secret and
    # the install's mesh config.
    docs += [_applicable(cluster.get("secret", secret, "-n", GATEWAY_NAMESPACE)),
             _applicable(cluster.get("configmap", "istio", "-n", GATEWAY_NAMESPACE))]
    service = cluster.get("service", GATEWAY, "-n", GATEWAY_NAMESPACE)["spec"]
    port = next(p["targetPort"] for p in service["ports"] if p["port"] == https["port"]["number"])
    with ShopPods(cluster, docs, bin_dir, work_dir) as shop:
        edge = Edge(shop.plan.gateway_pod, port, https["hosts"][0], cluster.folder / "tls" / f"{secret}.ca.crt")
        yield Prod(shop, edge, docs)


@pytest.fixture(scope="module")
def prod(overlay: Overlay, bin_dir, tmp_path_factory) -> Iterator[Prod]:  # noqa: F811
    with prod_shop(overlay, bin_dir, tmp_path_factory.mktemp("prod-pods")) as running:
        yield running


def _inbound(prod: Prod, app: str, since: dict[str, int]) -> list[dict]:
    """The access lines of every `app` replica's Envoy on its inbound side after `since`."""
    shop = prod.shop
    return [line for key, envoy in shop.envoys.items() if role(shop.proxies[key]) == app
            for line in envoy.access_log()[since[key]:]
            if str(line.get("downstream_local_address", "")).startswith(f"{shop.pod_ip(key)}:")]


def _handshake(prod: Prod, server_name: str | None = None) -> Observation | None:
    """None if the handshake verifies against the test CA under `server_name` (the host by
    default), else what the browser sees."""
    seen = handshake(prod.edge, server_name)
    if seen == "verified":
        return None
    return Observation(NO_HANDSHAKE if seen.startswith("handshake failed") else seen, seen)


def page_over_https(prod: Prod) -> Observation:
    """The handshake verifies against the test CA under the host's name; the page is 200 with
    3 books; the gateway logged it on its HTTPS listener with that SNI; both hops behind it came
    in over Istio mTLS (the inbound lines carry the SNI Istio's client side sets, and STRICT
    leaves those listeners no other filter chain)."""
    if refused := _handshake(prod):
        return refused
    shop = prod.shop
    since = {key: len(envoy.access_log()) for key, envoy in shop.envoys.items()}
    for _ in range(PAGE_TRIES):
        [answer] = pages(prod.edge, 1)
        if answer.code != "200" or _books(answer.body) == 3:
            break
    if (answer.code, _books(answer.body)) != ("200", 3):
        return Observation(f"{answer.code}, {_books(answer.body)} books", answer.body[:200].decode(errors="replace"))

    def logged() -> tuple[list, list, list] | None:
        edge = [line for line in shop.envoys["gateway"].access_log()[since["gateway"]:]
                if line.get("downstream_local_address") == f"{prod.edge.address}:{prod.edge.port}"]
        hops = (edge, _inbound(prod, "marketplace", since), _inbound(prod, "recommendations", since))
        return hops if all(hops) else None
    edge, marketplace, recommendations = wait_until("the page's access lines", logged, timeout=15)
    names = {line["requested_server_name"] for line in edge}
    mtls = all(str(line["requested_server_name"]).startswith("outbound_.") for hop in (marketplace, recommendations)
               for line in hop)
    detail = f"SNI at the gateway {sorted(names)}; inbound SNIs {[line['requested_server_name'] for line in marketplace + recommendations]}"
    return Observation(HTTPS_PAGE if names == {prod.edge.host} and mtls else "200, 3 books, not as expected", detail)


def page_for_another_host(prod: Prod) -> Observation:
    """The HTTPS server is for the Gateway's host only: another name as SNI matches no filter
    chain, and the gateway closes the connection before any certificate."""
    return _handshake(prod, "shop.example.org") or Observation("verified", "shop.example.org")


def _bound(percent: float, count: int) -> tuple[float, float]:
    p = percent / 100
    spread = SIGMAS * math.sqrt(count * p * (1 - p))
    return count * p - spread, count * p + spread


def _services(prod: Prod) -> tuple[str, set[str], set[str]]:
    """The gateway's tracing service name, the mesh's (gateway's and sidecars'), and the apps'."""
    proxies = {role(proxy): proxy for proxy in reversed(prod.shop.proxies.values())}
    mesh = {tracing_service(prod.shop.base.xds(proxy)) for proxy in proxies.values()}
    return tracing_service(prod.shop.base.xds(proxies["gateway"])), mesh, {"marketplace", "recommendations"}


def pages_sampled(prod: Prod) -> Observation:
    """PAGES pages over HTTPS: how many the gateway sampled (their `traceresponse`), against the
    binomial bound of prod's ratio; within it, every sampled page one whole trace in Jaeger
    (the gateway its only root, every parent there, both sidecars and both apps in it) and no
    other page's trace there."""
    start = time.time()
    answers = pages(prod.edge, PAGES)
    if codes := sorted({a.code for a in answers} - {"200"}):
        return Observation(f"answers {codes}", "")
    ids = [i for i in map(sampled, answers) if i]
    low, high = _bound(_telemetry_percent(prod.docs), PAGES)
    if not low <= len(ids) <= high:
        return Observation(f"{len(ids)} of {PAGES} sampled, outside the bound", f"[{low:.1f}, {high:.1f}]")
    root, mesh, apps = _services(prod)
    jaeger = prod.shop.jaeger

    def judged() -> dict[str, str]:
        return {i: why for i in ids if (why := whole(jaeger.trace(i), mesh | apps, root))}
    try:
        wait_until("every sampled page's whole trace in Jaeger", lambda: not judged(), timeout=TRACE_TIMEOUT)
    except AssertionError:
        pass
    if problems := judged():
        return Observation(f"{len(problems)} of {len(ids)} sampled pages not one whole trace", str(problems)[:500])
    # A page's trace holds the gateway's or an app's spans; a sidecar's alone is not a page's
    # (it samples, at the mesh's ratio, the apps' OTLP exports through it, which carry no trace).
    traces = [t for service in mesh | apps for t in jaeger.traces(service, start)]
    stray = {t["traceID"] for t in traces if ({root} | apps) & {service_of(t, span) for span in t["spans"]}} - set(ids)
    if stray:
        return Observation(f"{len(stray)} traces of pages no sampled page has", str(sorted(stray))[:500])
    return Observation(SAMPLED, f"{len(ids)} of {PAGES} sampled, within [{low:.1f}, {high:.1f}]")


def _with_both_apps(jaeger, ids: list[str]) -> list[dict] | None:
    """The traces of `ids`, once each holds spans of both apps (each exports in its own batches)."""
    traces = [jaeger.trace(i) for i in ids]
    apps = {"marketplace", "recommendations"}
    return traces if all(t and apps <= {service_of(t, s) for s in t["spans"]} for t in traces) else None


def spans_at_the_collector(prod: Prod) -> Observation:
    """FLIP_PAGES pages: whose spans the sampled ones' traces hold at the collector's Jaeger, and
    whether any mesh span arrived there since (with the provider elsewhere, istiod gives the
    proxies no tracer, and only the apps' spans of the traces the marketplace starts at its own
    ratio arrive)."""
    start = time.time()
    ids = [i for i in map(sampled, pages(prod.edge, FLIP_PAGES)) if i]
    if not ids:
        return Observation("no page sampled", "")
    jaeger = prod.shop.jaeger
    wait_until("the apps' spans of the sampled pages", lambda: _with_both_apps(jaeger, ids), timeout=TRACE_TIMEOUT)
    _, mesh, apps = _services(prod)

    def holding() -> set[str]:
        return {service_of(t, span) for t in map(jaeger.trace, ids) for span in t["spans"]}
    try:  # the proxies flush their spans on their own schedule, after the apps'
        wait_until("the mesh's spans of those pages", lambda: holding() >= mesh, timeout=MESH_SPANS_TIMEOUT)
    except AssertionError:
        pass
    services = holding()
    later = {service for service in mesh if jaeger.traces(service, start)}
    if services >= mesh | apps:
        return Observation(ALL_SPANS, f"{len(ids)} pages sampled; services {sorted(services)}")
    if not services & mesh and not later:
        return Observation(APP_SPANS, f"{len(ids)} pages sampled; services {sorted(services)}")
    return Observation(f"spans of {sorted(services)}", f"mesh services with traces since: {sorted(later)}")


HTTPS_PAGE = "200, 3 books over TLS for the Gateway's host, mTLS on both hops"
NO_HANDSHAKE = "no TLS handshake"
SAMPLED = f"within {SIGMAS} sigmas of the gateway's ratio, each sampled page one whole trace"
ALL_SPANS = "the gateway's, both sidecars' and both apps' spans"
APP_SPANS = "the apps' spans only"

# Grouped by flip (the Envoys restart between groups); each twin under its flip.
PROD_CASES = (
    Case("a page over HTTPS through prod's Gateway", BASE, page_over_https, HTTPS_PAGE),
    Case("a page over HTTPS for another host (SNI)", BASE, page_for_another_host, NO_HANDSHAKE),
    Case(f"{PAGES} pages: those the gateway samples", BASE, pages_sampled, SAMPLED),
    Case("the collector prod names", BASE, spans_at_the_collector, ALL_SPANS),
    Case("a page over HTTPS through prod's Gateway", NO_SECRET, page_over_https, NO_HANDSHAKE),
    Case(f"{PAGES} pages: those the gateway samples", DEV_RATIO, pages_sampled,
         f"{PAGES} of {PAGES} sampled, outside the bound"),
    Case("the collector prod names", MESH_ELSEWHERE, spans_at_the_collector, APP_SPANS),
)


@pytest.mark.parametrize("case", PROD_CASES, ids=[case.id for case in PROD_CASES])
def test_case(prod: Prod, case: Case) -> None:
    check(case, prod)


def test_the_apps_and_the_mesh_name_one_collector(overlay: Overlay, prod: Prod) -> None:
    """The tracing provider of production's install and every app's OTLP endpoint name the same
    Service and port, and Jaeger listens on that Service's endpoint: where the collector case
    reads the spans is where prod sends them."""
    prod.use(BASE)
    (namespace, name), port = otel_collector(overlay.cluster)
    for key, network in prod.shop.pods.items():
        if role(prod.shop.proxies[key]) != "gateway":
            env = container_env(overlay.cluster, network.pod, app_container(network.pod))
            endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert (endpoint.hostname, endpoint.port) == (f"{name}.{namespace}.svc.cluster.local", port), key
    address, target = collector_endpoint(overlay.cluster)
    assert prod.shop.jaeger.otlp_endpoint == f"http://{address}:{target}"
