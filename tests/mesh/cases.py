"""The cases: what is sent through the loopback mesh, under which variant of the manifests, and
the outcome it must have. Each policy case has a twin under a flip of the manifests whose outcome
differs, which shows that the policy, not an accident of the harness, decides it. The tests
(tests/mesh/test_mesh.py) and `cargo xtask mesh` (run_cases.py) run these same cases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import clients
from inputs import FLIPS, GATEWAY_HTTP_PORT, HTTP_SERVICE_PORT, MARKETPLACE_PORT, NAMESPACE, RECOMMENDATIONS_PORT, Flip
from loopback import wait_until
from loopback_mesh import LoopbackMesh

# Bounded waits: a page whose first call to recommendations is slow (a cold TLS connection on a
# loaded machine) shows its notice instead of the books, so the page is asked a few times; and
# Envoys and the services export spans in batches every few seconds.
PAGE_TRIES = 5
TRACE_TIMEOUT = 60.0
ACCESS_LOG_TIMEOUT = 15.0
PAGE = "/"
RECOMMENDATIONS_HOST = f"recommendations.{NAMESPACE}.svc.cluster.local:{RECOMMENDATIONS_PORT}"
MARKETPLACE_HOST = f"marketplace.{NAMESPACE}.svc.cluster.local"


@dataclass(frozen=True)
class Observation:
    outcome: str  # compared with the case's expected outcome
    detail: str  # what else was seen, for a person


def _books(body: bytes) -> int:
    return body.count(b"<li>")


def _inbound_lines(mesh: LoopbackMesh, key: str, port: int, since: int) -> list[dict[str, Any]]:
    """Access lines of `key`'s Envoy, on its inbound listener, after the first `since` lines."""
    address = f"{mesh.pod_ip(key)}:{port}"
    return [line for line in mesh.envoys[key].access_log()[since:] if line.get("downstream_local_address") == address]


def page_through_ingress(mesh: LoopbackMesh) -> Observation:
    return page_through(mesh, mesh.plan.gateway_pod, GATEWAY_HTTP_PORT)


def page_through(mesh: LoopbackMesh, address: str, port: int) -> Observation:
    """GET a page from a gateway's listener, as a browser would; on a 200, whether both hops
    behind it (gateway → marketplace, marketplace → recommendations) arrived over Istio mTLS: the
    inbound listeners' access lines carry the SNI Istio's client side sets on its mTLS
    connections, and STRICT leaves those listeners no other filter chain."""
    before = {key: len(mesh.envoys[key].access_log()) for key in ("marketplace", "recommendations")}
    for _ in range(PAGE_TRIES):
        answer = clients.http_get(address, port, PAGE, "bookshop.test")
        if answer.code != "200" or _books(answer.body) == 3:
            break
    if answer.code != "200":
        return Observation(answer.code, answer.body.decode(errors="replace")[:80])

    def logged() -> list[list[dict[str, Any]]] | None:
        seen = [_inbound_lines(mesh, "marketplace", MARKETPLACE_PORT, before["marketplace"]),
                _inbound_lines(mesh, "recommendations", RECOMMENDATIONS_PORT, before["recommendations"])]
        return seen if all(seen) else None
    try:
        lines = wait_until("the inbound access lines of the page and its call", logged, timeout=ACCESS_LOG_TIMEOUT)
    except AssertionError as err:
        return Observation(f"200, {_books(answer.body)} books, a hop not logged", str(err))
    sni = [sorted({str(line.get("requested_server_name")) for line in hop}) for hop in lines]
    mtls = all(name.startswith("outbound_.") for names in sni for name in names)
    hops = "mTLS on both hops" if mtls else "a hop without mTLS"
    return Observation(f"200, {_books(answer.body)} books, {hops}",
                       f"inbound SNI: marketplace {sni[0]}, recommendations {sni[1]}")


def _grpc(answer: clients.Answer, ok: Callable[[Any], str]) -> Observation:
    if answer.code != "OK":
        return Observation(answer.code, answer.detail)
    return Observation(f"OK, {ok(answer.body)}", "")


def _recommend(mesh: LoopbackMesh, target: str, authority: str | None = None) -> Observation:
    answer = mesh.callers.recommend(target, authority)
    return _grpc(answer, lambda body: f"{len(body.recommendations)} books")


