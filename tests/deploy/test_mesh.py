"""The Istio mesh: Istio's own analyzers and CRDs pass on every render that includes istio/, the
install config renders with the same Istio, and the cross-checks of mesh.py find nothing on
the real renders and the break on copies broken on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import crosschecks
import mesh
import render
import schemas
from outside_tools import require_tool, run

# The renders that include istio/ (test_the_mesh_renders_are_the_ones_with_istio_objects keeps
# this list honest).
MESH_RENDERS = ["dev", "prod", "dev-faults"]


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def istioctl() -> str:
    return mesh.istioctl()


@pytest.fixture(scope="session")
def crds() -> Path:
    return mesh.env_file("BOOKSHOP_ISTIO_CRDS", "Istio's CRDs of the pinned module "
                         "(<module>/manifests/charts/base/files/crd-all.gen.yaml)")


@pytest.fixture(scope="session")
def install_text(istioctl: str) -> str:
    return mesh.install_manifest(istioctl)


@pytest.fixture(scope="session")
def install(install_text: str) -> list[dict]:
    return mesh.parse(install_text)


@pytest.fixture(scope="session")
def mesh_config(install: list[dict]) -> dict:
    return mesh.mesh_config(install)


@pytest.fixture(scope="session")
def trust_domain(mesh_config: dict) -> str:
    return mesh_config.get("trustDomain", "cluster.local")


@pytest.fixture(scope="session")
def gateways(install: list[dict], trust_domain: str) -> set[str]:
    return mesh.gateway_principals(install, trust_domain)


@pytest.fixture(scope="session")
def methods() -> frozenset[str]:
    return mesh.grpc_methods()


def _as_in_the_cluster(istioctl: str, rendered_text: str, install: list[dict]) -> list[str]:
    """A render as the cluster would hold it: injected by the install's injector, plus a Pod per
    workload (the render's and the install's: the analyzers look at pods, not templates), and
    the certificate Secrets its Gateway names (the operator's, see mesh.certificate_secrets)."""
    injected = mesh.inject(istioctl, rendered_text, install)
    documents = mesh.parse(injected)
    return [injected, yaml.safe_dump_all(mesh.pods(documents + install) + mesh.certificate_secrets(documents))]


@pytest.fixture(scope="session")
def analyzer() -> str:
    return mesh.mesh_analyze()


def _analyze(istioctl: str, analyzer: str, name: str, rendered_text: str, install_text: str, install: list[dict],
             mesh_config: dict) -> list[dict]:
    return mesh.analyze(analyzer, _as_in_the_cluster(istioctl, rendered_text, install) + [install_text], mesh_config,
                        mesh.suppressions_for(name))


@pytest.fixture(scope="session")
def injected(rendered, istioctl: str, install: list[dict]) -> dict[str, list[dict]]:
    return {name: mesh.parse(mesh.inject(istioctl, rendered[name], install)) for name in MESH_RENDERS}


def _broken(tmp_path: Path, name: str, *edits: tuple[str, str, str]) -> str:
    """Render `name` from a copy where each (file under the copy's root, old, new) is applied;
    `old` must occur exactly once."""
    root = render.copy_tree(tmp_path)  # kustomize/ and istio/ (the overlays name ../../../istio)
    for file, old, new in edits:
        path = tmp_path / file
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}, expected once"
        path.write_text(text.replace(old, new))
    return render.render(name, root)


# --- the list of mesh renders ----------------------------------------------------------------

def test_the_mesh_renders_are_the_ones_with_istio_objects(docs) -> None:
    with_istio = sorted(name for name, objects in docs.items() if mesh.istio_objects(objects))
    assert with_istio == sorted(MESH_RENDERS)


# --- Istio's own tools -----------------------------------------------------------------------

