"""The cross-checks of mesh_checks.py: nothing on the real renders, and the break on each copy
broken on purpose (every check has its failing twin)."""

from __future__ import annotations

from pathlib import Path

import pytest

import crosschecks
import istio_tools
import mesh_checks
import render
from mesh_renders import MESH_RENDERS, broken


# --- cross-checks on the real renders --------------------------------------------------------

@pytest.mark.parametrize("name", MESH_RENDERS)
def test_grpc_paths_are_methods_of_the_proto(name: str, docs, methods) -> None:
    assert "/recommendations.v1.Recommendations/Recommend" in methods
    assert mesh_checks.check_grpc_paths(docs[name], methods) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_principals_are_service_accounts_or_the_gateway(name: str, docs, gateways, trust_domain) -> None:
    assert gateways == {"cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"}
    assert mesh_checks.check_principals(docs[name], gateways, trust_domain) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_ports_named_by_the_mesh_exist(name: str, docs) -> None:
    assert mesh_checks.check_mesh_ports(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_there_is_an_allow_nothing_policy(name: str, docs) -> None:
    assert mesh_checks.check_allow_nothing(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_every_allow_rule_names_principals(name: str, docs) -> None:
    assert mesh_checks.check_allow_rules_name_principals(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_telemetry_providers_are_defined_by_the_install(name: str, docs, mesh_config) -> None:
    assert mesh_checks.check_telemetry_providers(docs[name], mesh_config) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_retries_fit_in_the_callers_deadline(name: str, docs, accepted) -> None:
    deadlines = mesh_checks.caller_deadlines(docs[name], accepted)
    assert deadlines == {("recommendations", "bookshop"): 0.5}
    assert mesh_checks.check_retry_budget(docs[name], deadlines) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_the_tracing_provider_reaches_the_renders_collector(name: str, docs, mesh_config) -> None:
    assert mesh_checks.check_provider_services(docs[name], mesh_config) == []


def test_a_tracing_provider_on_a_wrong_port_is_caught(docs, mesh_config) -> None:
    # dev deploys the collector itself (observability/), so the provider must name one of its ports.
    otlp_http = {**mesh_config, "extensionProviders": [
        {"name": "otel", "opentelemetry": {"service": "otel-collector.observability.svc.cluster.local", "port": 4319}}]}
    assert any("port 4319 is not a port of Service/otel-collector" in p
               for p in mesh_checks.check_provider_services(docs["dev"], otlp_http))


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_no_route_retries_a_shedding_answer(name: str, docs) -> None:
    assert mesh_checks.check_no_retry_on_shedding(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_what_retries_add_is_bounded(name: str, docs) -> None:
    budgets = {d["spec"]["host"]: d["spec"]["trafficPolicy"]["retryBudget"] for d in docs[name]
               if d["kind"] == "DestinationRule"}
    assert budgets == {f"{s}.bookshop.svc.cluster.local": {"percent": 20, "minRetryConcurrency": 3}
                       for s in ("marketplace", "recommendations")}
    assert mesh_checks.check_retry_budgets(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_the_edge_drops_a_clients_trace_headers(name: str, docs, install) -> None:
    [gateway] = [d for d in install if d["kind"] == "Deployment" and d["metadata"]["name"] == "istio-ingressgateway"]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert mesh_checks.check_edge_drops_client_trace_headers(docs[name], labels) == []


def test_an_edge_that_keeps_a_clients_traceparent_is_caught(tmp_path: Path, install) -> None:
    [gateway] = [d for d in install if d["kind"] == "Deployment" and d["metadata"]["name"] == "istio-ingressgateway"]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    docs = render.parse(broken(tmp_path, "prod", ("istio/edge-trace-context.yaml",
                                                   "                    - remove: traceparent\n", "")))
    assert mesh_checks.check_edge_drops_client_trace_headers(docs, labels) == [
        "the ingress gateway keeps a client's traceparent header: a client can choose its trace or force sampling"]
    docs = render.parse(broken(tmp_path / "selector", "prod", ("istio/edge-trace-context.yaml",
                                                                "      istio: ingressgateway", "      istio: ingress")))
    assert len(mesh_checks.check_edge_drops_client_trace_headers(docs, labels)) == 3


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_egress_is_registry_only_per_workload(name: str, docs) -> None:
    assert mesh_checks.check_registry_only(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_the_mesh_and_the_services_sample_alike(name: str, docs, accepted) -> None:
    assert mesh_checks.check_sampling(docs[name], accepted) == []


# --- each cross-check's failing twin ---------------------------------------------------------

def test_a_path_that_is_no_method_is_caught(tmp_path: Path, methods) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  "/recommendations.v1.Recommendations/Recommend",
                                                  "/recommendations.v1.Recommendations/Recommends")))
    assert any("path /recommendations.v1.Recommendations/Recommends" in p
               for p in mesh_checks.check_grpc_paths(docs, methods))


def test_a_method_missing_from_the_proto_is_caught(docs) -> None:
    # The same render against a descriptor set without Recommend (as if the RPC were renamed).
    assert mesh_checks.check_grpc_paths(docs["dev"], frozenset({"/recommendations.v1.Recommendations/Suggest"}))


def test_a_principal_of_another_namespace_is_caught(tmp_path: Path, gateways) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("istio/authorization.yaml",
                                                   "cluster.local/ns/bookshop/sa/marketplace",
                                                   "cluster.local/ns/default/sa/marketplace")))
    assert any("principal cluster.local/ns/default/sa/marketplace" in p
               for p in mesh_checks.check_principals(docs, gateways))


def test_a_gateway_principal_the_install_does_not_create_is_caught(tmp_path: Path, gateways) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  "sa/istio-ingressgateway-service-account",
                                                  "sa/istio-ingressgateway")))
    assert any("sa/istio-ingressgateway " in p for p in mesh_checks.check_principals(docs, gateways))


