"""Istio's own tools on every render that includes istio/: the install config renders with the
pinned Istio, istioctl analyze and every analyzer find nothing (and catch what they should on
copies broken on purpose), and the Istio objects validate against the pinned CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import istio_tools
import mesh_checks
import render
import schemas
from mesh_renders import MESH_RENDERS, analyze_render, as_in_the_cluster, broken


# --- the list of mesh renders ----------------------------------------------------------------

def test_the_mesh_renders_are_the_ones_with_istio_objects(docs) -> None:
    with_istio = sorted(name for name, objects in docs.items() if mesh_checks.istio_objects(objects))
    assert with_istio == sorted(MESH_RENDERS)


# --- Istio's own tools -----------------------------------------------------------------------

def test_the_install_config_renders_with_the_pinned_istio(install: list[dict], mesh_config: dict) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in install}
    assert ("Deployment", "istiod") in kinds
    assert ("Deployment", "istio-ingressgateway") in kinds
    assert ("DaemonSet", "istio-cni-node") in kinds
    assert mesh_config["enablePrometheusMerge"] is True
    # Nothing mesh-wide of ours: Istio's defaults for egress and access logs (test_mesh_platform.py).
    assert mesh_config.get("outboundTrafficPolicy", {}).get("mode", "ALLOW_ANY") == "ALLOW_ANY"
    assert not mesh_config.get("accessLogFile")
    [otel] = [p for p in mesh_config["extensionProviders"] if p["name"] == "otel"]
    assert otel["opentelemetry"] == {"service": "otel-collector.observability.svc.cluster.local", "port": 4317}


def test_the_install_config_pins_a_release_of_the_checked_line() -> None:
    spec = istio_tools.install_spec()
    assert spec["hub"] == "docker.io/istio"
    module = istio_tools.env_file("BOOKSHOP_ISTIO_MODULE", "the pinned istio.io/istio module's directory")
    assert mesh_checks.check_release_line(spec["tag"], (module / "VERSION").read_text()) == []


def test_a_release_of_another_line_is_caught() -> None:
    assert mesh_checks.check_release_line("1.30.8", "1.31\n") == [
        "tag 1.30.8 is not of the 1.31 line the checks' Istio module is from"]
    assert mesh_checks.check_release_line("latest", "1.31") == ["tag latest is not a release (x.y.z)"]


def test_an_invalid_install_config_is_refused(tmp_path: Path, istioctl: str) -> None:
    broken = tmp_path / "istio-operator.yaml"
    broken.write_text(istio_tools.INSTALL_CONFIG.read_text().replace("    cni:\n      enabled: true",
                                                                     "    cni:\n      enable: true"))
    with pytest.raises(RuntimeError, match='unknown field "enable"'):
        istio_tools.install_manifest(istioctl, broken)


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_istioctl_analyze_finds_nothing(name: str, rendered, istioctl: str, install_text: str,
                                         install: list[dict], mesh_config: dict) -> None:
    # What the issue asks for, as is: istioctl analyze --use-kube=false of the render and the install.
    messages = istio_tools.istioctl_analyze(istioctl, as_in_the_cluster(istioctl, rendered[name], install) + [install_text],
                                     mesh_config, istio_tools.suppressions_for(name))
    assert [istio_tools.describe(m) for m in messages] == []


def test_istioctl_analyze_catches_what_it_analyzes_without_a_cluster(tmp_path: Path, istioctl: str,
                                                                     install_text: str, mesh_config: dict) -> None:
    # Two namespace-wide Telemetry resources in one namespace: an error istioctl finds from files alone.
    text = broken(tmp_path, "prod", ("istio/telemetry.yaml", "  name: mesh\nspec:\n", "  name: mesh\nspec:\n"
                                      "  metrics: []\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
                                      "metadata:\n  name: mesh-twin\nspec:\n"))
    messages = istio_tools.istioctl_analyze(istioctl, [text, install_text], mesh_config, istio_tools.suppressions_for("prod"))
    assert "IST0160" in {m["code"] for m in messages}, [istio_tools.describe(m) for m in messages]


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_istios_analyzers_find_nothing_with_the_pods_and_services(name: str, rendered, istioctl: str, analyzer: str,
                                                                   install_text: str, install: list[dict],
                                                                   mesh_config: dict) -> None:
    messages = analyze_render(istioctl, analyzer, name, rendered[name], install_text, install, mesh_config)
    assert [istio_tools.describe(m) for m in messages] == []


def test_every_suppression_has_a_reason_and_a_render() -> None:
    for renders, reason in istio_tools.SUPPRESSIONS.values():
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
    messages = analyze_render(istioctl, analyzer, "dev", broken(tmp_path, "dev", edit), install_text, install, mesh_config)
    assert code in {m["code"] for m in messages}, [istio_tools.describe(m) for m in messages]


def test_a_suppression_hides_only_its_message(tmp_path: Path, istioctl: str, analyzer: str, install_text: str,
                                              install: list[dict], mesh_config: dict) -> None:
    edit, _ = ANALYZER_BREAKS["a policy selecting no workload"]
    documents = as_in_the_cluster(istioctl, broken(tmp_path, "dev", edit), install) + [install_text]
    # The slash form is how this Istio names a namespaced resource (the message's origin).
    suppressed = {**istio_tools.suppressions_for("dev"), ("IST0127", "AuthorizationPolicy bookshop/recommendations"): "a test"}
    unsuppressed = istio_tools.analyze(analyzer, documents, mesh_config, istio_tools.suppressions_for("dev"))
    assert "IST0127" in {m["code"] for m in unsuppressed}
    assert "IST0127" not in {m["code"] for m in istio_tools.analyze(analyzer, documents, mesh_config, suppressed)}


def test_the_certificate_the_prod_gateway_names_is_checked(tmp_path: Path, istioctl: str, analyzer: str,
                                                          install_text: str, install: list[dict],
                                                          mesh_config: dict) -> None:
    # Without the operator's Secret the analyzers report the reference; with a Secret of another
    # name too (istio_tools.certificate_secrets stands in for the real one, by the name prod gives).
    text = broken(tmp_path, "prod", ("kustomize/overlays/prod/ingress-https.yaml", "credentialName: bookshop-tls",
                                      "credentialName: bookshop-tsl"))
    injected = istio_tools.inject(istioctl, text, install)
    pods = yaml.safe_dump_all(istio_tools.pods(istio_tools.parse(injected) + install))
    other = yaml.safe_dump_all([{**s, "metadata": {**s["metadata"], "name": "bookshop-tls"}}
                                for s in istio_tools.certificate_secrets(istio_tools.parse(injected))])
    messages = istio_tools.analyze(analyzer, [injected, pods, other, install_text], mesh_config,
                                   istio_tools.suppressions_for("prod"))
    assert [m["message"] for m in messages] == ['Referenced credentialName not found: "bookshop-tsl"']


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_istio_objects_validate_against_the_pinned_crds(name: str, docs, crds: Path) -> None:
    objects = mesh_checks.istio_objects(docs[name])
    assert objects
    assert [p for d in objects for p in schemas.istio_problems(d, crds)] == []


def test_the_crd_check_catches_a_misspelt_field(tmp_path: Path, crds: Path) -> None:
    text = broken(tmp_path, "prod", ("istio/recommendations-traffic.yaml",
                                      "consecutive5xxErrors: 5", "consecutive5xxError: 5"))
    problems = [p for d in mesh_checks.istio_objects(render.parse(text)) for p in schemas.istio_problems(d, crds)]
    assert any("consecutive5xxError" in p for p in problems), problems