def test_the_install_config_renders_with_the_pinned_istio(install: list[dict], mesh_config: dict) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in install}
    assert ("Deployment", "istiod") in kinds
    assert ("Deployment", "istio-ingressgateway") in kinds
    assert ("DaemonSet", "istio-cni-node") in kinds
    assert mesh_config["enablePrometheusMerge"] is True
    assert mesh_config["outboundTrafficPolicy"]["mode"] == "REGISTRY_ONLY"
    assert mesh_config["accessLogEncoding"] == "JSON"
    [otel] = [p for p in mesh_config["extensionProviders"] if p["name"] == "otel"]
    assert otel["opentelemetry"] == {"service": "jaeger-collector.observability.svc.cluster.local", "port": 4317}


def test_the_install_config_pins_a_release_of_the_checked_line() -> None:
    spec = mesh.install_spec()
    assert spec["hub"] == "docker.io/istio"
    module = mesh.env_file("BOOKSHOP_ISTIO_MODULE", "the pinned istio.io/istio module's directory")
    assert mesh.check_release_line(spec["tag"], (module / "VERSION").read_text()) == []


def test_a_release_of_another_line_is_caught() -> None:
    assert mesh.check_release_line("1.30.8", "1.31\n") == ["tag 1.30.8 is not of the 1.31 line the checks' Istio module is from"]
    assert mesh.check_release_line("latest", "1.31") == ["tag latest is not a release (x.y.z)"]


def test_an_invalid_install_config_is_refused(tmp_path: Path, istioctl: str) -> None:
    broken = tmp_path / "istio-operator.yaml"
    broken.write_text(mesh.INSTALL_CONFIG.read_text().replace("    cni:\n      enabled: true", "    cni:\n      enable: true"))
    with pytest.raises(RuntimeError, match='unknown field "enable"'):
        mesh.install_manifest(istioctl, broken)


def test_a_misspelt_mesh_setting_is_caught(tmp_path: Path, istioctl: str) -> None:
    # istioctl passes meshConfig through unchecked; the rendered mesh config then lacks the setting.
    broken = tmp_path / "istio-operator.yaml"
    broken.write_text(mesh.INSTALL_CONFIG.read_text().replace("accessLogEncoding: JSON", "accessLogEncodin: JSON"))
    rendered = mesh.mesh_config(mesh.parse(mesh.install_manifest(istioctl, broken)))
    assert rendered.get("accessLogEncoding") != "JSON"


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_istioctl_analyze_finds_nothing(name: str, rendered, istioctl: str, install_text: str,
                                         install: list[dict], mesh_config: dict) -> None:
    # What the issue asks for, as is: istioctl analyze --use-kube=false of the render and the install.
    messages = mesh.istioctl_analyze(istioctl, _as_in_the_cluster(istioctl, rendered[name], install) + [install_text],
                                     mesh_config, mesh.suppressions_for(name))
    assert [mesh.describe(m) for m in messages] == []


def test_istioctl_analyze_catches_what_it_analyzes_without_a_cluster(tmp_path: Path, istioctl: str,
                                                                     install_text: str, mesh_config: dict) -> None:
    # Two namespace-wide Telemetry resources in one namespace: an error istioctl finds from files alone.
    text = _broken(tmp_path, "prod", ("istio/telemetry.yaml", "  name: mesh\nspec:\n", "  name: mesh\nspec:\n"
                                      "  metrics: []\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
                                      "metadata:\n  name: mesh-twin\nspec:\n"))
    messages = mesh.istioctl_analyze(istioctl, [text, install_text], mesh_config, mesh.suppressions_for("prod"))
    assert "IST0160" in {m["code"] for m in messages}, [mesh.describe(m) for m in messages]


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_istios_analyzers_find_nothing_with_the_pods_and_services(name: str, rendered, istioctl: str, analyzer: str,
                                                                   install_text: str, install: list[dict],
                                                                   mesh_config: dict) -> None:
    messages = _analyze(istioctl, analyzer, name, rendered[name], install_text, install, mesh_config)
    assert [mesh.describe(m) for m in messages] == []