def _marketplace_egress(mesh: LoopbackMesh) -> str:
    """The marketplace Envoy's listener for recommendations (bound on its cluster IP)."""
    return f"{mesh.plan.cluster_ip(NAMESPACE, 'recommendations')}:{RECOMMENDATIONS_PORT}"


def recommend_as_marketplace(mesh: LoopbackMesh) -> Observation:
    return _recommend(mesh, _marketplace_egress(mesh))


def recommend_as_other_identity(mesh: LoopbackMesh) -> Observation:
    """Through mesh-probe's Envoy: mTLS with the `default` service account's certificate."""
    return _recommend(mesh, f"{mesh.plan.probe_pod}:{RECOMMENDATIONS_PORT}", RECOMMENDATIONS_HOST)


def health_as_marketplace(mesh: LoopbackMesh) -> Observation:
    answer = mesh.callers.health(_marketplace_egress(mesh))
    return _grpc(answer, lambda body: "SERVING" if body.status == clients.SERVING else f"status {body.status}")


def reflection_as_marketplace(mesh: LoopbackMesh) -> Observation:
    answer = mesh.callers.list_services(_marketplace_egress(mesh))
    def listing(body: Any) -> str:
        names = clients.listed_services(body)
        return f"lists {clients.RECOMMENDATIONS_SERVICE}" if clients.RECOMMENDATIONS_SERVICE in names else f"lists {names}"
    return _grpc(answer, listing)


def plaintext_to_recommendations(mesh: LoopbackMesh) -> Observation:
    """Recommend straight to the recommendations Envoy's inbound port, without TLS. gRPC says
    UNAVAILABLE for a closed port too, so first: something does listen there."""
    if not clients.can_connect(mesh.plan.recommendations_pod, RECOMMENDATIONS_PORT):
        return Observation("nothing listens", "")
    return _recommend(mesh, f"{mesh.plan.recommendations_pod}:{RECOMMENDATIONS_PORT}", RECOMMENDATIONS_HOST)


def marketplace_as_other_identity(mesh: LoopbackMesh) -> Observation:
    """A page asked of the marketplace directly, through mesh-probe's Envoy (identity `default`)."""
    answer = mesh.callers.http_get(mesh.plan.probe_pod, HTTP_SERVICE_PORT, PAGE, MARKETPLACE_HOST)
    if answer.code == "200":
        return Observation(f"200, {_books(answer.body)} books", "")
    return Observation(answer.code, answer.body.decode(errors="replace")[:80])


def plaintext_to_marketplace(mesh: LoopbackMesh) -> Observation:
    """A page asked of the marketplace Envoy's inbound port directly, without TLS."""
    answer = clients.http_get(mesh.plan.marketplace_pod, MARKETPLACE_PORT, PAGE, MARKETPLACE_HOST)
    return Observation(answer.code, answer.detail if answer.code == "reset" else answer.body.decode(errors="replace")[:80])


