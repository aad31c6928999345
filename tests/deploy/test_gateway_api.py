"""The Gateway API ingress (istio/gateway-api, used by kustomize/overlays/dev-gateway-api): valid
for the Gateway API CRDs the pinned Istio requires, every other object for its own schema, the
marketplace admitting the identity istiod will give the gateway, the Istio ingress's routing and
timeout, no retry of the marketplace's shedding answer, the edge's trace-header filter on the new
gateway, and the generated pods customised for Pod Security `restricted`; each with its twin."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway_api
import mesh_checks
import render
import schemas
from outside_tools import REPO_ROOT, required_dir

OVERLAY = "overlays/dev-gateway-api"
# The version the pinned Istio's go.mod requires (tools/istio/go.mod, sigs.k8s.io/gateway-api).
GATEWAY_API_VERSION = "v1.6.0"


@pytest.fixture(scope="module")
def crds() -> Path:
    return required_dir("BOOKSHOP_GATEWAY_API_CRDS", "the standard channel's CRDs of the sigs.k8s.io/gateway-api "
                        "module tools/istio/go.mod pins (<module>/config/crd/standard)")


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return render.parse(render.kustomize(render.KUSTOMIZE / OVERLAY))


def broken(tmp_path: Path, file: str, old: str, new: str) -> list[dict]:
    """The overlay rendered from a copy in which `old` (once in `file`, under the repository
    root) is replaced by `new`."""
    root = render.copy_tree(tmp_path)
    path = tmp_path / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}"
    path.write_text(text.replace(old, new))
    return render.parse(render.kustomize(root / OVERLAY))


def one(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_the_crds_are_the_version_the_pinned_istio_requires(crds: Path) -> None:
    go_mod = (REPO_ROOT / "tools/istio/go.mod").read_text()
    assert f"sigs.k8s.io/gateway-api {GATEWAY_API_VERSION} " in go_mod
    assert f"gateway-api@{GATEWAY_API_VERSION}" in str(crds)
    text = (crds / "gateway.networking.k8s.io_httproutes.yaml").read_text()
    assert f"bundle-version: {GATEWAY_API_VERSION}" in text and "channel: standard" in text


def test_the_gateway_api_objects_are_valid_for_the_crds(docs, crds: Path) -> None:
    kinds = sorted(d["kind"] for d in docs if gateway_api.is_gateway_api(d))
    assert kinds == ["Gateway", "HTTPRoute"]
    assert gateway_api.crd_problems(docs, crds) == []


def test_every_other_object_is_valid_for_its_schema(docs, istio_crds: Path) -> None:
    assert [p for d in docs if not gateway_api.is_gateway_api(d) for p in schemas.validate(d, istio_crds)] == []


def test_a_retry_stanza_is_refused_by_the_standard_channel(tmp_path: Path, crds: Path) -> None:
    """The standard channel has no HTTPRoute `retry` (it is experimental in this version), which is
    why the route leaves retries to istiod's default."""
    docs = broken(tmp_path, "istio/gateway-api/route.yaml", "      timeouts:\n",
                  "      retry:\n        attempts: 2\n      timeouts:\n")
    assert any("'retry' was unexpected" in p for p in gateway_api.crd_problems(docs, crds))


def test_the_ingress_is_the_gateway_api_one_alone(docs) -> None:
    """The Istio Gateway and the VirtualService it served are gone, as is the gateway's Telemetry
    in istio-system: nothing of the bookshop's is left there."""
    assert [d for d in docs if d["kind"] in ("Gateway", "VirtualService") and not gateway_api.is_gateway_api(d)
            and d["metadata"]["name"] in ("bookshop", "marketplace")] == []
    assert [f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["metadata"].get("namespace") == "istio-system"] == []


def test_the_marketplace_admits_the_gateway_istiod_deploys(docs) -> None:
    principals = gateway_api.gateway_principals(docs)
    assert principals == {"cluster.local/ns/bookshop/sa/ingress-istio"}
    assert mesh_checks.check_principals(docs, principals) == []
    policy = one(docs, "AuthorizationPolicy", "marketplace")
    assert policy["spec"]["rules"][0]["from"][0]["source"]["principals"] == sorted(principals)


def test_a_renamed_gateway_leaves_the_principal_behind(tmp_path: Path) -> None:
    docs = broken(tmp_path, "istio/gateway-api/gateway.yaml", "  name: ingress\n", "  name: edge\n")
    assert gateway_api.gateway_principals(docs) == {"cluster.local/ns/bookshop/sa/edge-istio"}
    assert any("ingress-istio is neither" in p for p in mesh_checks.check_principals(docs, gateway_api.gateway_principals(docs)))


def test_only_the_gateways_own_policy_allows_without_principals(docs, tmp_path: Path) -> None:
    assert mesh_checks.check_allow_rules_name_principals(docs) == []
    assert mesh_checks.check_allow_nothing(docs) == []
    # The same rule attached to no Gateway of the render is no edge: caught.
    docs = broken(tmp_path, "istio/gateway-api/access.yaml", "      name: ingress\n  action", "      name: other\n  action")
    assert any("AuthorizationPolicy/ingress-gateway: rule 0" in p for p in mesh_checks.check_allow_rules_name_principals(docs))


def test_the_route_is_the_istio_ingress_routing_and_timeout(docs) -> None:
    assert gateway_api.check_same_routing_as(docs, render.parse(render.render("dev"))) == []


def test_a_backend_request_timeout_is_caught(tmp_path: Path) -> None:
    docs = broken(tmp_path, "istio/gateway-api/route.yaml", "        request: 3s\n",
                  "        request: 3s\n        backendRequest: 1s\n")
    assert any("backendRequest 1s" in p for p in gateway_api.check_same_routing_as(docs, render.parse(render.render("dev"))))


def test_no_route_retries_the_marketplaces_shedding_answer(docs) -> None:
    assert gateway_api.check_no_retry_on_shedding(docs) == []


def test_a_route_retrying_503_is_caught(tmp_path: Path) -> None:
    """With the experimental channel's `retry` (the CRDs above refuse it), 503 among its codes."""
    docs = broken(tmp_path, "istio/gateway-api/route.yaml", "      timeouts:\n",
                  "      retry:\n        codes: [503]\n      timeouts:\n")
    assert gateway_api.check_no_retry_on_shedding(docs) == [
        "HTTPRoute/marketplace: retries 503 from Service/marketplace: that is how an http service of ours "
        "sheds load, and a retry feeds the overload"]


def test_the_edge_drops_a_clients_trace_headers_at_the_new_gateway(docs, tmp_path: Path) -> None:
    labels = gateway_api.gateway_pod_labels(one(docs, "Gateway", "ingress"))
    assert mesh_checks.check_edge_drops_client_trace_headers(docs, labels, "bookshop") == []
    docs = broken(tmp_path, "istio/gateway-api/kustomization.yaml",
                  "          gateway.networking.k8s.io/gateway-name: ingress\n  # The marketplace",
                  "          gateway.networking.k8s.io/gateway-name: other\n  # The marketplace")
    assert len(mesh_checks.check_edge_drops_client_trace_headers(docs, labels, "bookshop")) == 3


def test_the_generated_pods_are_customised_for_restricted(docs, tmp_path: Path) -> None:
    assert gateway_api.check_restricted_customisation(docs) == []
    docs = broken(tmp_path, "istio/gateway-api/gateway.yaml", "type: RuntimeDefault", "type: Unconfined")
    assert any("no RuntimeDefault" in p for p in gateway_api.check_restricted_customisation(docs))