def test_every_suppression_has_a_reason_and_a_render() -> None:
    for renders, reason in mesh.SUPPRESSIONS.values():
        assert set(renders) <= set(MESH_RENDERS) and renders
        assert len(reason.split()) >= 10


# Each break, and the message code Istio's analyzers must answer it with.
ANALYZER_BREAKS = {
    "a policy selecting no workload": (
        ("istio/authorization.yaml",
         "      app.kubernetes.io/name: recommendations\n  action: ALLOW",
         "      app.kubernetes.io/name: recommendation\n  action: ALLOW"),
        "IST0127"),  # NoMatchingWorkloadsFound
    "a port name Istio cannot classify": (
        ("kustomize/base/recommendations.yaml",
         "    - name: grpc\n      port: 50051\n      targetPort: grpc\n      appProtocol: grpc\n",
         "    - name: rpc\n      port: 50051\n      targetPort: grpc\n"),
        "IST0118"),  # PortNameIsNotUnderNamingConvention
    "a VirtualService to a missing host": (
        ("istio/recommendations-traffic.yaml",
         "      route:\n        - destination:\n            host: recommendations.bookshop.svc.cluster.local",
         "      route:\n        - destination:\n            host: recommendation.bookshop.svc.cluster.local"),
        "IST0101"),  # ReferencedResourceNotFound
}


@pytest.mark.parametrize("what", list(ANALYZER_BREAKS))
def test_istios_analyzers_catch(what: str, tmp_path: Path, istioctl: str, analyzer: str, install_text: str,
                                install: list[dict], mesh_config: dict) -> None:
    edit, code = ANALYZER_BREAKS[what]
    messages = _analyze(istioctl, analyzer, "dev", _broken(tmp_path, "dev", edit), install_text, install, mesh_config)
    assert code in {m["code"] for m in messages}, [mesh.describe(m) for m in messages]


def test_a_suppression_hides_only_its_message(tmp_path: Path, istioctl: str, analyzer: str, install_text: str,
                                              install: list[dict], mesh_config: dict) -> None:
    edit, _ = ANALYZER_BREAKS["a policy selecting no workload"]
    documents = _as_in_the_cluster(istioctl, _broken(tmp_path, "dev", edit), install) + [install_text]
    # The slash form is how this Istio names a namespaced resource (the message's origin).
    suppressed = {**mesh.suppressions_for("dev"), ("IST0127", "AuthorizationPolicy bookshop/recommendations"): "a test"}
    assert "IST0127" in {m["code"] for m in mesh.analyze(analyzer, documents, mesh_config, mesh.suppressions_for("dev"))}
    assert "IST0127" not in {m["code"] for m in mesh.analyze(analyzer, documents, mesh_config, suppressed)}


def test_the_certificate_the_prod_gateway_names_is_checked(tmp_path: Path, istioctl: str, analyzer: str,
                                                          install_text: str, install: list[dict],
                                                          mesh_config: dict) -> None:
    # Without the operator's Secret the analyzers report the reference; with a Secret of another
    # name too (mesh.certificate_secrets stands in for the real one, by the name prod gives).
    text = _broken(tmp_path, "prod", ("kustomize/overlays/prod/ingress-https.yaml", "credentialName: bookshop-tls",
                                      "credentialName: bookshop-tsl"))
    injected = mesh.inject(istioctl, text, install)
    pods = yaml.safe_dump_all(mesh.pods(mesh.parse(injected) + install))
    other = yaml.safe_dump_all([{**s, "metadata": {**s["metadata"], "name": "bookshop-tls"}}
                                for s in mesh.certificate_secrets(mesh.parse(injected))])
    messages = mesh.analyze(analyzer, [injected, pods, other, install_text], mesh_config, {})
    assert [m["message"] for m in messages] == ['Referenced credentialName not found: "bookshop-tsl"']


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_istio_objects_validate_against_the_pinned_crds(name: str, docs, crds: Path) -> None:
    objects = mesh.istio_objects(docs[name])
    assert objects
    assert [p for d in objects for p in schemas.istio_problems(d, crds)] == []