def test_the_gateway_identity_follows_the_install_config(tmp_path: Path, istioctl: str, trust_domain) -> None:
    # Renaming the gateway in the install config renames its service account: the policy's
    # principal no longer matches, which check_principals then reports.
    config = tmp_path / "istio-operator.yaml"
    config.write_text(istio_tools.INSTALL_CONFIG.read_text().replace("- name: istio-ingressgateway\n",
                                                              "- name: bookshop-ingress\n"))
    principals = istio_tools.gateway_principals(istio_tools.parse(istio_tools.install_manifest(istioctl, config)), trust_domain)
    assert principals == {"cluster.local/ns/istio-system/sa/bookshop-ingress-service-account"}


def test_a_policy_port_that_is_no_container_port_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/authorization.yaml", 'ports: ["50051"]', 'ports: ["5051"]')))
    assert any("port 5051 is not a container port" in p for p in mesh_checks.check_mesh_ports(docs))


def test_a_route_port_that_is_no_service_port_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("istio/ingress.yaml", "              number: 80\n",
                                                   "              number: 8080\n")))
    assert any("port 8080 is not a port of Service/marketplace" in p for p in mesh_checks.check_mesh_ports(docs))


def test_a_destination_rule_for_a_missing_service_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/recommendations-traffic.yaml",
                                                  "spec:\n  host: recommendations.bookshop.svc.cluster.local",
                                                  "spec:\n  host: recommendations.books.svc.cluster.local")))
    assert any("DestinationRule/recommendations: host" in p for p in mesh_checks.check_mesh_ports(docs))


def test_a_policy_selecting_no_pod_is_caught_by_the_port_check(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  "      app.kubernetes.io/name: marketplace\n  action: ALLOW",
                                                  "      app.kubernetes.io/name: market\n  action: ALLOW")))
    assert any("AuthorizationPolicy/marketplace: its selector" in p for p in mesh_checks.check_mesh_ports(docs))


