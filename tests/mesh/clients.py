"""The callers: plain gRPC (grpcio) and HTTP clients that reach the apps only through an Envoy's
listener, or knock on an Envoy's inbound port without a certificate. Requests are built as
protobuf wire bytes (three small messages), so no generated code is needed; answers are read the
same way."""

from __future__ import annotations

import http.client
import socket
from typing import NamedTuple

import grpc

RECOMMEND = "/recommendations.v1.Recommendations/Recommend"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
RECOMMENDATIONS_SERVICE = "recommendations.v1.Recommendations"
# RecommendationRequest{user_id: 1, category: BOOK_CATEGORY_SCIENCE_FICTION, max_results: 3}
RECOMMEND_REQUEST = bytes([0x08, 1, 0x10, 2, 0x18, 3])
# HealthCheckRequest{} (the server as a whole); ServerReflectionRequest{list_services: ""}
HEALTH_REQUEST = b""
LIST_SERVICES_REQUEST = bytes([0x3A, 0])
SERVING = bytes([0x08, 1])  # HealthCheckResponse{status: SERVING}
CALL_TIMEOUT = 10.0


class Answer(NamedTuple):
    code: str  # a gRPC status code name, or for HTTP the status number
    body: bytes
    detail: str


def _fields(message: bytes) -> list[tuple[int, bytes | int]]:
    """Top-level (field number, value) pairs of a protobuf message: varints and length-delimited
    fields, the only wire types these messages use."""
    fields, i = [], 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = message[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
    while i < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, message[i:i + length]))
            i += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in {message!r}")
    return fields


def book_titles(response: bytes) -> list[str]:
    """Titles in a RecommendationResponse (field 1: BookRecommendation{id = 1, title = 2})."""
    return [value.decode() for number, book in _fields(response) if number == 1
            for field_number, value in _fields(book) if field_number == 2]


def listed_services(response: bytes) -> list[str]:
    """Service names in a ServerReflectionResponse's list_services_response (field 6, whose
    `service` (1) entries each hold a `name` (1))."""
    return [name.decode() for number, listing in _fields(response) if number == 6
            for field_number, service in _fields(listing) if field_number == 1
            for name_number, name in _fields(service) if name_number == 1]


def grpc_call(target: str, method: str, request: bytes, *, authority: str | None = None,
              streaming: bool = False) -> Answer:
    """One call over plaintext HTTP/2 to `target` (an Envoy's listener, or an inbound port);
    the status code name and the response bytes (the first message of a stream)."""
    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            if streaming:
                call = channel.stream_stream(method)
                response = next(iter(call(iter([request]), timeout=CALL_TIMEOUT)))
            else:
                response = channel.unary_unary(method)(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            return Answer(err.code().name, b"", err.details() or "")
    return Answer("OK", response, "")


def http_get(address: str, port: int, path: str, host: str) -> Answer:
    """A GET with the given Host; a connection the other side closes or resets is an answer too
    (`reset`: how a sidecar refuses plaintext under STRICT), and so is a refused one (`refused`:
    nothing listens)."""
    connection = http.client.HTTPConnection(address, port, timeout=CALL_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        body = response.read()
        return Answer(str(response.status), body, response.getheader("traceresponse") or "")
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as err:
        return Answer("reset", b"", type(err).__name__)
    except ConnectionRefusedError as err:
        return Answer("refused", b"", type(err).__name__)
    finally:
        connection.close()


def can_connect(address: str, port: int) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((address, port), timeout=CALL_TIMEOUT):
            return True
    except OSError:
        return False
