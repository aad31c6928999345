"""The callers: gRPC (grpcio) and HTTP clients that reach the apps only through an Envoy's
listener, or knock on an Envoy's inbound port without a certificate. The recommendations
messages and stub are generated from proto/ by protoc (grpcio-tools) when the mesh starts;
gRPC health's and reflection's come from grpcio-health-checking and grpcio-reflection."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
# grpcio-reflection ships v1alpha's messages only; v1's are the same messages renamed, the same
# on the wire, so they serve for the v1 method the mesh's policies name.
from grpc_reflection.v1alpha import reflection_pb2

import protos

REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
RECOMMEND = "/recommendations.v1.Recommendations/Recommend"
RECOMMENDATIONS_SERVICE = "recommendations.v1.Recommendations"
SERVING = health_pb2.HealthCheckResponse.SERVING
CALL_TIMEOUT = 10.0


class Answer(NamedTuple):
    code: str  # a gRPC status code name, or for HTTP the status number
    body: Any  # the response message (gRPC), or the body's bytes (HTTP)
    detail: str


def _call(target: str, authority: str | None, call: Callable[[grpc.Channel], Any]) -> Answer:
    """One call over plaintext HTTP/2 to `target` (an Envoy's listener, or an inbound port):
    the status code name and the response message."""
    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            response = call(channel)
        except grpc.RpcError as err:
            return Answer(err.code().name, None, err.details() or "")
    return Answer("OK", response, "")


class Callers:
    """The gRPC calls the cases make, with the recommendations stubs generated into `stubs_dir`."""

    def __init__(self, stubs_dir: Path) -> None:
        self.messages, self.services = protos.generate_stubs(stubs_dir)

    def recommend(self, target: str, authority: str | None = None) -> Answer:
        """Recommend three science-fiction books to user 1; the answer's body lists them."""
        request = self.messages.RecommendationRequest(
            user_id=1, category=self.messages.BOOK_CATEGORY_SCIENCE_FICTION, max_results=3)
        return _call(target, authority, lambda channel: self.services.RecommendationsStub(channel).Recommend(
            request, timeout=CALL_TIMEOUT))

    @contextmanager
    def recommend_held_open(self, target: str) -> Iterator[None]:
        """A Recommend call whose request message is held back while the block runs: the server
        has its headers and keeps the call in flight (its unary handler waits for the message),
        so the call holds one of recommendations' concurrency permits. Sent, and answered, at
        the end; its answer is not the caller's concern."""
        request = self.messages.RecommendationRequest(
            user_id=1, category=self.messages.BOOK_CATEGORY_SCIENCE_FICTION, max_results=3)
        release = threading.Event()

        def messages() -> Iterator[Any]:
            release.wait(CALL_TIMEOUT)
            yield request
        with grpc.insecure_channel(target) as channel:
            # A client stream on the unary method: the same bytes on the wire, sent when we say.
            call = channel.stream_unary(RECOMMEND, request_serializer=type(request).SerializeToString,
                                        response_deserializer=self.messages.RecommendationResponse.FromString)
            answer = call.future(messages(), timeout=CALL_TIMEOUT)
            try:
                yield
            finally:
                release.set()
                answer.exception()  # wait for it to end, whatever it ended with

    def recommend_all_at_once(self, target: str, count: int) -> list[str]:
        """`count` Recommend calls in flight together on one channel: each one's status code name."""
        request = self.messages.RecommendationRequest(
            user_id=1, category=self.messages.BOOK_CATEGORY_SCIENCE_FICTION, max_results=3)
        codes = []
        with grpc.insecure_channel(target) as channel:
            stub = self.services.RecommendationsStub(channel)
            calls = [stub.Recommend.future(request, timeout=CALL_TIMEOUT) for _ in range(count)]
            for call in calls:
                try:
                    call.result()
                    codes.append("OK")
                except grpc.RpcError as err:
                    codes.append(err.code().name)
        return codes

    @staticmethod
    def http_get(address: str, port: int, path: str, host: str, headers: dict[str, str] | None = None) -> Answer:
        """`http_get` below, for the cases whose GET another harness makes elsewhere (tests/cluster
        makes the probe's from inside its pod)."""
        return http_get(address, port, path, host, headers)

    @staticmethod
    def health(target: str) -> Answer:
        """gRPC health of the server as a whole."""
        return _call(target, None, lambda channel: health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT))

    @staticmethod
    def list_services(target: str) -> Answer:
        """The first answer of a reflection stream asked to list the services."""
        def call(channel: grpc.Channel) -> Any:
            stream = channel.stream_stream(REFLECTION,
                                           request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                           response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            return next(iter(stream(iter([request]), timeout=CALL_TIMEOUT)))
        return _call(target, None, call)


def listed_services(response: Any) -> list[str]:
    """Service names in a ServerReflectionResponse's list_services_response."""
    return [service.name for service in response.list_services_response.service]


def http_get(address: str, port: int, path: str, host: str, headers: dict[str, str] | None = None) -> Answer:
    """A GET with the given Host (and headers); a connection the other side closes or resets is
    an answer too (`reset`: how a sidecar refuses plaintext under STRICT), and so is a refused
    one (`refused`: nothing listens)."""
    connection = http.client.HTTPConnection(address, port, timeout=CALL_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
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
