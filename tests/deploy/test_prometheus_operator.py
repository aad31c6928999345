"""kustomize/components/prometheus-operator: for a Prometheus run by the Prometheus Operator.

Its PrometheusRule is generated from observability/prometheus/rules/ (prometheus_rule.py) and
must not drift; every object validates, unknown fields rejected, against the operator's CRDs of
the Go module tools/prometheus-operator/go.mod pins (BOOKSHOP_PROMETHEUS_OPERATOR_CRDS); each
PodMonitor selects pods the injected render or Istio's install really has, on ports they really
name, and keeps the metrics observability/prometheus/kubernetes.yml keeps; the network policies
admit what the monitors scrape, from the peer set once in the component. Each check is shown
failing on a copy broken on purpose."""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

import istio_tools
import prometheus_rule
import render
import schemas
from outside_tools import REPO_ROOT, required_dir

Doc = dict[str, Any]
COMPONENT = "components/prometheus-operator"
KUBERNETES_PROMETHEUS = REPO_ROOT / "observability/prometheus/kubernetes.yml"


def with_operator(root: Path = render.KUSTOMIZE, resources: tuple[str, ...] = ("overlays/prod",),
                  components: tuple[str, ...] = (COMPONENT,)) -> list[Doc]:
    """A user's kustomization: `resources` (an overlay, or the base) with `components` added."""
    with tempfile.TemporaryDirectory(prefix="kustomize-operator-") as tmp:
        def relative(path: str) -> str:
            return os.path.relpath(root / path, tmp)
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": render.NAMESPACE,
            "resources": [relative(r) for r in resources], "components": [relative(c) for c in components]}))
        return render.parse(render.kustomize(Path(tmp)))


@pytest.fixture(scope="module")
def prod_with_operator() -> list[Doc]:
    return with_operator()


# --- one source for the rules -------------------------------------------------------------------

def test_the_prometheus_rule_is_generated_from_the_rule_files() -> None:
    assert prometheus_rule.GENERATED.read_text() == prometheus_rule.generate(), (
        "kustomize/components/prometheus-operator/prometheus-rule.yaml is stale: run python3 tests/deploy/prometheus_rule.py")
    generated = yaml.safe_load(prometheus_rule.GENERATED.read_text())["spec"]["groups"]
    files = sorted(prometheus_rule.RULES_DIR.glob("*.yml"))
    assert generated == [g for path in files for g in yaml.safe_load(path.read_text())["groups"]]


def test_a_rule_changed_without_regenerating_is_caught(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(prometheus_rule.RULES_DIR, rules)
    path = rules / "bookshop-alerts.yml"
    path.write_text(path.read_text().replace("> 0.05\n", "> 0.1\n"))
    assert prometheus_rule.generate(rules) != prometheus_rule.GENERATED.read_text()


# --- the operator's CRDs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def operator_crds() -> Path:
    return required_dir("BOOKSHOP_PROMETHEUS_OPERATOR_CRDS", "example/prometheus-operator-crd of the Prometheus "
                        "Operator module tools/prometheus-operator/go.mod pins (cargo xtask test deploy sets it)")


@cache
def operator_schemas(crds: Path) -> dict[tuple[str, str, str], Doc]:
    """(group, version, kind) -> strict schema, from every CRD file of the directory, read as
    Istio's are (unknown fields rejected)."""
    found: dict[tuple[str, str, str], Doc] = {}
    for path in sorted(crds.glob("*.yaml")):
        found |= schemas.istio_schemas(path)
    return found


def operator_problems(doc: Doc, crds: Path) -> list[str]:
    return schemas.crd_problems(doc, operator_schemas(crds), "the Prometheus Operator")


def _is_operator(doc: Doc) -> bool:
    return doc["apiVersion"].startswith("monitoring.coreos.com/")


def test_the_crds_are_the_pinned_release(operator_crds: Path) -> None:
    module = operator_crds.parents[1]
    assert module.name == "prometheus-operator@v0.85.0"
    assert (module / "VERSION").read_text().strip() == "0.85.0"
    assert {kind for _, _, kind in operator_schemas(operator_crds)} >= {"PodMonitor", "PrometheusRule"}


def test_every_object_validates_against_its_schema(prod_with_operator: list[Doc], operator_crds: Path,
                                                    istio_crds: Path) -> None:
    kinds = {d["kind"] for d in prod_with_operator if _is_operator(d)}
    assert kinds == {"PodMonitor", "PrometheusRule"}
    problems = [p for d in prod_with_operator
                for p in (operator_problems(d, operator_crds) if _is_operator(d) else schemas.validate(d, istio_crds))]
    assert problems == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    # An unknown field, as strict field validation rejects it.
    ("      path: /stats/prometheus\n      relabelings:", "      paths: /stats/prometheus\n      relabelings:",
     "PodMonitor/bookshop-sidecars: Additional properties are not allowed ('paths' was unexpected)"),
    # A port number where the CRD wants a port name.
    ("  podMetricsEndpoints:\n    - port: http-envoy-prom\n      relabelings:",
     "  podMetricsEndpoints:\n    - port: 15020\n      relabelings:",
     "PodMonitor/bookshop-apps: 15020 is not of type 'string'"),
])
def test_an_object_the_crds_reject_is_caught(tmp_path: Path, operator_crds: Path, old: str, new: str,
                                             expected: str) -> None:
    root = render.break_copy(tmp_path, f"{COMPONENT}/podmonitors.yaml", old, new)
    problems = [p for d in with_operator(root) if _is_operator(d) for p in operator_problems(d, operator_crds)]
    assert any(p.startswith(expected) for p in problems), problems