def test_the_crd_check_catches_a_misspelt_field(tmp_path: Path, crds: Path) -> None:
    text = _broken(tmp_path, "prod", ("istio/recommendations-traffic.yaml",
                                      "consecutive5xxErrors: 5", "consecutive5xxError: 5"))
    problems = [p for d in mesh.istio_objects(render.parse(text)) for p in schemas.istio_problems(d, crds)]
    assert any("consecutive5xxError" in p for p in problems), problems


# --- cross-checks on the real renders --------------------------------------------------------

@pytest.mark.parametrize("name", MESH_RENDERS)
def test_grpc_paths_are_methods_of_the_proto(name: str, docs, methods) -> None:
    assert "/recommendations.v1.Recommendations/Recommend" in methods
    assert mesh.check_grpc_paths(docs[name], methods) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_principals_are_service_accounts_or_the_gateway(name: str, docs, gateways, trust_domain) -> None:
    assert gateways == {"cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"}
    assert mesh.check_principals(docs[name], gateways, trust_domain) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_ports_named_by_the_mesh_exist(name: str, docs) -> None:
    assert mesh.check_mesh_ports(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_there_is_an_allow_nothing_policy(name: str, docs) -> None:
    assert mesh.check_allow_nothing(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_every_allow_rule_names_principals(name: str, docs) -> None:
    assert mesh.check_allow_rules_name_principals(docs[name]) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_telemetry_providers_are_defined_by_the_install(name: str, docs, mesh_config) -> None:
    assert mesh.check_telemetry_providers(docs[name], mesh_config) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_retries_fit_in_the_callers_deadline(name: str, docs, accepted) -> None:
    deadlines = mesh.caller_deadlines(docs[name], accepted)
    assert deadlines == {("recommendations", "bookshop"): 0.5}
    assert mesh.check_retry_budget(docs[name], deadlines) == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_the_tracing_provider_reaches_the_renders_collector(name: str, docs, mesh_config) -> None:
    assert mesh.check_provider_services(docs[name], mesh_config) == []


def test_a_tracing_provider_on_a_wrong_port_is_caught(docs, mesh_config) -> None:
    # dev deploys the collector itself (observability/), so the provider must name one of its ports.
    otlp_http = {**mesh_config, "extensionProviders": [
        {"name": "otel", "opentelemetry": {"service": "jaeger-collector.observability.svc.cluster.local", "port": 4319}}]}
    assert any("port 4319 is not a port of Service/jaeger-collector" in p
               for p in mesh.check_provider_services(docs["dev"], otlp_http))


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_the_mesh_and_the_services_sample_alike(name: str, docs, accepted) -> None:
    assert mesh.check_sampling(docs[name], accepted) == []


# --- each cross-check's failing twin ---------------------------------------------------------

def test_a_path_that_is_no_method_is_caught(tmp_path: Path, methods) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  "/recommendations.v1.Recommendations/Recommend",
                                                  "/recommendations.v1.Recommendations/Recommends")))
    assert any("path /recommendations.v1.Recommendations/Recommends" in p
               for p in mesh.check_grpc_paths(docs, methods))


def test_a_method_missing_from_the_proto_is_caught(docs) -> None:
    # The same render against a descriptor set without Recommend (as if the RPC were renamed).
    assert mesh.check_grpc_paths(docs["dev"], frozenset({"/recommendations.v1.Recommendations/Suggest"}))


def test_a_principal_of_another_namespace_is_caught(tmp_path: Path, gateways) -> None:
    docs = render.parse(_broken(tmp_path, "prod", ("istio/authorization.yaml",
                                                   "cluster.local/ns/bookshop/sa/marketplace",
                                                   "cluster.local/ns/default/sa/marketplace")))
    assert any("principal cluster.local/ns/default/sa/marketplace" in p
               for p in mesh.check_principals(docs, gateways))


