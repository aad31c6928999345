"""The bookshop as a tenant of a mesh (install_checks.py): the install's mesh config is the
platform contract docs/mesh.md writes down and nothing mesh-wide beyond it, every provider the
bookshop names is in that contract, apps and proxies trace to one collector in every overlay,
and production's istiod and ingress gateway survive a node drain. Each check has its failing
twin."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

import install_checks
import istio_tools
import mesh_checks
import render
from mesh_renders import MESH_RENDERS, analyze_render, broken
from outside_tools import REPO_ROOT


@pytest.fixture(scope="session")
def contract() -> dict:
    return install_checks.contract_in_docs((REPO_ROOT / "docs/mesh.md").read_text())


@pytest.fixture(scope="session")
def production_text(istioctl: str) -> str:
    """What `istioctl install -f istio-operator.yaml -f production.yaml` would apply."""
    return istio_tools.install_manifest(istioctl, istio_tools.INSTALL_CONFIG, istio_tools.PRODUCTION_CONFIG)


@pytest.fixture(scope="session")
def production(production_text: str) -> list[dict]:
    return istio_tools.parse(production_text)


# --- the platform contract -------------------------------------------------------------------

def test_the_install_asks_the_mesh_for_the_documented_contract_only(contract) -> None:
    assert {p["name"] for p in contract["extensionProviders"]} == {"otel", "envoy-json"}
    assert install_checks.check_mesh_config_is_the_contract(istio_tools.install_spec()["meshConfig"], contract) == []


def test_mesh_wide_settings_in_the_install_are_caught(contract) -> None:
    # The install as it was: egress, access log file and encoding set for every tenant.
    before = {**istio_tools.install_spec()["meshConfig"], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
              "accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON"}
    assert install_checks.check_mesh_config_is_the_contract(before, contract) == [
        f"meshConfig.{key} applies to every tenant of the mesh, not only the bookshop"
        for key in ("accessLogEncoding", "accessLogFile", "outboundTrafficPolicy")]


def test_an_install_that_drifts_from_the_docs_is_caught(contract) -> None:
    drifted = copy.deepcopy(istio_tools.install_spec()["meshConfig"])
    drifted["extensionProviders"][0]["opentelemetry"]["port"] = 4318
    [problem] = install_checks.check_mesh_config_is_the_contract(drifted, contract)
    assert problem.startswith("meshConfig.extensionProviders differs between the install and docs/mesh.md")


def test_istiod_runs_with_the_contract(mesh_config: dict, contract) -> None:
    assert install_checks.check_rendered_mesh_config(mesh_config, contract) == []


def test_a_misspelt_contract_setting_is_caught_in_what_istiod_runs(tmp_path: Path, istioctl: str, contract) -> None:
    # istioctl passes meshConfig through unchecked: the misspelt list reaches istiod, ours does not.
    config = tmp_path / "istio-operator.yaml"
    config.write_text(istio_tools.INSTALL_CONFIG.read_text().replace("    extensionProviders:\n",
                                                                     "    extensionProvider:\n"))
    rendered = istio_tools.mesh_config(istio_tools.parse(istio_tools.install_manifest(istioctl, config)))
    problems = install_checks.check_rendered_mesh_config(rendered, contract)
    assert [p.split(" is ")[0] for p in problems] == ["extension provider otel", "extension provider envoy-json"]


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_every_provider_the_bookshop_names_is_in_the_contract(name: str, docs, contract) -> None:
    assert install_checks.check_providers_in_contract(docs[name], contract) == []


def test_a_provider_outside_the_contract_is_caught(docs, contract) -> None:
    # Istio's built-in `envoy` logger, as the sidecars' Telemetry named it: its format is whatever
    # the mesh's accessLogEncoding says, so the bookshop would depend on a mesh-wide setting.
    changed = copy.deepcopy(docs["prod"])
    [mesh] = [d for d in changed if d["kind"] == "Telemetry" and d["metadata"]["name"] == "mesh"]
    mesh["spec"]["accessLogging"] = [{"providers": [{"name": "envoy"}]}]
    assert install_checks.check_providers_in_contract(changed, contract) == [
        "a Telemetry names provider envoy, which the platform contract does not hold"]
    unused = {**contract, "extensionProviders": contract["extensionProviders"] + [{"name": "zipkin"}]}
    assert install_checks.check_providers_in_contract(docs["prod"], unused) == [
        "the platform contract asks for provider zipkin, which no Telemetry names"]


# --- one collector ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", MESH_RENDERS)
def test_apps_and_proxies_trace_to_one_collector(name: str, docs, mesh_config: dict, accepted) -> None:
    assert mesh_checks.check_trace_destinations(docs[name], mesh_config, accepted) == []


def test_prod_as_it_was_is_caught(docs, mesh_config: dict, accepted) -> None:
    # The mesh's provider at dev's Jaeger, prod's apps at the platform's collector: two traces.
    before = {**mesh_config, "extensionProviders": [
        {"name": "otel", "opentelemetry": {"service": "jaeger-collector.observability.svc.cluster.local", "port": 4317}}]}
    problems = mesh_checks.check_trace_destinations(docs["prod"], before, accepted)
    assert len(problems) == 2, problems
    assert all("exports spans to otel-collector.observability.svc.cluster.local:4317, but the mesh's tracing "
               "provider sends to ['jaeger-collector.observability.svc.cluster.local:4317']" in p for p in problems)


def test_apps_sent_elsewhere_are_caught(tmp_path: Path, mesh_config: dict, accepted) -> None:
    docs = render.parse(broken(tmp_path, "dev", (
        "istio/kustomization.yaml", "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector.observability.svc.cluster.local:4317",
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://tempo.tracing:4317")))
    problems = mesh_checks.check_trace_destinations(docs, mesh_config, accepted)
    assert len(problems) == 2 and all("exports spans to tempo.tracing.svc.cluster.local:4317" in p for p in problems)


def test_an_overlay_cannot_send_the_apps_elsewhere(tmp_path: Path) -> None:
    # The mesh Component's value wins over an overlay's own (Kustomize applies components after
    # the overlay's generators), which is why docs/mesh.md says to set it in istio/ only.
    docs = render.parse(broken(tmp_path, "prod", (
        "kustomize/overlays/prod/kustomization.yaml", "      - OTEL_TRACES_SAMPLER=parentbased_traceidratio\n",
        "      - OTEL_TRACES_SAMPLER=parentbased_traceidratio\n"
        "      - OTEL_EXPORTER_OTLP_ENDPOINT=http://tempo.tracing:4317\n")))
    [telemetry] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("telemetry")]
    assert telemetry["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4317"


def test_dev_has_a_collector_at_the_mesh_address(docs) -> None:
    # dev deploys the collector itself (Jaeger, under the name prod's platform collector has).
    [service] = [d for d in docs["dev"] if d["kind"] == "Service" and d["metadata"]["name"] == "otel-collector"]
    assert service["metadata"]["namespace"] == "observability"
    assert 4317 in [p["port"] for p in service["spec"]["ports"]]


# --- an edge that survives a drain -------------------------------------------------------------

def test_production_istiod_and_gateway_survive_a_drain(production: list[dict]) -> None:
    budgets = {d["metadata"]["name"]: d["spec"] for d in production if d["kind"] == "PodDisruptionBudget"}
    assert budgets.keys() == {"istiod", "istio-ingressgateway"}
    assert {b["unhealthyPodEvictionPolicy"] for b in budgets.values()} == {"AlwaysAllow"}
    assert install_checks.check_survives_a_drain(production) == []


def test_istios_analyzers_find_nothing_in_prod_with_the_production_install(
        rendered, istioctl: str, analyzer: str, production_text: str, production: list[dict], mesh_config: dict) -> None:
    messages = analyze_render(istioctl, analyzer, "prod", rendered["prod"], production_text, production, mesh_config)
    assert [istio_tools.describe(m) for m in messages] == []


def test_one_pod_each_is_caught(install: list[dict]) -> None:
    # The developer's install alone, as prod installed it before: one pod each and no budget.
    problems = install_checks.check_survives_a_drain(install)
    for name in install_checks.DRAINED:
        assert f"Deployment/{name} runs 1 pod at least: a drain of its node leaves none" in problems
        assert f"Deployment/{name}: no PodDisruptionBudget selects its pods" in problems
        assert f"Deployment/{name}: no topology spread over nodes for its own pods" in problems


def test_a_budget_that_blocks_a_drain_is_caught(tmp_path: Path, istioctl: str) -> None:
    config = tmp_path / "production.yaml"
    text = istio_tools.PRODUCTION_CONFIG.read_text()
    old = "          podDisruptionBudget:\n            unhealthyPodEvictionPolicy: AlwaysAllow\n"
    assert text.count(old) == 1  # the gateway's (istiod's is indented less)
    config.write_text(text.replace(old, old + "            minAvailable: 2\n"))
    manifest = istio_tools.parse(istio_tools.install_manifest(istioctl, istio_tools.INSTALL_CONFIG, config))
    assert install_checks.check_survives_a_drain(manifest) == [
        "PodDisruptionBudget/istio-ingressgateway lets no pod of 2 be evicted: a drain blocks"]


def test_production_keeps_the_gateway_and_its_identity(production: list[dict], gateways: set[str],
                                                       trust_domain: str, mesh_config: dict) -> None:
    assert (install_checks.gateway_entries(istio_tools.PRODUCTION_CONFIG)
            == install_checks.gateway_entries(istio_tools.INSTALL_CONFIG) == [("istio-ingressgateway", "istio-system")])
    assert istio_tools.gateway_principals(production, trust_domain) == gateways
    # The mesh config is the developer install's: production.yaml adds only replicas and spread.
    assert istio_tools.mesh_config(production) == mesh_config
