"""The dashboards' JSON, offline: unique panel ids, only provisioned datasources, no hard-coded
place, latency panels that link to Jaeger; the mesh dashboard's queries parse (promtool) and use
only Istio's standard metrics and labels (observability/istio/standard-metrics.yaml, itself
checked against the pinned Istio source). Each check is shown failing on a broken copy."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

import dashboards
import promql
from config_files import DATASOURCES, ISTIO_METRICS, KUBERNETES_PROMETHEUS
from outside_tools import require_tool, required_dir, run

NAMES = ["bookshop-services", "bookshop-mesh"]


@pytest.fixture(scope="module")
def provisioned() -> set[str]:
    return dashboards.provisioned_uids()


def test_the_dashboards_are_the_two_the_issue_names() -> None:
    assert [p.stem for p in dashboards.all_files()] == sorted(NAMES)
    assert {dashboards.load(n)["title"] for n in NAMES} == {"Bookshop services", "Bookshop mesh"}


def test_the_datasource_uids_are_fixed() -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert {(d["type"], d["uid"]) for d in datasources} == {("prometheus", "prometheus"), ("jaeger", "jaeger")}


@pytest.mark.parametrize("name", NAMES)
def test_panel_ids_are_unique(name: str) -> None:
    assert dashboards.check_panel_ids(dashboards.load(name)) == []


def test_a_duplicate_panel_id_is_caught() -> None:
    board = copy.deepcopy(dashboards.load("bookshop-services"))
    ids = [p for p in dashboards.panels(board) if p["type"] != "row"]
    ids[1]["id"] = ids[0]["id"]
    assert any(f"panel id {ids[0]['id']} is used by" in p for p in dashboards.check_panel_ids(board))


@pytest.mark.parametrize("name", NAMES)
def test_every_datasource_uid_is_provisioned(name: str, provisioned: set[str]) -> None:
    board = dashboards.load(name)
    assert dashboards.check_datasources(board, provisioned) == []
    assert dashboards.used_uids(board) == {"prometheus", "jaeger"}


def test_an_unprovisioned_uid_is_caught_in_a_panel_and_in_a_link(provisioned: set[str]) -> None:
    text = json.dumps(dashboards.load("bookshop-services"))
    board = json.loads(text.replace('"uid": "prometheus"', '"uid": "prometeus"', 1))
    assert dashboards.check_datasources(board, provisioned) == ["datasource uid 'prometeus' is not provisioned"]
    board = json.loads(text.replace("%22jaeger%22", "%22jaegr%22"))
    assert dashboards.check_datasources(board, provisioned) == ["datasource uid 'jaegr' is not provisioned"]


@pytest.mark.parametrize("name", NAMES)
def test_no_query_hard_codes_an_instance_pod_or_namespace(name: str) -> None:
    assert dashboards.check_no_hard_coded_place(dashboards.load(name)) == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('pod=~\\"$pod\\"', 'pod=\\"marketplace-7d9f\\"', "pod='marketplace-7d9f' is hard-coded"),
    ('{namespace=\\"$namespace\\", pod=~\\"$pod\\"}[',
     '{instance=\\"10.0.0.7:9465\\", pod=~\\"$pod\\"}[', "instance='10.0.0.7:9465' is hard-coded"),
])
def test_a_hard_coded_place_is_caught(old: str, new: str, expected: str) -> None:
    text = json.dumps(dashboards.load("bookshop-services"))
    assert old in text
    problems = dashboards.check_no_hard_coded_place(json.loads(text.replace(old, new, 1)))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("name", NAMES)
def test_the_namespace_and_pod_variables_come_from_prometheus(name: str) -> None:
    variables = {v["name"]: v for v in dashboards.load(name)["templating"]["list"]}
    assert set(variables) == {"namespace", "pod"}
    assert variables["pod"]["includeAll"] and variables["pod"]["multi"] and variables["pod"]["allValue"] == ".*"
    assert all(v["datasource"]["uid"] == "prometheus" for v in variables.values())
    assert "$namespace" in dict(dashboards.variable_queries(dashboards.load(name)))["pod"]


@pytest.mark.parametrize("name", NAMES)
def test_latency_panels_link_to_jaeger(name: str) -> None:
    board = dashboards.load(name)
    assert [p for p in dashboards.panels(board) if dashboards.is_latency_panel(p)]
    assert dashboards.check_latency_links(board, {"jaeger"}) == []


def test_a_latency_panel_without_its_jaeger_link_is_caught() -> None:
    board = copy.deepcopy(dashboards.load("bookshop-services"))
    latency = [p for p in dashboards.panels(board) if dashboards.is_latency_panel(p)]
    latency[0].pop("links")
    assert dashboards.check_latency_links(board, {"jaeger"}) == [
        f"latency panel {latency[0]['id']} {latency[0]['title']!r} has no link to Jaeger"]


def test_the_services_dashboard_covers_what_the_issue_asks() -> None:
    exprs = " ".join(t["expr"] for _, t in dashboards.queries(dashboards.load("bookshop-services")))
    for needle in ("http_server_requests_total", "grpc_server_handled_total", "grpc_code", "histogram_quantile(0.5,",
                   "histogram_quantile(0.95,", "histogram_quantile(0.99,", "by (route, le)",
                   "by (grpc_service, grpc_method, le)", "marketplace_recommendations_fallback_total",
                   "by (reason)", "grpc_server_started_total", "process_resident_memory_bytes",
                   "process_cpu_seconds_total", "build_info"):
        assert needle in exprs, needle


# --- the mesh dashboard ------------------------------------------------------------------------

def _istio_list() -> dict:
    return yaml.safe_load(ISTIO_METRICS.read_text())


def istio_names() -> tuple[set[str], set[str]]:
    """(metric names, label names) the mesh dashboard may use: Istio's standard ones (with the
    histograms' series) and the target labels our scrape config gives the sidecars' metrics."""
    listed = _istio_list()
    metrics = set(listed["metrics"]["counters"])
    for histogram in listed["metrics"]["histograms"]:
        metrics |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    labels = set(listed["labels"])
    jobs = {j["job_name"]: j for j in yaml.safe_load(KUBERNETES_PROMETHEUS.read_text())["scrape_configs"]}
    labels |= {r["target_label"] for r in jobs["istio-sidecars"]["relabel_configs"] if "target_label" in r}
    labels |= {"job", "instance"}  # every target's
    return metrics, labels


def mesh_problems(board: dashboards.Dashboard) -> list[str]:
    metrics, labels = istio_names()
    problems = []
    exprs = [(f"panel {p['id']} {t['refId']}", t["expr"]) for p, t in dashboards.queries(board)]
    exprs += [(f"variable {name}", query) for name, query in dashboards.variable_queries(board)]
    for where, expr in exprs:
        found = promql.names(expr)
        if where.startswith("variable"):
            # label_values(selector, label): the label is the last argument.
            found.labels.add(expr.rsplit(",", 1)[1].strip(" )"))
            found.metrics.discard(expr.rsplit(",", 1)[1].strip(" )"))
        problems += [f"{where}: metric {m} is not one of Istio's standard metrics"
                     for m in sorted(found.metrics - metrics)]
        problems += [f"{where}: label {lbl} is not a standard Istio or target label"
                     for lbl in sorted(found.labels - labels)]
    return problems


def test_the_mesh_dashboard_uses_only_istio_standard_metrics_and_labels() -> None:
    board = dashboards.load("bookshop-mesh")
    used = set().union(*(promql.names(t["expr"]).metrics for _, t in dashboards.queries(board)))
    assert {"istio_requests_total", "istio_request_duration_milliseconds_bucket"} <= used
    labels = set().union(*(promql.names(t["expr"]).labels for _, t in dashboards.queries(board)))
    assert {"source_workload", "destination_workload", "grpc_response_status", "connection_security_policy"} <= labels
    assert mesh_problems(board) == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("istio_request_duration_milliseconds_bucket", "istio_request_duration_seconds_bucket",
     "metric istio_request_duration_seconds_bucket is not one of Istio's standard metrics"),
    ("grpc_response_status) (rate", "grpc_status) (rate", "label grpc_status is not a standard Istio or target label"),
    ("by (source_workload,", "by (source_workloads,", "label source_workloads is not a standard Istio or target label"),
])
def test_a_name_istio_does_not_export_is_caught(old: str, new: str, expected: str) -> None:
    text = json.dumps(dashboards.load("bookshop-mesh"))
    assert old in text
    problems = mesh_problems(json.loads(text.replace(old, new, 1)))
    assert any(expected in p for p in problems), problems


def _as_rules(board: dashboards.Dashboard) -> dict:
    """The panel queries as recording rules, so `promtool check rules` parses each (with the
    dashboard variables replaced by values of the right form)."""
    variables = {"namespace": "bookshop", "pod": ".*", "__rate_interval": "1m", "__interval": "15s"}
    rules = [{"record": f"panel_{p['id']}_{t['refId']}", "expr": promql.substitute(t["expr"], variables)}
             for p, t in dashboards.queries(board)]
    return {"groups": [{"name": board["uid"], "rules": rules}]}


def _promtool_check(board: dashboards.Dashboard, tmp_path: Path):
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(_as_rules(board)))
    return run([require_tool("promtool"), "check", "rules", str(path)])


@pytest.mark.parametrize("name", NAMES)
def test_promtool_parses_every_panel_query(name: str, tmp_path: Path) -> None:
    board = dashboards.load(name)
    result = _promtool_check(board, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(list(dashboards.queries(board)))} rules found" in result.stdout


def test_a_query_promtool_cannot_parse_is_caught(tmp_path: Path) -> None:
    text = json.dumps(dashboards.load("bookshop-mesh"))
    unbalanced = text.replace("sum by (destination_workload) (rate(", "sum by (destination_workload) (rate((", 1)
    broken = json.loads(unbalanced)
    result = _promtool_check(broken, tmp_path)
    assert result.returncode != 0


def istio_list_problems(listed: dict, module: Path) -> list[str]:
    """Entries of the Istio list not found in the file of the module it cites."""
    problems = []
    if module.name != f"{listed['source']['module'].rsplit('/', 1)[-1]}@{listed['source']['version']}":
        problems.append(f"{module.name} is not the listed module version")
    if (module / "VERSION").read_text().strip() != listed["source"]["release"]:
        problems.append("the module's VERSION is not the listed release")
    telemetry = (module / listed["metrics"]["file"]).read_text()
    for metric in listed["metrics"]["counters"] + listed["metrics"]["histograms"]:
        if f'"{metric.removeprefix("istio_")}"' not in telemetry:
            problems.append(f"metric {metric} is not in {listed['metrics']['file']}")
    for label, file in listed["labels"].items():
        if not re.search(rf"(?<![\w.]){label}(?!\w)", (module / file).read_text()):
            problems.append(f"label {label} is not in {file}")
    return problems


@pytest.fixture(scope="module")
def istio_module() -> Path:
    return required_dir("BOOKSHOP_ISTIO_MODULE", "the istio.io/istio module directory tools/istio/go.mod pins")


def test_the_istio_list_is_found_in_the_pinned_istio_source(istio_module: Path) -> None:
    assert istio_list_problems(_istio_list(), istio_module) == []


def test_a_listed_name_istio_does_not_have_is_caught(istio_module: Path) -> None:
    listed = copy.deepcopy(_istio_list())
    listed["metrics"]["histograms"].append("istio_request_duration_seconds")
    listed["labels"]["grpc_status_code"] = "tests/integration/ambient/baseline_test.go"
    assert istio_list_problems(listed, istio_module) == [
        "metric istio_request_duration_seconds is not in pilot/pkg/model/telemetry.go",
        "label grpc_status_code is not in tests/integration/ambient/baseline_test.go"]
