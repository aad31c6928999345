"""The Prometheus configuration and alert rules, checked by promtool: configs and rules load,
and every alert's unit tests (observability/prometheus/tests) pass, with firing and silent
cases. Each check is also shown failing on a copy broken on purpose."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from config_files import (COMPOSE_PROMETHEUS, ISTIO_METRICS, KUBERNETES_PROMETHEUS, OBSERVABILITY, PROMETHEUS_DIR,
                          RULE_TESTS_DIR, RULES_DIR)
from outside_tools import require_tool, run


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR):
    return run([require_tool("promtool"), *args], cwd=cwd)


def _copy_prometheus_dir(tmp_path: Path) -> Path:
    target = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, target)
    return target


def _rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def _alerts() -> set[str]:
    return {rule["alert"] for path in _rule_files() for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


# --- configs ----------------------------------------------------------------------------------

def test_promtool_accepts_the_compose_config_and_its_rules() -> None:
    result = promtool("check", "config", str(COMPOSE_PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_rule_files())} rule files found" in result.stdout


def kubernetes_config_for_debian_promtool(tmp_path: Path) -> Path:
    """kubernetes.yml with each `kubernetes_sd_configs` replaced by an empty static config.

    Debian's Prometheus is built without Kubernetes service discovery (its promtool rejects
    the field), so this checks everything else (relabelling, rule files, globals) with it;
    the discovery blocks themselves are checked by test_the_cluster_discovers_pods_only."""
    config = yaml.safe_load(KUBERNETES_PROMETHEUS.read_text())
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": []}]
    target = _copy_prometheus_dir(tmp_path) / "kubernetes.yml"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def test_promtool_accepts_the_cluster_config_and_its_rules(tmp_path: Path) -> None:
    result = promtool("check", "config", str(kubernetes_config_for_debian_promtool(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_rule_files())} rule files found" in result.stdout


def test_a_broken_relabelling_is_caught(tmp_path: Path) -> None:
    path = kubernetes_config_for_debian_promtool(tmp_path)
    path.write_text(path.read_text().replace("action: keep", "action: keeep", 1))
    result = promtool("check", "config", str(path))
    assert result.returncode != 0
    assert "keeep" in result.stdout + result.stderr


def test_the_cluster_discovers_pods_only() -> None:
    # Pods are all the ClusterRole lets Prometheus list (prometheus/prometheus.yaml).
    config = yaml.safe_load(KUBERNETES_PROMETHEUS.read_text())
    discovery = [sd for job in config["scrape_configs"] for sd in job.get("kubernetes_sd_configs", [])]
    assert discovery and all(sd == {"role": "pod"} for sd in discovery)
    rbac = list(yaml.safe_load_all((PROMETHEUS_DIR / "prometheus.yaml").read_text()))
    [role] = [d for d in rbac if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_istio_standard_metrics_are_scraped_once() -> None:
    # Merged metrics (kubernetes-pods) drop Istio's standard metrics; the sidecar job keeps
    # only those: every one of them, and none of the agent's own.
    jobs = {job["job_name"]: job for job in yaml.safe_load(KUBERNETES_PROMETHEUS.read_text())["scrape_configs"]}
    [drop] = [r for r in jobs["kubernetes-pods"]["metric_relabel_configs"] if r["action"] == "drop"]
    [keep] = [r for r in jobs["istio-sidecars"]["metric_relabel_configs"] if r["action"] == "keep"]
    assert drop["source_labels"] == keep["source_labels"] == ["__name__"]
    assert drop["regex"] == keep["regex"]
    assert jobs["istio-sidecars"]["metrics_path"] == "/stats/prometheus"
    standard = re.compile(f"^(?:{keep['regex']})$")  # Prometheus anchors relabel regexes
    listed = yaml.safe_load(ISTIO_METRICS.read_text())["metrics"]
    names = listed["counters"] + [f"{h}_{s}" for h in listed["histograms"] for s in ("bucket", "sum", "count")]
    assert [n for n in names if not standard.match(n)] == []
    others = ["istio_agent_pilot_xds", "istio_build", "envoy_cluster_upstream_rq_total", "grpc_server_handled_total",
              "istio_request_duration_milliseconds"]
    assert [n for n in others if standard.match(n)] == []


# --- rules ------------------------------------------------------------------------------------

def test_promtool_accepts_every_rule_file() -> None:
    result = promtool("check", "rules", *map(str, _rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rule_with_a_syntax_error_is_caught(tmp_path: Path) -> None:
    rules = _copy_prometheus_dir(tmp_path) / "rules/bookshop-alerts.yml"
    rules.write_text(rules.read_text().replace("expr: up == 0", "expr: up == = 0"))
    result = promtool("check", "rules", str(rules))
    assert result.returncode != 0


def test_the_issue_s_alerts_exist() -> None:
    assert _alerts() == {"MarketplaceErrorBudgetBurnFast", "MarketplaceErrorBudgetBurnSlow",
                         "MarketplaceLatencyBudgetBurnFast", "MarketplaceLatencyBudgetBurnSlow",
                         "MarketplaceServingDegradedPages", "MarketplaceAbsent", "ScrapeTargetDown",
                         "AppMetricsScrapeFailing"}


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(RULE_TESTS_DIR.glob("*.test.yml"))
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def _unit_test_cases() -> dict[str, dict[str, int]]:
    """alert -> how many of its evaluations expect it firing, and silent."""
    cases: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS_DIR.glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "firing" if case.get("exp_alerts") else "silent"
                cases.setdefault(case["alertname"], {"firing": 0, "silent": 0})[kind] += 1
    return cases


def test_every_alert_has_cases_that_fire_and_cases_that_stay_silent() -> None:
    cases = _unit_test_cases()
    assert set(cases) == _alerts()
    assert {alert: counts for alert, counts in cases.items() if not counts["firing"] or not counts["silent"]} == {}


def test_every_rule_file_is_unit_tested_and_every_rule_test_names_rule_files() -> None:
    tested: set[Path] = set()
    for path in RULE_TESTS_DIR.glob("*.test.yml"):
        for rule_file in yaml.safe_load(path.read_text())["rule_files"]:
            tested.add((path.parent / rule_file).resolve())
    assert tested == {p.resolve() for p in _rule_files()}


# Pieces of the rules that the broken copies below change.
EDGE_SELECTOR = '''{
              reporter="source", source_workload="istio-ingressgateway",
              destination_service_name="marketplace"'''
EDGE_5M_TOTAL = f"  / sum by (destination_service_namespace) (rate(istio_requests_total{EDGE_SELECTOR}}}[5m]))"
APP_5M_TOTAL = '/ sum by (namespace) (rate(http_server_requests_total{app="marketplace", route!="unmatched"}[5m]))'
FAST_BURN = re.search(r"alert: MarketplaceErrorBudgetBurnFast\n        expr: \|\n(.*?)        for:",
                      (RULES_DIR / "slo-availability.yml").read_text(), re.S).group(1)
EDGE_5M_FAST = f'(rate(istio_request_duration_milliseconds_bucket{EDGE_SELECTOR}, le=~"1000|1000.0"}}[5m]))'


@pytest.mark.parametrize(("rule_file", "old", "new"), [
    # An alert that fires on one failed scrape: the silent case (a restart's blip) fails.
    ("bookshop-alerts.yml", "expr: up == 0\n        for: 5m", "expr: up == 0\n        for: 1m"),
    # The short window dropped from the fast burn: it no longer stops when the errors do.
    ("slo-availability.yml",
     "and destination_service_namespace:marketplace_edge_errors:ratio_rate5m > 14.4 * 0.001",
     "and destination_service_namespace:marketplace_edge_errors:ratio_rate1h > 14.4 * 0.001"),
    # The degraded-pages ratio threshold lowered below the rare-fallback case.
    ("bookshop-alerts.yml", "> 0.05\n", "> 0.005\n"),
    # The SLI read from the marketplace's own counter, as it was: the mesh's 503s and 403s
    # spend no budget, so the page they should raise stays silent.
    ("slo-availability.yml", FAST_BURN, FAST_BURN.replace("destination_service_namespace:marketplace_edge_errors",
                                                          "namespace:marketplace_http_errors")),
    # 403 no longer an error: a bad policy push spends nothing.
    ("slo-availability.yml", 'response_code=~"5..|403"}[5m]', 'response_code=~"5.."}[5m]'),
    # The edge not scoped to the marketplace: another app behind the gateway pages us.
    ("slo-availability.yml", 'destination_service_name="marketplace"', 'destination_service_name=~".+"'),
    # The receiving sidecar's report instead of the gateway's: a 503 the gateway made (no
    # healthy upstream) never reaches a sidecar.
    ("slo-availability.yml", EDGE_5M_TOTAL, EDGE_5M_TOTAL.replace('reporter="source"', 'reporter="destination"')),
    # Unknown paths back in the marketplace's ratio: scanners' 404s dilute its errors.
    ("slo-availability.yml", APP_5M_TOTAL, APP_5M_TOTAL.replace(', route!="unmatched"', "")),
    # The 1 s bucket written one way only: a Prometheus 3's "1000.0" reads as all slow.
    ("slo-latency.yml", EDGE_5M_FAST, EDGE_5M_FAST.replace('le=~"1000|1000.0"', 'le="1000"')),
    # The latency alerts on ten times the budget: 20% slow no longer pages.
    ("slo-latency.yml", " * 0.01\n", " * 0.1\n"),
    # absent() of the bare series: a marketplace whose only pod is down still "exists".
    ("bookshop-alerts.yml", 'absent(up{app="marketplace"} == 1)', 'absent(up{app="marketplace"})'),
    # The scrape-failure alert counting Envoy's failures too: the silent case fails.
    ("bookshop-alerts.yml", 'istio_agent_scrape_failures_total{type="application"}', "istio_agent_scrape_failures_total"),
    # ...and firing on a single burst (a restart).
    ("bookshop-alerts.yml", "[5m])) > 0\n        for: 10m", "[5m])) > 0\n        for: 1m"),
], ids=["target-down-for", "fast-burn-short-window", "degraded-threshold", "app-level-sli", "no-403",
        "edge-unscoped", "edge-destination-reporter", "unmatched-counted", "le-one-spelling",
        "latency-budget", "absent-bare-series", "scrape-failures-envoy", "scrape-failures-for"])
def test_the_unit_tests_catch_a_broken_alert(tmp_path: Path, rule_file: str, old: str, new: str) -> None:
    copy = _copy_prometheus_dir(tmp_path)
    path = copy / "rules" / rule_file
    text = path.read_text()
    # Every occurrence: a broken copy breaks the rule everywhere it is written.
    assert old in text, f"{old!r} is not in {rule_file}"
    path.write_text(text.replace(old, new))
    result = promtool("test", "rules", *map(str, sorted((copy / "tests").glob("*.test.yml"))), cwd=copy)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


# --- the component ships every file -----------------------------------------------------------

def _generated_files(name: str) -> set[str]:
    kustomization = yaml.safe_load((OBSERVABILITY / "kustomization.yaml").read_text())
    [generator] = [g for g in kustomization["configMapGenerator"] if g["name"] == name]
    return {entry.split("=", 1)[-1] for entry in generator["files"]}


def test_the_cluster_gets_every_rule_file_and_every_dashboard() -> None:
    assert _generated_files("prometheus-rules") == {str(p.relative_to(OBSERVABILITY)) for p in _rule_files()}
    assert _generated_files("grafana-dashboards") == {
        str(p.relative_to(OBSERVABILITY)) for p in (OBSERVABILITY / "grafana/dashboards").glob("*.json")}


def test_compose_mounts_the_same_rules_and_dashboards() -> None:
    compose = yaml.safe_load((OBSERVABILITY.parent / "compose.yaml").read_text())
    assert "./observability/prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]
    assert yaml.safe_load(COMPOSE_PROMETHEUS.read_text())["rule_files"] == ["rules/*.yml"]
    grafana = compose["services"]["grafana"]["volumes"]
    assert "./observability/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana
    providers = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    assert [p["options"]["path"] for p in providers["providers"]] == ["/etc/grafana/dashboards"]


def test_both_configs_give_every_target_the_labels_dashboards_select_by() -> None:
    for job in yaml.safe_load(COMPOSE_PROMETHEUS.read_text())["scrape_configs"]:
        for static in job["static_configs"]:
            assert {"namespace", "pod"} <= set(static["labels"]), job["job_name"]
    for job in yaml.safe_load(KUBERNETES_PROMETHEUS.read_text())["scrape_configs"]:
        if "kubernetes_sd_configs" in job:
            targets = {r.get("target_label") for r in job["relabel_configs"]}
            assert {"namespace", "pod"} <= targets, job["job_name"]