def _service(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return trace["processes"][span["processID"]]["serviceName"]


def trace_of_a_page(mesh: LoopbackMesh) -> Observation:
    """A page through the ingress, then its trace read back from Jaeger (the id the marketplace
    answers in `traceresponse`): who started it (the span without a parent) and whether both
    services' spans are in that same trace."""
    answer = clients.http_get(mesh.plan.gateway_pod, GATEWAY_HTTP_PORT, PAGE, "bookshop.test")
    parts = answer.detail.split("-")
    if answer.code != "200" or len(parts) != 4:
        return Observation(f"page {answer.code}, traceresponse {answer.detail!r}", "")
    trace_id = parts[1]
    apps = {"marketplace", "recommendations"}

    def settled() -> dict[str, Any] | None:
        trace = mesh.jaeger.trace(trace_id)
        if not trace:
            return None
        roots = [span for span in trace["spans"] if not span.get("references")]
        services = {_service(trace, span) for span in trace["spans"]}
        # Every parent a span names is in too: each proxy's span is the parent of the next
        # hop's, so a proxy whose last batch trails the others leaves a span without its parent.
        ids = {span["spanID"] for span in trace["spans"]}
        connected = all(ref["spanID"] in ids for span in trace["spans"] for ref in span.get("references", [])
                        if ref.get("refType") == "CHILD_OF")
        # The apps' spans and the span that has no parent (whichever proxy started the trace).
        return trace if roots and apps <= services and connected else None
    try:
        trace = wait_until(f"trace {trace_id} in Jaeger, with its root, both services' spans and every parent",
                           settled, timeout=TRACE_TIMEOUT)
    except AssertionError as err:
        return Observation("no complete trace", str(err))
    roots = sorted({_service(trace, span) for span in trace["spans"] if not span.get("references")})
    services = sorted({_service(trace, span) for span in trace["spans"]})
    return Observation(f"one trace from {' and '.join(roots)}, both services in it",
                       f"trace {trace_id}: spans from {', '.join(services)}")


# A client's own trace context, sampled: what an internet client would send to force its
# requests into the sample (and Envoy's own way to ask for a trace).
CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_TRACE_HEADERS = {"traceparent": f"00-{CLIENT_TRACE_ID}-b7ad6b7169203331-01",
                        "tracestate": "client=forced", "x-client-trace-id": CLIENT_TRACE_ID}


def page_with_a_clients_traceparent(mesh: LoopbackMesh) -> Observation:
    """A page through the ingress carrying a client's sampled traceparent: whose trace the page
    is in (the trace id the marketplace answers in `traceresponse`)."""
    answer = clients.http_get(mesh.plan.gateway_pod, GATEWAY_HTTP_PORT, PAGE, "bookshop.test", CLIENT_TRACE_HEADERS)
    parts = answer.detail.split("-")
    if answer.code != "200" or len(parts) != 4:
        return Observation(f"page {answer.code}, traceresponse {answer.detail!r}", "")
    whose = "the client's trace" if parts[1] == CLIENT_TRACE_ID else "a trace the gateway started"
    return Observation(whose, f"traceresponse {answer.detail}, the client sent trace {CLIENT_TRACE_ID}")


# Calls made at once while recommendations is at its limit, and how many times to try for a
# burst that meets the held permit (see recommendations_shedding_under_load).
BURST = 32
ATTEMPTS = 5
HOLD_TIMEOUT = 15.0


def _calls_reaching_recommendations(mesh: LoopbackMesh) -> int:
    """Requests recommendations' Envoy handed to the app (its inbound cluster's)."""
    counters = mesh.envoys["recommendations"].counters("upstream_rq_total")
    return sum(v for name, v in counters.items() if name.startswith(f"cluster.inbound|{RECOMMENDATIONS_PORT}|"))


def recommendations_shedding_under_load(mesh: LoopbackMesh) -> Observation:
    """Recommendations at its concurrency limit, then a burst of Recommend calls through the
    marketplace's Envoy, which it sheds with RESOURCE_EXHAUSTED: whether it got more calls than
    were made (the mesh's retries adding load to the overloaded service) or exactly those.

    At its limit: the loopback runs it with GRPC_MAX_CONCURRENT_CALLS=1, and one call through
    the same Envoy holds that permit by withholding its message, until the deadline Envoy
    passes on (the route's 150 ms per try) ends it at the server; the burst starts as soon as
    the held call arrives. A burst that met no held permit (a stalled machine) is tried again."""
    target = _marketplace_egress(mesh)
    made = reached = 0
    codes: list[str] = []
    for _ in range(ATTEMPTS):
        start = _calls_reaching_recommendations(mesh)
        with mesh.callers.recommend_held_open(target):
            wait_until("the held call at recommendations", lambda: _calls_reaching_recommendations(mesh) > start,
                       timeout=HOLD_TIMEOUT, interval=0.002)
            before = _calls_reaching_recommendations(mesh)
            burst = mesh.callers.recommend_all_at_once(target, BURST)
            reached += _calls_reaching_recommendations(mesh) - before
        made += len(burst)
        codes += burst
        if "RESOURCE_EXHAUSTED" in codes or reached > made:
            break
    retried = sum(v for name, v in mesh.envoys["marketplace"].counters("upstream_rq_retry").items()
                  if name.endswith(".upstream_rq_retry"))
    shed = codes.count("RESOURCE_EXHAUSTED")
    detail = (f"{made} calls made, {reached} reached recommendations, {shed} answered RESOURCE_EXHAUSTED, "
              f"{codes.count('OK')} OK; the marketplace's Envoy counted {retried} retries (this flip's run)")
    if reached > made:
        return Observation("shedding; the mesh added calls", detail)
    if shed == 0:
        return Observation("nothing shed", detail)
    return Observation("shedding; recommendations got only the calls made", detail)


@dataclass(frozen=True)
class Case:
    name: str
    flip: Flip
    observe: Callable[[LoopbackMesh], Observation]
    expected: str

    @property
    def id(self) -> str:
        return f"{self.name} [{self.flip.name}]"

    def run(self, target: Any) -> Observation:
        """The case on `target` (the loopback mesh, the cluster's pods): its flip put in place
        (`use`), then what came back."""
        target.use(self.flip)
        return self.observe(target)


def check(case: Case, target: Any) -> None:
    """A case as a test: run on `target`, what it saw printed (pytest -s), its outcome the
    expected one."""
    seen = case.run(target)
    print(f"{case.id}: {seen.outcome} ({seen.detail})")
    assert seen.outcome == case.expected, f"{case.id}: {seen.outcome!r} ({seen.detail})"


BOOKS = "200, 3 books"
DENIED = "PERMISSION_DENIED"
GATEWAY_ROOT = "one trace from istio-ingressgateway.istio-system, both services in it"
SIDECAR_ROOT = "one trace from marketplace.bookshop, both services in it"
_AS_RENDERED, _PERMISSIVE = FLIPS["as rendered"], FLIPS["PERMISSIVE"]

# Grouped by flip (the Envoys restart between groups); each case next to its twin in the table.
CASES = (
    Case("a browser's page through the ingress", _AS_RENDERED, page_through_ingress, f"{BOOKS}, mTLS on both hops"),
    Case("the marketplace's Envoy calls Recommend", _AS_RENDERED, recommend_as_marketplace, "OK, 3 books"),
    Case("Recommend with another identity (sa/default)", _AS_RENDERED, recommend_as_other_identity, DENIED),
    Case("gRPC health from the marketplace's identity", _AS_RENDERED, health_as_marketplace, DENIED),
    Case("gRPC reflection from the marketplace's identity", _AS_RENDERED, reflection_as_marketplace, DENIED),
    Case("plaintext to the recommendations Envoy's inbound port", _AS_RENDERED, plaintext_to_recommendations,
         "UNAVAILABLE"),
    Case("the marketplace from another identity (sa/default)", _AS_RENDERED, marketplace_as_other_identity, "403"),
    Case("plaintext to the marketplace Envoy's inbound port", _AS_RENDERED, plaintext_to_marketplace, "reset"),
    Case("the trace of a page", _AS_RENDERED, trace_of_a_page, GATEWAY_ROOT),
    Case("a page with a client's sampled traceparent", _AS_RENDERED, page_with_a_clients_traceparent,
         "a trace the gateway started"),
    Case("recommendations shedding a burst", _AS_RENDERED, recommendations_shedding_under_load,
         "shedding; recommendations got only the calls made"),

    Case("a browser's page through the ingress", FLIPS["no marketplace allow"], page_through_ingress, "403"),
    Case("the marketplace from another identity (sa/default)", FLIPS["marketplace: any caller"],
         marketplace_as_other_identity, BOOKS),
    Case("the marketplace's Envoy calls Recommend", FLIPS["no recommendations allow"], recommend_as_marketplace,
         DENIED),
    Case("Recommend with another identity (sa/default)", FLIPS["recommendations: any caller"],
         recommend_as_other_identity, "OK, 3 books"),
    Case("gRPC health from the marketplace's identity", FLIPS["recommendations: any path"], health_as_marketplace,
         "OK, SERVING"),
    Case("gRPC reflection from the marketplace's identity", FLIPS["recommendations: any path"],
         reflection_as_marketplace, f"OK, lists {clients.RECOMMENDATIONS_SERVICE}"),
    # PERMISSIVE: plaintext now reaches the policies, which find no identity to allow.
    Case("plaintext to the recommendations Envoy's inbound port", _PERMISSIVE, plaintext_to_recommendations, DENIED),
    Case("plaintext to the marketplace Envoy's inbound port", _PERMISSIVE, plaintext_to_marketplace, "403"),
    Case("the trace of a page", FLIPS["no gateway tracing"], trace_of_a_page, SIDECAR_ROOT),
    Case("a page with a client's sampled traceparent", FLIPS["clients' trace headers kept"],
         page_with_a_clients_traceparent, "the client's trace"),
    Case("recommendations shedding a burst", FLIPS["retry on shedding"], recommendations_shedding_under_load,
         "shedding; the mesh added calls"),
)
