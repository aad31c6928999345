"""Every panel of the Bookshop services dashboard, evaluated by a real Prometheus (Debian's)
scraping both real services, after a known mix of traffic: successes, invalid requests (the
400 page, a direct gRPC call with an invalid category), unknown paths, and an outage of
recommendations (degraded pages). Each panel's queries run through Prometheus's HTTP API over
the dashboard's own time range, with the dashboard variables substituted as Grafana would, and
must return data; the panels the mix is designed to light up must show it. The rules load
into the same Prometheus and evaluate without error."""

from __future__ import annotations

import copy
import math
import subprocess
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest
import yaml

import dashboards
import promql
from bookshop import Bookshop
from config_files import COMPOSE_PROMETHEUS, DATASOURCES, RULES_DIR
from loopback import Process, free_ports, get_json, http_get, wait_until
from outside_tools import require_tool

SCRAPE_INTERVAL = "1s"
# RecommendationRequest{user_id: 1, category: UNSPECIFIED, max_results: 3}, encoded by hand
# (fields 1 and 3 as varints): recommendations must answer INVALID_ARGUMENT.
INVALID_REQUEST = bytes([0x08, 0x01, 0x18, 0x03])
RECOMMEND = "/recommendations.v1.Recommendations/Recommend"


def prometheus_config(shop: Bookshop, port: int) -> dict:
    """observability/prometheus/prometheus.yml (compose's) pointed at the loopback ports:
    the same jobs, the same target labels, the same rule files; scraped every second."""
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    config["global"] = {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL}
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    admin = {"recommendations": shop.recommendations_admin, "marketplace": shop.marketplace_admin,
             "prometheus": port}
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in admin:  # the jaeger job: no Jaeger in this test
            for static in job["static_configs"]:
                static["targets"] = [f"127.0.0.1:{admin[job['job_name']]}"]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str | float) -> dict:
        answer = get_json(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=30)
        assert answer["status"] == "success", answer
        return answer["data"]

    def value(self, expr: str) -> float:
        result = self.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else math.nan