def test_a_gateway_principal_the_install_does_not_create_is_caught(tmp_path: Path, gateways) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  "sa/istio-ingressgateway-service-account",
                                                  "sa/istio-ingressgateway")))
    assert any("sa/istio-ingressgateway " in p for p in mesh.check_principals(docs, gateways))


def test_the_gateway_identity_follows_the_install_config(tmp_path: Path, istioctl: str, trust_domain) -> None:
    # Renaming the gateway in the install config renames its service account: the policy's
    # principal no longer matches, which check_principals then reports.
    config = tmp_path / "istio-operator.yaml"
    config.write_text(mesh.INSTALL_CONFIG.read_text().replace("- name: istio-ingressgateway\n",
                                                              "- name: bookshop-ingress\n"))
    principals = mesh.gateway_principals(mesh.parse(mesh.install_manifest(istioctl, config)), trust_domain)
    assert principals == {"cluster.local/ns/istio-system/sa/bookshop-ingress-service-account"}


def test_a_policy_port_that_is_no_container_port_is_caught(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("istio/authorization.yaml", 'ports: ["50051"]', 'ports: ["5051"]')))
    assert any("port 5051 is not a container port" in p for p in mesh.check_mesh_ports(docs))


def test_a_route_port_that_is_no_service_port_is_caught(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "prod", ("istio/ingress.yaml", "              number: 80\n",
                                                   "              number: 8080\n")))
    assert any("port 8080 is not a port of Service/marketplace" in p for p in mesh.check_mesh_ports(docs))


def test_a_destination_rule_for_a_missing_service_is_caught(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("istio/recommendations-traffic.yaml",
                                                  "spec:\n  host: recommendations.bookshop.svc.cluster.local",
                                                  "spec:\n  host: recommendations.books.svc.cluster.local")))
    assert any("DestinationRule/recommendations: host" in p for p in mesh.check_mesh_ports(docs))


def test_a_policy_selecting_no_pod_is_caught_by_the_port_check(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  "      app.kubernetes.io/name: marketplace\n  action: ALLOW",
                                                  "      app.kubernetes.io/name: market\n  action: ALLOW")))
    assert any("AuthorizationPolicy/marketplace: its selector" in p for p in mesh.check_mesh_ports(docs))


def test_a_missing_allow_nothing_policy_is_caught(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "prod", ("istio/authorization.yaml",
                                                   "  name: allow-nothing\nspec: {}\n",
                                                   "  name: allow-nothing\nspec:\n  action: DENY\n"
                                                   "  rules: [{to: [{operation: {paths: [/nothing]}}]}]\n")))
    assert mesh.check_allow_nothing(docs) == ["namespace bookshop: no allow-nothing AuthorizationPolicy "
                                              "(ALLOW, no selector, no rules)"]


def test_an_allow_rule_without_principals_is_caught(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("istio/authorization.yaml",
                                                  '    - from:\n        - source:\n'
                                                  '            principals: ["cluster.local/ns/bookshop/sa/marketplace"]\n',
                                                  '    - from:\n        - source:\n'
                                                  '            namespaces: ["bookshop"]\n')))
    assert any("AuthorizationPolicy/recommendations: rule 0" in p for p in mesh.check_allow_rules_name_principals(docs))


def test_a_telemetry_provider_the_install_does_not_define_is_caught(docs, mesh_config) -> None:
    renamed = {**mesh_config, "extensionProviders": [{**p, "name": "jaeger"} for p in mesh_config["extensionProviders"]]}
    assert any("tracing provider otel is not an extension provider" in p
               for p in mesh.check_telemetry_providers(docs["dev"], renamed))


def test_a_zipkin_tracing_provider_is_caught(docs, mesh_config) -> None:
    zipkin = {**mesh_config, "extensionProviders": [
        {"name": "otel", "zipkin": {"service": "jaeger-collector.observability.svc.cluster.local", "port": 9411}}]}
    assert any("is zipkin, not opentelemetry" in p for p in mesh.check_telemetry_providers(docs["prod"], zipkin))