def test_a_missing_allow_nothing_policy_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("istio/authorization.yaml",
                                                   "  name: allow-nothing\nspec: {}\n",
                                                   "  name: allow-nothing\nspec:\n  action: DENY\n"
                                                   "  rules: [{to: [{operation: {paths: [/nothing]}}]}]\n")))
    assert mesh_checks.check_allow_nothing(docs) == ["namespace bookshop: no allow-nothing AuthorizationPolicy "
                                              "(ALLOW, no selector, no rules)"]


def test_an_allow_rule_without_principals_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  '    - from:\n        - source:\n'
                                                  '            principals: ["cluster.local/ns/bookshop/sa/marketplace"]\n',
                                                  '    - from:\n        - source:\n'
                                                  '            namespaces: ["bookshop"]\n')))
    assert any("AuthorizationPolicy/recommendations: rule 0" in p for p in mesh_checks.check_allow_rules_name_principals(docs))


def test_a_telemetry_provider_the_install_does_not_define_is_caught(docs, mesh_config) -> None:
    renamed = {**mesh_config, "extensionProviders": [{**p, "name": "jaeger"} for p in mesh_config["extensionProviders"]]}
    assert any("tracing provider otel is not an extension provider" in p
               for p in mesh_checks.check_telemetry_providers(docs["dev"], renamed))


def test_a_zipkin_tracing_provider_is_caught(docs, mesh_config) -> None:
    zipkin = {**mesh_config, "extensionProviders": [
        {"name": "otel", "zipkin": {"service": "otel-collector.observability.svc.cluster.local", "port": 9411}}]}
    assert any("is zipkin, not opentelemetry" in p for p in mesh_checks.check_telemetry_providers(docs["prod"], zipkin))


def test_a_route_timeout_past_the_callers_deadline_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/recommendations-traffic.yaml", "timeout: 450ms", "timeout: 600ms")))
    assert any("timeout 600ms is not inside the caller's 0.5s deadline" in p
               for p in mesh_checks.check_retry_budget(docs, mesh_checks.caller_deadlines(docs, accepted)))


def test_retries_that_outlast_the_route_timeout_are_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("istio/recommendations-traffic.yaml",
                                                   "perTryTimeout: 150ms", "perTryTimeout: 200ms")))
    assert any("3 tries of 200ms do not fit" in p
               for p in mesh_checks.check_retry_budget(docs, mesh_checks.caller_deadlines(docs, accepted)))


def test_a_shorter_caller_deadline_is_caught(tmp_path: Path, accepted) -> None:
    # The deadline is the marketplace's real one: lower it in the manifest and the route no longer fits.
    docs = render.parse(broken(tmp_path, "dev", ("kustomize/base/marketplace.yaml",
                                                  "            - name: RECOMMENDATIONS_PORT\n",
                                                  "            - name: RECOMMENDATIONS_TIMEOUT_MS\n"
                                                  "              value: \"300\"\n"
                                                  "            - name: RECOMMENDATIONS_PORT\n")))
    assert any("not inside the caller's 0.3s deadline" in p
               for p in mesh_checks.check_retry_budget(docs, mesh_checks.caller_deadlines(docs, accepted)))


def test_a_gateway_sampling_other_than_the_services_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("kustomize/overlays/prod/mesh-sampling.yaml",
                                                   "  namespace: istio-system\nspec:\n  tracing:\n    - providers:\n"
                                                   "        - name: otel\n      randomSamplingPercentage: 10\n",
                                                   "  namespace: istio-system\nspec:\n  tracing:\n    - providers:\n"
                                                   "        - name: otel\n      randomSamplingPercentage: 20\n")))
    assert any(p.startswith("Telemetry/ingressgateway (istio-system): randomSamplingPercentage 20")
               for p in mesh_checks.check_sampling(docs, accepted))


def test_a_service_sampler_that_ignores_the_ingress_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("kustomize/overlays/dev/kustomization.yaml",
                                                  "OTEL_TRACES_SAMPLER=parentbased_always_on", "OTEL_TRACES_SAMPLER=always_on")))
    assert any("ignores the ingress's decision" in p for p in mesh_checks.check_sampling(docs, accepted))


