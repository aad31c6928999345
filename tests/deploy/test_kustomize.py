"""Every render a user may pick builds, validates against its schemas and lints clean; the
overlays say what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest

import render
import schemas
from outside_tools import REPO_ROOT, require_tool, run

RENDERS = list(render.RENDERS)


@pytest.mark.parametrize("name", RENDERS)
def test_every_object_validates_against_its_schema_in_strict_mode(name: str, docs, istio_crds: Path) -> None:
    problems = [p for doc in docs[name] for p in schemas.validate(doc, istio_crds)]
    assert problems == []


@pytest.mark.parametrize("name", RENDERS)
def test_the_render_passes_yamllint(name: str, rendered) -> None:
    yamllint = require_tool("yamllint")
    # Line length aside: a render's long lines are data kustomize copies verbatim into
    # ConfigMaps (dashboards, rules); their sources are linted where they live (test_yamllint.py).
    config = "{extends: %s, rules: {line-length: disable}}" % (REPO_ROOT / ".yamllint.yaml")
    result = run([yamllint, "--strict", "--config-data", config, "-"], input=rendered[name])
    assert result.returncode == 0, result.stdout


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path, istio_crds: Path) -> None:
    root = render.break_copy(tmp_path, "base/recommendations.yaml", "readOnlyRootFilesystem: true",
                             "readOnlyRootFilesystem: true\n            readOnlyRootFS: true")
    broken = render.parse(render.render("base", root))
    problems = [p for doc in broken for p in schemas.validate(doc, istio_crds)]
    assert any("readOnlyRootFS" in p for p in problems), problems


def test_istio_objects_validate_against_istio_crds(istio_crds: Path) -> None:
    good = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "bookshop"}, "spec": {"mtls": {"mode": "STRICT"}}}
    assert schemas.validate(good, istio_crds) == []
    typo = {**good, "spec": {"mtls": {"mod": "STRICT"}}}
    assert any("mod" in p for p in schemas.validate(typo, istio_crds))
    bad_enum = {**good, "spec": {"mtls": {"mode": "STRICTEST"}}}
    assert schemas.validate(bad_enum, istio_crds) != []


def _one(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _settings(docs: list[dict]) -> dict[str, str]:
    [configmap] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("telemetry")]
    return configmap["data"]


def test_the_namespace_is_labelled_for_sidecar_injection(docs) -> None:
    namespace = _one(docs["base"], "Namespace", "bookshop")
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


def test_base_sets_no_opentelemetry_variables(docs) -> None:
    # OTEL_* belong to the overlays: where traces go and how many is an environment's choice.
    assert not [k for k in _settings(docs["base"]) if k.startswith("OTEL_")]


def test_dev_runs_one_pod_each_and_keeps_every_trace(docs) -> None:
    for name in ("recommendations", "marketplace"):
        assert _one(docs["dev"], "Deployment", name)["spec"]["replicas"] == 1
    settings = _settings(docs["dev"])
    assert settings["RUST_LOG"].startswith("debug")
    assert settings["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
    assert settings["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4317"


def test_prod_runs_three_pods_each_spread_and_samples_one_trace_in_ten(docs) -> None:
    for name in ("recommendations", "marketplace"):
        assert _one(docs["prod"], "HorizontalPodAutoscaler", name)["spec"]["minReplicas"] == 3
        _one(docs["prod"], "PodDisruptionBudget", name)
        pod = _one(docs["prod"], "Deployment", name)["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    settings = _settings(docs["prod"])
    assert settings["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert float(settings["OTEL_TRACES_SAMPLER_ARG"]) == 0.1
    assert settings["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4317")