def test_a_route_timeout_past_the_callers_deadline_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("istio/recommendations-traffic.yaml", "timeout: 450ms", "timeout: 600ms")))
    assert any("timeout 600ms is not inside the caller's 0.5s deadline" in p
               for p in mesh.check_retry_budget(docs, mesh.caller_deadlines(docs, accepted)))


def test_retries_that_outlast_the_route_timeout_are_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(_broken(tmp_path, "prod", ("istio/recommendations-traffic.yaml",
                                                   "perTryTimeout: 150ms", "perTryTimeout: 200ms")))
    assert any("3 tries of 200ms do not fit" in p
               for p in mesh.check_retry_budget(docs, mesh.caller_deadlines(docs, accepted)))


def test_a_shorter_caller_deadline_is_caught(tmp_path: Path, accepted) -> None:
    # The deadline is the marketplace's real one: lower it in the manifest and the route no longer fits.
    docs = render.parse(_broken(tmp_path, "dev", ("kustomize/base/marketplace.yaml",
                                                  "            - name: RECOMMENDATIONS_PORT\n",
                                                  "            - name: RECOMMENDATIONS_TIMEOUT_MS\n"
                                                  "              value: \"300\"\n"
                                                  "            - name: RECOMMENDATIONS_PORT\n")))
    assert any("not inside the caller's 0.3s deadline" in p
               for p in mesh.check_retry_budget(docs, mesh.caller_deadlines(docs, accepted)))


def test_a_gateway_sampling_other_than_the_services_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(_broken(tmp_path, "prod", ("kustomize/overlays/prod/mesh-sampling.yaml",
                                                   "  namespace: istio-system\nspec:\n  tracing:\n    - providers:\n"
                                                   "        - name: otel\n      randomSamplingPercentage: 10\n",
                                                   "  namespace: istio-system\nspec:\n  tracing:\n    - providers:\n"
                                                   "        - name: otel\n      randomSamplingPercentage: 20\n")))
    assert any(p.startswith("Telemetry/ingressgateway (istio-system): randomSamplingPercentage 20")
               for p in mesh.check_sampling(docs, accepted))


def test_a_service_sampler_that_ignores_the_ingress_is_caught(tmp_path: Path, accepted) -> None:
    docs = render.parse(_broken(tmp_path, "dev", ("kustomize/overlays/dev/kustomization.yaml",
                                                  "OTEL_TRACES_SAMPLER=parentbased_always_on", "OTEL_TRACES_SAMPLER=always_on")))
    assert any("ignores the ingress's decision" in p for p in mesh.check_sampling(docs, accepted))


def test_the_grace_period_counts_the_trace_flush(tmp_path: Path, accepted) -> None:
    # 30 s covers delay 5 + timeout 20, but not the 5 s trace flush of an overlay that exports traces.
    docs = render.parse(_broken(tmp_path, "prod", ("istio/workloads.yaml", "terminationGracePeriodSeconds: 40",
                                                   "terminationGracePeriodSeconds: 30")))
    problems = crosschecks.check_grace_period(docs, accepted)
    assert any("terminationGracePeriodSeconds 30" in p and "trace flush 5" in p for p in problems), problems


# --- what the overlays promise ---------------------------------------------------------------