def test_the_grace_period_counts_the_trace_flush(tmp_path: Path, accepted) -> None:
    # 30 s covers delay 5 + timeout 20, but not the 5 s trace flush of an overlay that exports traces.
    docs = render.parse(broken(tmp_path, "prod", ("istio/workloads.yaml", "terminationGracePeriodSeconds: 40",
                                                   "terminationGracePeriodSeconds: 30")))
    problems = crosschecks.check_grace_period(docs, accepted)
    assert any("terminationGracePeriodSeconds 30" in p and "trace flush 5" in p for p in problems), problems


def test_retrying_the_marketplaces_503_is_caught(tmp_path: Path) -> None:
    # The gateway's retryOn as it was.
    docs = render.parse(broken(tmp_path, "prod", ("istio/ingress.yaml", "retryOn: connect-failure,refused-stream,reset",
                                                   "retryOn: connect-failure,refused-stream,reset,503")))
    assert mesh_checks.check_no_retry_on_shedding(docs) == [
        "VirtualService/marketplace: retries 503 from marketplace.bookshop.svc.cluster.local: that is how a http "
        "service of ours sheds load, and a retry feeds the overload"]


def test_retrying_recommendations_resource_exhausted_is_caught(tmp_path: Path) -> None:
    # The marketplace's sidecar's retryOn as it was.
    docs = render.parse(broken(tmp_path, "dev", ("istio/recommendations-traffic.yaml",
                                                  "retryOn: connect-failure,refused-stream,reset,unavailable,cancelled",
                                                  "retryOn: connect-failure,refused-stream,reset,unavailable,cancelled,"
                                                  "resource-exhausted")))
    assert [p.split(":")[0] for p in mesh_checks.check_no_retry_on_shedding(docs)] == ["VirtualService/recommendations"]


def test_a_retried_service_without_a_budget_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("istio/ingress.yaml", "    retryBudget:\n      percent: 20\n"
                                                   "      minRetryConcurrency: 3\n", "")))
    assert mesh_checks.check_retry_budgets(docs) == [
        "VirtualService/marketplace retries Service/marketplace, but no DestinationRule gives it a retryBudget: "
        "nothing bounds what retries add under failure"]


def test_a_budget_istio_drops_is_caught(tmp_path: Path) -> None:
    # Without a connectionPool beside it, Istio generates no retry budget at all.
    docs = render.parse(broken(tmp_path, "dev", ("istio/ingress.yaml", "    connectionPool:\n      tcp:\n"
                                                  "        connectTimeout: 1s\n", "")))
    assert mesh_checks.check_retry_budgets(docs) == [
        "DestinationRule/marketplace: a retryBudget without a connectionPool, which Istio drops"]


def test_a_max_retries_the_budget_overrides_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "dev", ("istio/recommendations-traffic.yaml",
                                                  "        http1MaxPendingRequests: 100\n",
                                                  "        http1MaxPendingRequests: 100\n        maxRetries: 10\n")))
    assert [p.split(":")[0] for p in mesh_checks.check_retry_budgets(docs)] == ["DestinationRule/recommendations"]


def test_a_workload_without_registry_only_egress_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("istio/sidecars.yaml",
                                                   "      app.kubernetes.io/name: marketplace\n  egress:\n"
                                                   "    - hosts: [\"./*\", \"istio-system/*\", \"observability/*\"]\n"
                                                   "  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n",
                                                   "      app.kubernetes.io/name: marketplace\n  egress:\n"
                                                   "    - hosts: [\"./*\", \"istio-system/*\", \"observability/*\"]\n")))
    assert mesh_checks.check_registry_only(docs) == [
        "Deployment/marketplace (bookshop): outbound policy [\"the mesh's\"], not REGISTRY_ONLY in its own Sidecar"]