# --- what the monitors scrape -------------------------------------------------------------------

def _pods(docs: list[Doc]) -> list[Doc]:
    """Each Deployment's pod template, with its namespace."""
    return [{"namespace": d["metadata"].get("namespace", render.NAMESPACE), **d["spec"]["template"]}
            for d in docs if d["kind"] == "Deployment"]


def _ports(pod: Doc) -> dict[str, int]:
    """Named ports of the pod's istio-proxy (a native sidecar: an init container)."""
    containers = pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
    return {p["name"]: p["containerPort"] for c in containers if c["name"] == "istio-proxy"
            for p in c.get("ports", []) if "name" in p}


def _standard_metrics_regex() -> str:
    jobs = {j["job_name"]: j for j in yaml.safe_load(KUBERNETES_PROMETHEUS.read_text())["scrape_configs"]}
    [keep] = [r for r in jobs["istio-sidecars"]["metric_relabel_configs"] if r["action"] == "keep"]
    return keep["regex"]


def _scrape_policy(docs: list[Doc]) -> Doc:
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "allow-prometheus-scrape"]
    return policy


def monitor_problems(docs: list[Doc], pods: list[Doc]) -> list[str]:
    """Each PodMonitor selects pods that exist, on a port they name, with the metric filter of
    kubernetes.yml's jobs; the scrape policy admits every port scraped (the named port, and the
    annotated one the merged metrics move to)."""
    problems = []
    standard = _standard_metrics_regex()
    admitted = {p["port"] for rule in _scrape_policy(docs)["spec"]["ingress"] for p in rule["ports"]}
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        name = monitor["metadata"]["name"]
        spec = monitor["spec"]
        namespaces = spec.get("namespaceSelector", {}).get("matchNames", [monitor["metadata"]["namespace"]])
        wanted = spec["selector"]["matchLabels"].items()
        selected = [p for p in pods if p["namespace"] in namespaces and wanted <= p["metadata"]["labels"].items()]
        if not selected:
            problems.append(f"{name}: selects no pod")
        for endpoint in spec["podMetricsEndpoints"]:
            for filter_ in endpoint.get("metricRelabelings", []):
                if filter_["regex"] != standard:
                    problems.append(f"{name}: its metric filter is not kubernetes.yml's")
            for pod in selected:
                where = f"{name}: pod {pod['metadata']['labels'].get('app.kubernetes.io/name', pod['metadata']['labels'])}"
                if endpoint["port"] not in _ports(pod):
                    problems.append(f"{where} names no port {endpoint['port']}")
                    continue
                scraped = {_ports(pod)[endpoint["port"]]}
                if any("prometheus_io_port" in s for r in endpoint.get("relabelings", []) for s in r["sourceLabels"]):
                    scraped = {int(pod["metadata"]["annotations"]["prometheus.io/port"])}
                if pod["namespace"] == render.NAMESPACE and scraped - admitted:
                    problems.append(f"{where}: the scrape policy does not admit port {sorted(scraped - admitted)}")
    return problems