def _one(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("name", list(render.RENDERS))
def test_every_object_is_part_of_the_bookshop(name: str, docs) -> None:
    assert [f"{d['kind']}/{d['metadata']['name']}" for d in docs[name]
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "bookshop"] == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_pods_are_ready_for_a_sidecar(name: str, docs) -> None:
    namespace = _one(docs[name], "Namespace", "bookshop")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert _one(docs[name], "PeerAuthentication", "default")["spec"]["mtls"]["mode"] == "STRICT"
    for service in ("recommendations", "marketplace"):
        pod = _one(docs[name], "Deployment", service)["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert pod["metadata"]["labels"]["version"]
        assert annotations["sidecar.istio.io/nativeSidecar"] == "true"
        assert "holdApplicationUntilProxyStarts: true" in annotations["proxy.istio.io/config"]
        assert 'EXIT_ON_ZERO_ACTIVE_CONNECTIONS: "true"' in annotations["proxy.istio.io/config"]
        for key in ("proxyCPU", "proxyMemory", "proxyCPULimit", "proxyMemoryLimit"):
            assert annotations[f"sidecar.istio.io/{key}"]
        # Admin ports are not on the Services under STRICT mTLS (metrics merging serves them).
        ports = _one(docs[name], "Service", service)["spec"]["ports"]
        assert [p["name"] for p in ports if "admin" in p["name"]] == []


def test_sampling_is_per_overlay_at_the_ingress(docs) -> None:
    for name, percentage in (("dev", 100), ("prod", 10)):
        gateway = _one(docs[name], "Telemetry", "ingressgateway")
        assert gateway["metadata"]["namespace"] == "istio-system"
        assert [t["randomSamplingPercentage"] for t in gateway["spec"]["tracing"]] == [percentage]
        sidecars = _one(docs[name], "Telemetry", "mesh")
        assert [t["randomSamplingPercentage"] for t in sidecars["spec"]["tracing"]] == [percentage]


def test_prod_serves_https_for_its_one_host(docs) -> None:
    gateway = _one(docs["prod"], "Gateway", "bookshop")
    servers = {s["port"]["protocol"]: s for s in gateway["spec"]["servers"]}
    assert servers["HTTPS"]["tls"]["credentialName"]
    assert servers["HTTP"]["tls"]["httpsRedirect"] is True
    assert servers["HTTP"]["hosts"] == servers["HTTPS"]["hosts"] == ["bookshop.example.com"]


def test_fault_injection_is_off_except_in_its_overlay(docs) -> None:
    for name in ("dev", "prod"):
        assert all("fault" not in route for route in _one(docs[name], "VirtualService", "recommendations")["spec"]["http"])
    [route] = _one(docs["dev-faults"], "VirtualService", "recommendations")["spec"]["http"]
    assert route["fault"]["abort"]["grpcStatus"] == "UNAVAILABLE"
    assert mesh.seconds(route["fault"]["delay"]["fixedDelay"]) > 0.5


@pytest.mark.parametrize("name", [n for n, (_, components) in render.RENDERS.items()
                                  if "hpa-pdb" in components or n == "prod"])
def test_autoscalers_scale_on_the_app_container(name: str, docs) -> None:
    assert mesh.check_container_metrics(docs[name]) == []


def test_an_autoscaler_on_a_missing_container_is_caught(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "prod", ("kustomize/components/hpa-pdb/marketplace.yaml",
                                                   "container: marketplace", "container: istio-proxy")))
    assert any("container istio-proxy is not in Deployment/marketplace" in p for p in mesh.check_container_metrics(docs))


def test_an_autoscaler_on_the_whole_pod_is_caught(tmp_path: Path) -> None:
    docs = render.parse(_broken(tmp_path, "prod", ("kustomize/components/hpa-pdb/recommendations.yaml",
                                                   "    - type: ContainerResource\n      containerResource:\n"
                                                   "        name: cpu\n        container: recommendations\n",
                                                   "    - type: Resource\n      resource:\n        name: cpu\n")))
    assert any("HorizontalPodAutoscaler/recommendations: a Resource metric" in p for p in mesh.check_container_metrics(docs))


@pytest.mark.parametrize("name", ["prod"])
def test_prod_autoscaling_budgets_and_spread_suit_a_sidecar(name: str, docs) -> None:
    for service in ("recommendations", "marketplace"):
        [metric] = _one(docs[name], "HorizontalPodAutoscaler", service)["spec"]["metrics"]
        assert metric["type"] == "ContainerResource"
        assert metric["containerResource"]["container"] == service
        assert _one(docs[name], "PodDisruptionBudget", service)["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        spread = _one(docs[name], "Deployment", service)["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c.get("nodeTaintsPolicy") for c in spread} == {"Honor"}


# --- the pods as Istio's injector makes them (what docs/mesh.md claims) ------------------------

def _injected_pod(injected: dict[str, list[dict]], name: str, service: str) -> dict:
    return _one(injected[name], "Deployment", service)["spec"]["template"]


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_the_sidecar_is_native_and_sized_per_pod(name: str, injected) -> None:
    for service in ("recommendations", "marketplace"):
        spec = _injected_pod(injected, name, service)["spec"]
        [proxy] = [c for c in spec["initContainers"] if c["name"] == "istio-proxy"]
        assert proxy["restartPolicy"] == "Always"  # a native sidecar: up before the app, down after it
        assert proxy["resources"] == {"requests": {"cpu": "20m", "memory": "64Mi"},
                                      "limits": {"cpu": "500m", "memory": "128Mi"}}
        env = {e["name"]: e.get("value") for e in proxy.get("env", [])}
        assert env["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true"
        # Istio CNI: no privileged istio-init container.
        assert "istio-init" not in [c["name"] for c in spec["initContainers"]]


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_every_container_meets_the_restricted_pod_security_standard(name: str, injected) -> None:
    for service in ("recommendations", "marketplace"):
        spec = _injected_pod(injected, name, service)["spec"]
        pod_context = spec.get("securityContext", {})
        for container in spec["containers"] + spec.get("initContainers", []):
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("allowPrivilegeEscalation") is False, container["name"]
            assert context.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
            assert not set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}, container["name"]
            assert context.get("runAsNonRoot") is True or context.get("runAsUser", 0) != 0, container["name"]
            assert (context.get("seccompProfile") or pod_context.get("seccompProfile", {})).get("type") == "RuntimeDefault"


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_probes_and_scrapes_go_through_the_sidecar_agent(name: str, injected, docs) -> None:
    # Under STRICT mTLS the kubelet and Prometheus reach the agent on 15020, never an intercepted port.
    for service, admin in (("recommendations", "9464"), ("marketplace", "9465")):
        pod = _injected_pod(injected, name, service)
        [app] = [c for c in pod["spec"]["containers"] if c["name"] == service]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert app[probe]["httpGet"]["port"] == 15020, (service, probe)
            assert app[probe]["httpGet"]["path"].startswith(f"/app-health/{service}/")
        annotations = pod["metadata"]["annotations"]
        assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("15020", "/stats/prometheus")
        [proxy] = [c for c in pod["spec"]["initContainers"] if c["name"] == "istio-proxy"]
        merged = {e["name"]: e.get("value") for e in proxy["env"]}["ISTIO_PROMETHEUS_ANNOTATIONS"]
        assert json.loads(merged) == {"scrape": "true", "path": "/metrics", "port": admin}
        # The render itself still names the app's admin port (the merge source).
        assert _one(docs[name], "Deployment", service)["spec"]["template"]["metadata"]["annotations"][
            "prometheus.io/port"] == admin


def test_yamllint_finds_nothing_in_istio() -> None:
    # test_yamllint.py lints the other YAML trees; istio/ is this file's.
    yamllint = require_tool("yamllint")
    result = run([yamllint, "--strict", "--config-file", ".yamllint.yaml", "istio"])
    assert result.returncode == 0, result.stdout


def test_the_verification_probes_are_valid_and_restricted() -> None:
    # istio/verify/probes.yaml, which docs/mesh.md has users apply by hand.
    documents = mesh.parse((mesh.REPO_ROOT / "istio/verify/probes.yaml").read_text())
    assert [p for d in documents for p in schemas.kubernetes_problems(d)] == []
    for pod in (d for d in documents if d["kind"] == "Pod"):
        assert pod["spec"]["serviceAccountName"] == "default"  # not an identity any policy allows
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
