"""The dashboards' JSON, offline: unique panel ids, only provisioned datasources, no hard-coded
place, latency panels that link to Jaeger; the mesh dashboard's queries parse (promtool) and use
only Istio's standard metrics and labels (observability/istio/standard-metrics.yaml, itself
checked against the pinned Istio source). Each check is shown failing on a broken copy."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import alert_rules
import dashboards
import promql
from config_files import DATASOURCES, ISTIO_INSTALL, ISTIO_METRICS, KUBERNETES_PROMETHEUS, RULES_DIR
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
    variables = {v["name"]: v for v in dashboards.load(name)["templating"]["list"] if v["type"] == "query"}
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


# --- the mesh dashboard's reporter switch and gateway row ----------------------------------------

def _gateway_row(board: dashboards.Dashboard) -> list[dict]:
    """The panels under the gateway row (the first row, up to the next one)."""
    panels = list(dashboards.panels(board))
    rows = [i for i, p in enumerate(panels) if p["type"] == "row"]
    assert panels[rows[0]]["title"].startswith("The edge"), panels[rows[0]]["title"]
    return panels[rows[0] + 1:rows[1]]


def reporter_problems(board: dashboards.Dashboard) -> list[str]:
    """The gateway row reads the gateway's own report (reporter="source", source_workload
    $gateway); every other query, and the variables, follow the $reporter switch."""
    gateway_ids = {p["id"] for p in _gateway_row(board)}
    problems = []
    exprs = [(p["id"], f"panel {p['id']} {t['refId']}", t["expr"]) for p, t in dashboards.queries(board)]
    exprs += [(None, f"variable {name}", query) for name, query in dashboards.variable_queries(board)]
    for panel_id, where, expr in exprs:
        reporters = [(op, value) for label, op, value in promql.names(expr).matchers if label == "reporter"]
        expected = [("=", "source")] if panel_id in gateway_ids else [("=", "$reporter")]
        if not reporters or set(reporters) != set(expected):
            problems.append(f"{where}: reporter {reporters} is not {expected[0][1]}")
        if panel_id in gateway_ids and 'source_workload="$gateway"' not in expr:
            problems.append(f"{where}: does not select the gateway's workload")
    return problems


def test_the_mesh_dashboard_switches_reporter_and_shows_the_gateway() -> None:
    board = dashboards.load("bookshop-mesh")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert [o["value"] for o in variables["reporter"]["options"]] == ["destination", "source"]
    assert variables["reporter"]["current"]["value"] == "destination"
    titles = {p["title"] for p in _gateway_row(board)}
    assert {"5xx at the gateway by response flag", "Responses with a response flag at the gateway"} <= titles
    flags = [p for p in _gateway_row(board) if "response_flags" in promql.names(
        " ".join(t["expr"] for t in p["targets"])).labels]
    assert len(flags) == 2
    assert reporter_problems(board) == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    # A traffic panel still pinned to the receiving sidecar: the switch does nothing to it.
    ('(rate(istio_requests_total{reporter=\\"$reporter\\", destination_workload_namespace=\\"$namespace\\", '
     'pod=~\\"$pod\\"}[',
     '(rate(istio_requests_total{reporter=\\"destination\\", destination_workload_namespace=\\"$namespace\\", '
     'pod=~\\"$pod\\"}[', "reporter [('=', 'destination')] is not $reporter"),
    # The gateway row reading the sidecars' report: a 503 the gateway made never shows.
    ('istio_requests_total{reporter=\\"source\\", source_workload=\\"$gateway\\"',
     'istio_requests_total{reporter=\\"destination\\", source_workload=\\"$gateway\\"',
     "reporter [('=', 'destination')] is not source"),
])
def test_a_query_that_ignores_the_reporter_switch_is_caught(old: str, new: str, expected: str) -> None:
    text = json.dumps(dashboards.load("bookshop-mesh"), ensure_ascii=False)
    assert old in text, old
    problems = reporter_problems(json.loads(text.replace(old, new, 1)))
    assert any(expected in p for p in problems), problems


def _gateway_variable(board: dashboards.Dashboard) -> set[str]:
    [gateway] = [v for v in board["templating"]["list"] if v["name"] == "gateway"]
    return {o["value"] for o in gateway["options"]}


def test_the_gateway_row_and_the_edge_slis_read_the_installed_gateway() -> None:
    installed = alert_rules.installed_gateways(ISTIO_INSTALL)
    assert _gateway_variable(dashboards.load("bookshop-mesh")) == installed
    assert alert_rules.edge_gateways(RULES_DIR) == installed


def test_a_gateway_variable_naming_another_gateway_is_caught() -> None:
    text = json.dumps(dashboards.load("bookshop-mesh"), ensure_ascii=False)
    broken = json.loads(text.replace('"value": "istio-ingressgateway"', '"value": "ingressgateway"'))
    assert _gateway_variable(broken) == {"ingressgateway"} != alert_rules.installed_gateways(ISTIO_INSTALL)


def _as_rules(board: dashboards.Dashboard) -> dict:
    """The panel queries as recording rules, so `promtool check rules` parses each (with the
    dashboard variables replaced by values of the right form)."""
    variables = {"namespace": "bookshop", "pod": ".*", "__rate_interval": "1m", "__interval": "15s",
                 "reporter": "destination", "gateway": "istio-ingressgateway"}
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
    gateway = listed["gateway"]
    if f'source_workload=\\"istio-ingressgateway\\", reporter=\\"{gateway["reporter"]}\\"' not in (
            module / gateway["file"]).read_text():
        problems.append(f"{gateway['file']} does not select the gateway with reporter={gateway['reporter']}")
    agent = listed["agent"]
    if f'WrapRegistererWithPrefix("{agent["prefix"]}"' not in (module / agent["prefix_file"]).read_text():
        problems.append(f"{agent['prefix_file']} does not register the prefix {agent['prefix']}")
    source = (module / agent["file"]).read_text()
    for metric in agent["counters"]:
        if f'"{metric.removeprefix(agent["prefix"])}"' not in source:
            problems.append(f"metric {metric} is not in {agent['file']}")
    for label, values in agent["labels"].items():
        if f'CreateLabel("{label}")' not in source:
            problems.append(f"label {label} is not in {agent['file']}")
        problems += [f"{label}={value} is not in {agent['file']}" for value in values if f'"{value}"' not in source]
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
    listed["gateway"]["reporter"] = "destination"
    listed["agent"]["counters"].append("istio_agent_scrape_errors_total")
    listed["agent"]["labels"]["type"].append("app")
    assert istio_list_problems(listed, istio_module) == [
        "metric istio_request_duration_seconds is not in pilot/pkg/model/telemetry.go",
        "label grpc_status_code is not in tests/integration/ambient/baseline_test.go",
        "manifests/addons/dashboards/istio-performance-dashboard.json does not select the gateway with "
        "reporter=destination",
        "metric istio_agent_scrape_errors_total is not in pilot/cmd/pilot-agent/metrics/metrics.go",
        "type=app is not in pilot/cmd/pilot-agent/metrics/metrics.go"]


def rule_problems(rules_dir: Path) -> list[str]:
    """The rules that read Istio's metrics use only the listed names: the standard metrics and
    labels, the agent's metrics and labels, the target labels; and read the gateway's report
    the way Istio's own dashboards do."""
    metrics, labels = istio_names()
    listed = _istio_list()
    metrics |= set(listed["agent"]["counters"])
    labels |= set(listed["agent"]["labels"]) | {"app"}
    problems = []
    for rule in alert_rules.rules(rules_dir):
        found = promql.names(rule["expr"])
        istio = {m for m in found.metrics if m.startswith("istio_")}
        if not istio:
            continue
        name = rule.get("record") or rule.get("alert")
        problems += [f"{name}: metric {m} is not one of Istio's" for m in sorted(istio - metrics)]
        problems += [f"{name}: label {lbl} is not one of Istio's" for lbl in sorted(found.labels - labels)]
        reporters = {value for label, _, value in found.matchers if label == "reporter"}
        if reporters - {listed["gateway"]["reporter"]}:
            problems.append(f"{name}: reporter {sorted(reporters)} is not how a gateway reports")
    return problems


def test_the_rules_use_only_istio_names() -> None:
    assert rule_problems(RULES_DIR) == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("destination_service_name=", "destination_svc_name=", "label destination_svc_name is not one of Istio's"),
    ("istio_request_duration_milliseconds_count", "istio_request_duration_seconds_count",
     "metric istio_request_duration_seconds_count is not one of Istio's"),
    ('reporter="source"', 'reporter="gateway"', "reporter ['gateway'] is not how a gateway reports"),
])
def test_a_rule_with_a_name_istio_does_not_export_is_caught(tmp_path: Path, old: str, new: str, expected: str) -> None:
    broken = tmp_path / "rules"
    shutil.copytree(RULES_DIR, broken)
    path = broken / "slo-latency.yml"
    path.write_text(path.read_text().replace(old, new))
    assert any(expected in p for p in rule_problems(broken)), rule_problems(broken)