def grafana_variables(prometheus: Prometheus, board: dict, start: float, end: float) -> dict[str, str]:
    """$namespace: the first value its query finds (Grafana's default selection); $pod: All,
    i.e. its allValue; $__interval and $__rate_interval as Grafana computes them for the
    dashboard's range with the datasource's scrape interval (datasources.yaml)."""
    scrape = next(d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"] if d["uid"] == "prometheus")
    scrape_seconds = promql.seconds(scrape["jsonData"]["timeInterval"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ns_query = variables["namespace"]["query"]["query"]
    metric, label = ns_query.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
    namespaces = prometheus.api(f"label/{label.strip()}/values", **{"match[]": metric, "start": start, "end": end})
    assert namespaces, f"{ns_query} found no namespace"
    # 1000 data points: a panel about 1000 pixels wide.
    interval, rate_interval = promql.intervals(end - start, 1000, scrape_seconds)
    return {"namespace": sorted(namespaces)[0], "pod": variables["pod"]["allValue"],
            "__interval": promql.format_seconds(interval), "__rate_interval": promql.format_seconds(rate_interval),
            "__step": interval}


def panel_range(board: dict, panel: dict, now: float) -> tuple[float, float]:
    """The range a panel queries: the dashboard's (now-…), or the panel's own `timeFrom`."""
    time_range = board["time"]
    assert time_range["to"] == "now" and time_range["from"].startswith("now-"), time_range
    length = panel.get("timeFrom") or time_range["from"].removeprefix("now-")
    return now - promql.seconds(length), now


def evaluate(prometheus: Prometheus, panel: dict, variables: dict[str, str], start: float, end: float) -> dict:
    """refId -> the series a panel's query returns: {labels: [finite values]}."""
    out = {}
    for target in panel["targets"]:
        expr = promql.substitute(target["expr"], {k: v for k, v in variables.items() if not k.startswith("__step")})
        if target.get("instant"):
            result = prometheus.api("query", query=expr, time=end)["result"]
            samples = [(r["metric"], [r["value"]]) for r in result]
        else:
            result = prometheus.api("query_range", query=expr, start=start, end=end, step=variables["__step"])["result"]
            samples = [(r["metric"], r["values"]) for r in result]
        out[target["refId"]] = {
            tuple(sorted(metric.items())): [float(v) for _, v in values if math.isfinite(float(v))]
            for metric, values in samples}
    return out


def panel_problem(series_by_ref: dict) -> str | None:
    """Why a panel would show nothing: a query with no series, or no finite value."""
    for ref, series in series_by_ref.items():
        if not series:
            return f"query {ref} returned no series"
        if not any(series.values()):
            return f"query {ref} returned only NaN/Inf"
    return None


# Panel title -> (refId, label, value) series that the traffic mix must show with a value > 0.
EXPECTED = {
    "Page requests by route and status (marketplace)": [("A", "status", "200"), ("A", "status", "400"),
                                                        ("A", "route", "unmatched")],
    "RPCs by method and code (recommendations)": [("A", "grpc_code", "OK"), ("A", "grpc_code", "InvalidArgument")],
    "Page error ratio by status (marketplace)": [("A", "status", "400"), ("A", "status", "404")],
    "RPC error ratio by code (recommendations)": [("A", "grpc_code", "InvalidArgument")],
    "Call error ratio by code (marketplace → recommendations)": [("A", "grpc_code", "Unavailable")],
    "Page latency p50 / p95 / p99 per route (marketplace)": [("A", "route", "/"), ("C", "route", "/")],
    "RPC latency p50 / p95 / p99 per method (recommendations)": [("A", "grpc_method", "Recommend"),
                                                                 ("C", "grpc_method", "Recommend")],
    "Call latency p50 / p95 / p99 per method (marketplace → recommendations)": [("C", "grpc_method", "Recommend")],
    "Degraded pages by reason (marketplace)": [("A", "reason", "unavailable")],
    "Catalog size by category (recommendations)": [("A", "category", "mystery")],
    "Resident memory per pod": [("A", "pod", "recommendations"), ("A", "pod", "marketplace")],
    "Build versions": [("A", "service", "recommendations"), ("A", "service", "marketplace")],
}


# Panel title -> series that must be there, whatever their value. The process collector of the
# `prometheus` crate counts CPU in whole seconds, which a short test does not reach: its rate
# is 0 here, but both pods' series must exist.
PRESENT = {
    "CPU per pod": [("A", "pod", "recommendations"), ("A", "pod", "marketplace")],
    "In-flight work": [("A", "pod", "recommendations"), ("B", "pod", "marketplace")],
}


def missing_expected(title: str, series_by_ref: dict) -> list[str]:
    missing = []
    for ref, label, value in EXPECTED.get(title, []):
        shown = [max(values) for labels, values in series_by_ref[ref].items() if (label, value) in labels and values]
        if not shown or max(shown) <= 0:
            missing.append(f"{title!r} {ref}: no {label}={value!r} above 0")
    for ref, label, value in PRESENT.get(title, []):
        if not any((label, value) in labels and values for labels, values in series_by_ref[ref].items()):
            missing.append(f"{title!r} {ref}: no {label}={value!r}")
    return missing


@pytest.fixture(scope="module")
def scraped(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Both services and Prometheus, after the traffic mix, with the mix fully scraped."""
    tmp = tmp_path_factory.mktemp("prometheus")
    logs = tmp / "logs"
    logs.mkdir()
    shop = Bookshop(bin_dir, logs)
    prometheus_process = None
    try:
        shop.start()
        port, = free_ports(1)
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(shop, port)))
        prometheus_process = Process("prometheus", [
            require_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], logs / "prometheus.log")
        prometheus_process.start_ready(f"http://127.0.0.1:{port}/-/ready")
        prometheus = Prometheus(f"http://127.0.0.1:{port}")
        up = "sum(up{job=~\"recommendations|marketplace\"})"
        wait_until("both services scraped", lambda: prometheus.value(up) == 2, timeout=60)

        # The mix, each kind in two rounds with a scrape between them: Prometheus sees a
        # counter only from its first scrape on, so what happens before that is no rate.
        def scraped_at_least(expr: str, value: float) -> None:
            wait_until(f"{expr} >= {value}", lambda: prometheus.value(expr) >= value, timeout=60)

        def pages(count: int) -> None:
            for category in ("mystery", "science_fiction", "self_help") * count:
                status, _, body = shop.page(f"?category={category}")
                assert status == 200 and body.count("<li>") == 3, (status, body[:300])

        def bad_pages(count: int) -> None:
            for _ in range(count):
                assert shop.page("?category=poetry")[0] == 400
                assert shop.page("no-such-page")[0] == 404

        pages(2)
        bad_pages(1)
        scraped_at_least('sum(http_server_requests_total{status="404"})', 1)
        pages(2)
        bad_pages(4)

        # An outage of recommendations: pages served without recommendations.
        def degraded_pages(count: int) -> None:
            for _ in range(count):
                status, _, body = shop.page()
                assert status == 200 and "<li>" not in body, (status, body[:300])

        shop.recommendations.stop()
        degraded_pages(2)
        scraped_at_least('sum(grpc_client_handled_total{grpc_code="Unavailable"})', 1)
        degraded_pages(3)
        shop.start_recommendations()

        # Back: successes again, and invalid requests straight to recommendations over gRPC.
        def invalid_calls(count: int) -> None:
            with grpc.insecure_channel(f"127.0.0.1:{shop.grpc_port}") as channel:
                call = channel.unary_unary(RECOMMEND)
                for _ in range(count):
                    with pytest.raises(grpc.RpcError) as err:
                        call(INVALID_REQUEST, timeout=10)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        pages(1)
        invalid_calls(1)
        scraped_at_least('sum(grpc_server_handled_total{grpc_code="InvalidArgument"})', 1)
        pages(2)
        invalid_calls(4)

        # Wait until Prometheus holds the end of the mix (bounded).
        scraped_at_least('sum(grpc_server_handled_total{grpc_code="InvalidArgument"})', 5)
        scraped_at_least('sum(marketplace_recommendations_fallback_total{reason="unavailable"})', 5)
        scraped_at_least('sum(http_server_requests_total{status="400"})', 5)
        scraped_at_least('sum(http_server_requests_total{route="/", status="200"})', 3 * 7 + 5)
        # Rate windows need two samples past the last request: wait for the scrapes themselves
        # (each target's latest, two intervals after the last request, makes three since).
        last_request = time.time()
        scraped_at_least('min(timestamp(up{job=~"recommendations|marketplace"}))',
                         last_request + 2 * promql.seconds(SCRAPE_INTERVAL))
        yield prometheus
    finally:
        if prometheus_process is not None:
            prometheus_process.stop()
        shop.stop()


@pytest.fixture(scope="module")
def services_board() -> dict:
    return dashboards.load("bookshop-services")


def _panel_ids() -> list[int]:
    return [p["id"] for p in dashboards.panels(dashboards.load("bookshop-services")) if p.get("targets")]


@pytest.mark.parametrize("panel_id", _panel_ids())
def test_the_panel_shows_data_from_the_real_services(panel_id: int, scraped: Prometheus, services_board: dict) -> None:
    [panel] = [p for p in dashboards.panels(services_board) if p["id"] == panel_id]
    start, end = panel_range(services_board, panel, time.time())
    variables = grafana_variables(scraped, services_board, start, end)
    series = evaluate(scraped, panel, variables, start, end)
    assert panel_problem(series) is None, f"{panel['title']!r}: {panel_problem(series)}"
    assert missing_expected(panel["title"], series) == []


def test_every_panel_has_an_expectation_of_the_mix(services_board: dict) -> None:
    titles = {p["title"] for p in dashboards.panels(services_board) if p.get("targets")}
    assert set(EXPECTED) | set(PRESENT) == titles


def test_a_panel_with_a_misspelt_metric_is_caught(scraped: Prometheus, services_board: dict) -> None:
    [panel] = [copy.deepcopy(p) for p in dashboards.panels(services_board)
               if p.get("title") == "Degraded pages by reason (marketplace)"]
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace(
        "marketplace_recommendations_fallback_total", "marketplace_recommendation_fallback_total")
    start, end = panel_range(services_board, panel, time.time())
    series = evaluate(scraped, panel, grafana_variables(scraped, services_board, start, end), start, end)
    assert panel_problem(series) == "query A returned no series"


def test_a_panel_filtering_on_a_label_the_services_lack_is_caught(scraped: Prometheus, services_board: dict) -> None:
    [panel] = [copy.deepcopy(p) for p in dashboards.panels(services_board)
               if p.get("title") == "RPC error ratio by code (recommendations)"]
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("grpc_code!=", "grpc_status=")
    start, end = panel_range(services_board, panel, time.time())
    series = evaluate(scraped, panel, grafana_variables(scraped, services_board, start, end), start, end)
    assert panel_problem(series) == "query A returned no series"


def test_an_expected_series_the_mix_did_not_produce_is_caught(scraped: Prometheus, services_board: dict) -> None:
    [panel] = [p for p in dashboards.panels(services_board)
               if p.get("title") == "Degraded pages by reason (marketplace)"]
    start, end = panel_range(services_board, panel, time.time())
    series = evaluate(scraped, panel, grafana_variables(scraped, services_board, start, end), start, end)
    # The counter starts at 0 for every reason, so the series exists; only `unavailable` rose.
    assert panel_problem(series) is None
    assert missing_expected("Degraded pages by reason (marketplace)", {"A": {
        labels: values for labels, values in series["A"].items() if ("reason", "unavailable") not in labels}})


def test_the_alert_rules_load_and_evaluate_in_the_real_prometheus(scraped: Prometheus) -> None:
    groups = scraped.api("rules")["groups"]
    files = {Path(g["file"]).name for g in groups}
    assert files == {p.name for p in RULES_DIR.glob("*.yml")}
    assert [(r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"]
            if r["health"] != "ok"] == []
    # The marketplace's own ratios exist for the mix's namespace: no 5xx, and no page slower
    # than 1 s (the `le` the rule selects is the one the real exposition writes).
    assert scraped.value('namespace:marketplace_http_errors:ratio_rate5m{namespace="bookshop"}') == 0
    assert scraped.value('namespace:marketplace_http_slow:ratio_rate5m{namespace="bookshop"}') == 0


def test_the_prometheus_test_config_is_the_compose_config(bin_dir: Path, tmp_path: Path) -> None:
    # What the panels were proven against differs from compose's only in targets, intervals
    # and the rule path: jobs and target labels are the same.
    shop = Bookshop(bin_dir, tmp_path)
    ours = prometheus_config(shop, 9090)
    compose = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    labels = {j["job_name"]: [s["labels"] for s in j["static_configs"]] for j in compose["scrape_configs"]}
    assert {j["job_name"]: [s["labels"] for s in j["static_configs"]] for j in ours["scrape_configs"]} == {
        name: labels[name] for name in ("recommendations", "marketplace", "prometheus")}
    result = subprocess.run([require_tool("promtool"), "check", "config", "/dev/stdin"],
                            input=yaml.safe_dump(ours), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def exemplar_problem(bodies: list[str], datasources: list[dict]) -> str | None:
    """Grafana's exemplar links and the services' exposition agree: a trace link on exemplars
    that no service writes is dead configuration."""
    # OpenMetrics writes an exemplar after the sample: `… 3 # {trace_id="…"} 0.12`.
    emitted = any(" # {" in line for body in bodies for line in body.splitlines() if not line.startswith("#"))
    linked = [d["uid"] for d in datasources if d.get("jsonData", {}).get("exemplarTraceIdDestinations")]
    if linked and not emitted:
        return f"datasource {linked[0]} links exemplars to traces, but no service writes exemplars"
    if emitted and not linked:
        return "the services write exemplars, but no datasource links them to traces"
    return None


def _exposition(prometheus: Prometheus) -> list[str]:
    """Each service's /metrics as Prometheus scrapes it, asking for OpenMetrics (the only
    format that carries exemplars)."""
    targets = prometheus.api("targets")["activeTargets"]
    urls = [t["scrapeUrl"] for t in targets if t["labels"]["job"] in ("recommendations", "marketplace")]
    assert len(urls) == 2, urls
    bodies = []
    for url in urls:
        status, headers, body = http_get(url, headers={"Accept": "application/openmetrics-text;version=1.0.0"})
        assert status == 200 and "_bucket{" in body, (url, status, body[:300])
        bodies.append(body)
    return bodies


def test_grafana_links_exemplars_only_if_the_services_write_them(scraped: Prometheus) -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert exemplar_problem(_exposition(scraped), datasources) is None


def test_an_exemplar_link_on_metrics_without_exemplars_is_caught(scraped: Prometheus) -> None:
    # The datasource as it was: Grafana would show a trace link that never appears.
    datasources = copy.deepcopy(yaml.safe_load(DATASOURCES.read_text())["datasources"])
    datasources[0]["jsonData"]["exemplarTraceIdDestinations"] = [{"name": "trace_id", "datasourceUid": "jaeger"}]
    assert exemplar_problem(_exposition(scraped), datasources) == (
        "datasource prometheus links exemplars to traces, but no service writes exemplars")
