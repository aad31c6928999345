"""What prod's edge is asked and how its traces are judged, on prod's pods (shop_pods.py): pages
over HTTPS to the ingress gateway pod, the TLS handshake verified against the test CA that
issued the `credentialName` Secret's certificate and the host sent as SNI; and the traces of
those pages as the collector's Jaeger holds them."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients import CALL_TIMEOUT, Answer


@dataclass(frozen=True)
class Edge:
    """Where a browser reaches prod's HTTPS server: the gateway pod's address and the port its
    Service's `https` port targets, the Gateway's host, and the root that the platform's CA
    gave its clients."""
    address: str
    port: int
    host: str
    ca: Path


@contextmanager
def tls(edge: Edge, server_name: str | None = None) -> Iterator[http.client.HTTPConnection]:
    """One HTTP/1.1 connection over TLS to the gateway pod, `server_name` (the host by default)
    sent as SNI and required in the certificate, which must chain to the test CA."""
    name = server_name or edge.host
    context = ssl.create_default_context(cafile=str(edge.ca))
    raw = socket.create_connection((edge.address, edge.port), timeout=CALL_TIMEOUT)
    try:
        connection = http.client.HTTPConnection(name, edge.port, timeout=CALL_TIMEOUT)
        connection.sock = context.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise
    try:
        yield connection
    finally:
        connection.close()


def handshake(edge: Edge, server_name: str | None = None) -> str:
    """`verified`, or how the TLS handshake failed."""
    try:
        with tls(edge, server_name):
            return "verified"
    except ssl.SSLCertVerificationError as err:
        return f"certificate not trusted ({err.verify_message})"
    except (ssl.SSLError, OSError) as err:
        return f"handshake failed ({type(err).__name__})"


def pages(edge: Edge, count: int) -> list[Answer]:
    """`count` pages, one after another, over one connection (a browser's keep-alive), a new one
    if the gateway closes it; each answer with its `traceresponse`."""
    answers: list[Answer] = []
    while len(answers) < count:
        with tls(edge) as connection:
            while len(answers) < count:
                connection.request("GET", "/", headers={"Host": edge.host})
                response = connection.getresponse()
                answers.append(Answer(str(response.status), response.read(), response.getheader("traceresponse") or ""))
                if response.will_close:
                    break
    return answers


def sampled(answer: Answer) -> str | None:
    """The page's trace id if the marketplace's span was sampled (`traceresponse` flags 01):
    the marketplace follows the sampled flag its sidecar passes on, which the gateway decided."""
    parts = answer.detail.split("-")
    return parts[1] if len(parts) == 4 and parts[3] == "01" else None


def tracing_service(xds: dict[str, Any]) -> str | None:
    """The `service.name` istiod gave a proxy's OpenTelemetry tracer (its listeners' tracing)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "grpc_service" in node and "service_name" in node:
                found.append(node["service_name"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)
    walk(xds.get("listeners", []))
    return found[0] if found else None


def service_of(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return trace["processes"][span["processID"]]["serviceName"]


def whole(trace: dict[str, Any] | None, services: set[str], root: str) -> str | None:
    """Why `trace` is not one whole trace of a page (None if it is): one span without a parent,
    `root`'s; every parent a span names in it; a span of each of `services`."""
    if not trace:
        return "not in Jaeger"
    spans = trace["spans"]
    roots = sorted(service_of(trace, span) for span in spans if not span.get("references"))
    ids = {span["spanID"] for span in spans}
    orphans = [ref["spanID"] for span in spans for ref in span.get("references", [])
               if ref.get("refType") == "CHILD_OF" and ref["spanID"] not in ids]
    missing = services - {service_of(trace, span) for span in spans}
    if roots != [root] or orphans or missing:
        return f"roots {roots}, parents missing {orphans}, services missing {sorted(missing)}"
    return None