@pytest.fixture(scope="module")
def scraped_pods(prod_with_operator: list[Doc], istioctl: str, install: list[Doc]) -> list[Doc]:
    """The pods as the cluster would run them: the render injected, and the install's gateway."""
    injected = istio_tools.parse(istio_tools.inject(istioctl, yaml.safe_dump_all(prod_with_operator), install))
    return _pods(injected) + _pods(install)


def test_the_monitors_scrape_what_the_pods_serve(prod_with_operator: list[Doc], scraped_pods: list[Doc]) -> None:
    monitors = {d["metadata"]["name"] for d in prod_with_operator if d["kind"] == "PodMonitor"}
    assert monitors == {"bookshop-apps", "bookshop-sidecars", "bookshop-ingress-gateway"}
    assert monitor_problems(prod_with_operator, scraped_pods) == []
    # The merged metrics move to the agent's 15020 under injection (not the admin ports).
    assert {p["metadata"]["annotations"]["prometheus.io/port"] for p in scraped_pods
            if p["namespace"] == render.NAMESPACE} == {"15020"}


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("podmonitors.yaml", "    matchLabels:\n      istio: ingressgateway", "    matchLabels:\n      istio: ingress",
     "bookshop-ingress-gateway: selects no pod"),
    ("podmonitors.yaml", "  podMetricsEndpoints:\n    - port: http-envoy-prom\n      path: /stats/prometheus\n"
     "      relabelings:", "  podMetricsEndpoints:\n    - port: http-envoy-stats\n      path: /stats/prometheus\n"
     "      relabelings:", "bookshop-sidecars: pod marketplace names no port http-envoy-stats"),
    ("podmonitors.yaml", "regex: istio_(requests_total|request_messages_total", "regex: istio_(requests_total|"
     "request_message_total", "bookshop-apps: its metric filter is not kubernetes.yml's"),
])
def test_a_monitor_that_scrapes_nothing_real_is_caught(tmp_path: Path, scraped_pods: list[Doc], file: str, old: str,
                                                       new: str, expected: str) -> None:
    root = render.copy_tree(tmp_path)
    path = root / COMPONENT / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    problems = monitor_problems(with_operator(root), scraped_pods)
    assert expected in problems, problems


def test_a_scrape_policy_without_the_agent_port_is_caught(prod_with_operator: list[Doc],
                                                          scraped_pods: list[Doc]) -> None:
    docs = copy.deepcopy(prod_with_operator)
    for rule in _scrape_policy(docs)["spec"]["ingress"]:
        rule["ports"] = [p for p in rule["ports"] if p["port"] != 15020]
    assert "bookshop-apps: pod marketplace: the scrape policy does not admit port [15020]" in monitor_problems(
        docs, scraped_pods)


# --- where Prometheus runs, set once ------------------------------------------------------------

def _peer_set_in_the_component() -> list[Doc]:
    [patch] = yaml.safe_load((render.KUSTOMIZE / COMPONENT / "scrape-peer.yaml").read_text())
    assert patch["path"] == "/spec/ingress/0/from"
    return patch["value"]


def test_the_scrape_peer_is_the_one_set_in_the_component(prod_with_operator: list[Doc]) -> None:
    [rule] = _scrape_policy(prod_with_operator)["spec"]["ingress"]
    assert rule["from"] == _peer_set_in_the_component()
    # Without the component, the observability stack's Prometheus (dev's).
    [default] = _scrape_policy(render.parse(render.render("base+network-policies")))["spec"]["ingress"]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in default["from"]] == [
        "observability"]


def test_the_component_listed_before_the_network_policies_is_caught() -> None:
    # The patch runs before the policy exists: it finds nothing, and the peer stays observability's.
    docs = with_operator(resources=("base",), components=(COMPONENT, "components/network-policies"))
    [rule] = _scrape_policy(docs)["spec"]["ingress"]
    assert rule["from"] != _peer_set_in_the_component()
    docs = with_operator(resources=("base",), components=("components/network-policies", COMPONENT))
    [rule] = _scrape_policy(docs)["spec"]["ingress"]
    assert rule["from"] == _peer_set_in_the_component()


def test_every_operator_object_carries_the_selector_label(prod_with_operator: list[Doc]) -> None:
    operator = [d for d in prod_with_operator if _is_operator(d)]
    assert operator and all(d["metadata"]["labels"].get("release") == "kube-prometheus-stack" for d in operator)
    assert all(re.fullmatch(r"bookshop(-[a-z-]+)?", d["metadata"]["name"]) for d in operator)
