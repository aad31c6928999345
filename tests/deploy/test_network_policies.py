"""The NetworkPolicies' cross-check (network_policies.py): on a copy of the network-policies
component broken on purpose it finds the break, and the flow the break blocks."""

from __future__ import annotations

from pathlib import Path

import network_policies
import render


def _policy_problems(tmp_path: Path, file: str, old: str, new: str) -> list[str]:
    docs = render.broken_docs(tmp_path, "dev", f"components/network-policies/{file}", old, new)
    return network_policies.check_network_policies(docs)


def test_a_typo_in_an_allowed_sources_pod_labels_is_caught(tmp_path: Path) -> None:
    problems = _policy_problems(tmp_path, "recommendations.yaml", "app.kubernetes.io/name: marketplace",
                                "app.kubernetes.io/name: marketplac")
    assert any("NetworkPolicy/recommendations ingress rule 1: podSelector" in p for p in problems), problems
    # ...and the flow it was meant to allow is now blocked.
    assert any(p.startswith("Deployment/marketplace cannot reach 50051/TCP") for p in problems), problems


def test_a_typo_in_an_allowed_peers_namespace_labels_is_caught(tmp_path: Path) -> None:
    problems = _policy_problems(tmp_path, "mesh.yaml", "kubernetes.io/metadata.name: kube-system",
                                "kubernetes.io/metadata.name: kube-sytem")
    assert any("egress rule 1: namespaceSelector" in p and "kube-sytem" in p for p in problems), problems
    assert any("cannot reach 53/UDP" in p and "(DNS)" in p for p in problems), problems


def test_istiod_on_a_port_other_than_15012_is_caught(tmp_path: Path) -> None:
    problems = _policy_problems(tmp_path, "mesh.yaml", "port: 15012", "port: 15021")
    assert any("no destination pod serves 15021/TCP (['istio-system/istiod'])" in p for p in problems), problems
    assert any("cannot reach 15012/TCP on ['istio-system/istiod']" in p for p in problems), problems


def test_a_select_all_policy_that_opens_everything_is_caught(tmp_path: Path) -> None:
    problems = _policy_problems(tmp_path, "default-deny.yaml", "policyTypes: [Ingress, Egress]",
                                "policyTypes: [Ingress, Egress]\n  ingress:\n    - {}")
    assert problems == ["NetworkPolicy/default-deny ingress rule 1: allows every peer on every port"]


def test_a_port_name_no_selected_container_declares_is_caught(tmp_path: Path) -> None:
    problems = _policy_problems(tmp_path, "marketplace.yaml", "          port: http\n", "          port: web\n")
    assert any("NetworkPolicy/marketplace ingress rule 1: port web is not a container port name" in p
               for p in problems), problems
    problems = _policy_problems(tmp_path / "egress", "marketplace.yaml", "port: grpc", "port: grpcs")
    assert any("NetworkPolicy/marketplace egress rule 1: port grpcs is not a container port name" in p
               for p in problems), problems


def test_a_blocked_scrape_is_caught(tmp_path: Path) -> None:
    # Under a sidecar Prometheus scrapes the agent's merged metrics on 15020.
    problems = _policy_problems(tmp_path, "mesh.yaml", "port: 15020", "port: 15021")
    # (Prometheus is observability/prometheus, or the render's own Deployment/prometheus.)
    assert any("prometheus cannot reach 15020/TCP on ['Deployment/recommendations'] (Prometheus scrape)" in p
               for p in problems), problems


def test_a_typo_in_the_ingress_gateways_labels_is_caught(tmp_path: Path) -> None:
    problems = _policy_problems(tmp_path, "marketplace.yaml", "istio: ingressgateway", "istio: ingress-gateway")
    assert any("NetworkPolicy/marketplace ingress rule 1: podSelector" in p for p in problems), problems
    assert any(p.startswith("istio-system/istio-ingressgateway cannot reach 8080/TCP on ['Deployment/marketplace'] "
                            "(VirtualService/marketplace via Gateway/bookshop)") for p in problems), problems
