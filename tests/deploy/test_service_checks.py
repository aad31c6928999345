"""How the pods serve (service_checks.py): Service port names, ServiceAccounts, probes, disruption
budgets and scrape annotations; each check's failing twin on a copy broken on purpose (the real
renders are checked in test_crosschecks.py)."""

from __future__ import annotations

from pathlib import Path

import crosschecks
import render
import service_checks


# --- Services and ServiceAccounts ------------------------------------------------------------

def test_a_service_port_named_without_a_protocol_is_caught(tmp_path: Path) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/recommendations.yaml", "    - name: grpc\n      port: 50051",
                              "    - name: api\n      port: 50051")
    assert any("Service/recommendations port api: the name does not start with a protocol" in p
               for p in service_checks.check_service_ports(docs))


def test_an_app_protocol_disagreeing_with_the_port_name_is_caught(tmp_path: Path) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/recommendations.yaml", "appProtocol: grpc", "appProtocol: http")
    assert service_checks.check_service_ports(docs) == [
        "Service/recommendations port grpc: appProtocol http (HTTP) disagrees with the name (GRPC)"]


def test_istio_protocol_names() -> None:
    assert service_checks.istio_protocol("http-admin") == "HTTP"
    assert service_checks.istio_protocol("grpc-web") == "GRPC-Web"
    assert service_checks.istio_protocol("grpcweb") is None
    assert service_checks.istio_protocol("admin-http") is None
    assert service_checks.istio_protocol("kubernetes.io/h2c", is_app_protocol=True) == "HTTP2"


def test_a_pod_whose_service_account_the_render_lacks_is_caught(tmp_path: Path) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/marketplace.yaml", "serviceAccountName: marketplace",
                              "serviceAccountName: market-place")
    assert service_checks.check_service_accounts(docs) == [
        "Deployment/marketplace: serviceAccountName market-place is no ServiceAccount of the render in namespace bookshop"]


def test_a_pod_without_a_service_account_is_caught(tmp_path: Path) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/recommendations.yaml", "      serviceAccountName: recommendations\n", "")
    assert service_checks.check_service_accounts(docs) == [
        "Deployment/recommendations: no serviceAccountName (it would run as the namespace's default)"]


# --- probes ----------------------------------------------------------------------------------

def test_a_readiness_probe_on_the_wrong_path_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/marketplace.yaml", "path: /readyz", "path: /ready")
    assert any("Deployment/marketplace container marketplace: readinessProbe httpGet 9465 /ready " in p
               for p in service_checks.check_probes(docs, accepted))


def test_a_grpc_readiness_probe_on_the_admin_port_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/recommendations.yaml",
                              "readinessProbe:\n            grpc:\n              port: 50051",
                              "readinessProbe:\n            grpc:\n              port: 9464")
    assert any("container recommendations: readinessProbe grpc 9464" in p for p in service_checks.check_probes(docs, accepted))


def test_a_startup_probe_no_listener_answers_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/recommendations.yaml",
                              "startupProbe:\n            grpc:\n              port: 50051",
                              "startupProbe:\n            grpc:\n              port: 9464")
    assert service_checks.check_probes(docs, accepted) == [
        "Deployment/recommendations container recommendations: startupProbe grpc 9464  asks no listener that answers it"]


def test_a_liveness_probe_on_readyz_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/marketplace.yaml",
                              "livenessProbe:\n            httpGet:\n              path: /healthz",
                              "livenessProbe:\n            httpGet:\n              path: /readyz")
    assert any("container marketplace: livenessProbe on /readyz" in p for p in service_checks.check_probes(docs, accepted))
    # ...whatever the container.
    assert any("livenessProbe on /readyz" in p for p in service_checks.check_probes(docs, {}))


def test_a_grpc_health_liveness_probe_is_caught(tmp_path: Path, accepted) -> None:
    # gRPC health turns NOT_SERVING during the drain: as liveness it would restart a draining pod.
    docs = render.broken_docs(tmp_path, "base", "base/recommendations.yaml",
                              "livenessProbe:\n            httpGet:\n              path: /healthz\n              port: http-admin",
                              "livenessProbe:\n            grpc:\n              port: 50051")
    assert any("container recommendations: livenessProbe grpc 50051  is not /healthz on the admin port 9464" in p
               for p in service_checks.check_probes(docs, accepted))


# --- disruption budgets ----------------------------------------------------------------------

def test_a_disruption_budget_that_allows_no_eviction_is_caught(tmp_path: Path) -> None:
    docs = render.broken_docs(tmp_path, "base+hpa-pdb", "components/hpa-pdb/recommendations.yaml", "maxUnavailable: 1",
                              "maxUnavailable: 0")
    assert service_checks.check_disruption_budgets(docs) == [
        "PodDisruptionBudget/recommendations: maxUnavailable 0 lets no pod of Deployment/recommendations be evicted"]


def test_min_available_must_stay_below_the_hpas_min_replicas(tmp_path: Path) -> None:
    # minReplicas is 2 with the component alone, 3 in prod: minAvailable 2 blocks the first only.
    root = render.break_copy(tmp_path, "components/hpa-pdb/marketplace.yaml", "maxUnavailable: 1", "minAvailable: 2")
    assert service_checks.check_disruption_budgets(render.parse(render.render("base+hpa-pdb", root))) == [
        "PodDisruptionBudget/marketplace: minAvailable 2 with Deployment/marketplace at 2 pod(s) lets none be evicted"]
    assert service_checks.check_disruption_budgets(render.parse(render.render("prod", root))) == []
    path = root / "components/hpa-pdb/marketplace.yaml"
    path.write_text(path.read_text().replace("minAvailable: 2", 'minAvailable: "100%"'))
    assert service_checks.check_disruption_budgets(render.parse(render.render("prod", root))) != []


# --- scraping --------------------------------------------------------------------------------

def test_a_scrape_port_that_is_not_the_admin_port_is_caught(tmp_path: Path, accepted) -> None:
    # 50051 is a container port (check_ports is content), but gRPC, not /metrics.
    docs = render.broken_docs(tmp_path, "base", "base/recommendations.yaml", 'prometheus.io/port: "9464"',
                              'prometheus.io/port: "50051"')
    assert crosschecks.check_ports(docs) == []
    assert service_checks.check_scrape_annotations(docs, accepted) == [
        "Deployment/recommendations: prometheus.io/port 50051 is not the admin port (ADMIN_PORT 9464) that serves /metrics"]


def test_a_scrape_path_other_than_metrics_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.broken_docs(tmp_path, "base", "base/marketplace.yaml", "prometheus.io/path: /metrics",
                              "prometheus.io/path: /stats")
    assert service_checks.check_scrape_annotations(docs, accepted) == [
        "Deployment/marketplace: prometheus.io/path /stats: the admin listener serves /metrics"]
