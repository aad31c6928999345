"""What an alert promises beyond its expression: a runbook section that exists, panels that
exist, a Prometheus that keeps the windows it reads, an edge SLI that reads the gateway the
install creates. Each check is shown failing on a copy broken on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import alert_rules
import dashboards
from config_files import DOCS, ISTIO_INSTALL, PROMETHEUS_DEPLOYMENT, RULES_DIR


def _rules_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target)
    text = (target / file).read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}"
    (target / file).write_text(text.replace(old, new))
    return target


def _panel_titles() -> set[str]:
    return {p["title"] for path in dashboards.all_files() for p in dashboards.panels(dashboards.load(path.stem))}


def _prose() -> dict[str, str]:
    """What people read when an alert fires: each alert's annotations, and the runbooks."""
    texts = {f"alert {a['alert']}": " ".join(a["annotations"].values()) for a in alert_rules.alerts(RULES_DIR)}
    texts["docs/observability.md"] = DOCS.read_text()
    return texts


# --- runbooks -----------------------------------------------------------------------------------

def test_every_alert_links_its_own_runbook_section() -> None:
    assert alert_rules.alerts(RULES_DIR)
    assert alert_rules.runbook_problems(RULES_DIR, DOCS.read_text()) == []


def test_a_runbook_link_to_no_section_is_caught(tmp_path: Path) -> None:
    broken = _rules_copy(tmp_path, "bookshop-alerts.yml", "#marketplaceabsent", "#marketplace-absent")
    assert alert_rules.runbook_problems(broken, DOCS.read_text()) == [
        "MarketplaceAbsent: docs/observability.md has no heading #marketplace-absent"]


def test_a_runbook_section_removed_from_the_docs_is_caught() -> None:
    docs = DOCS.read_text()
    assert docs.count("### `AppMetricsScrapeFailing`") == 1
    assert alert_rules.runbook_problems(RULES_DIR, docs.replace("### `AppMetricsScrapeFailing`", "")) == [
        "AppMetricsScrapeFailing: docs/observability.md has no heading #appmetricsscrapefailing"]


def test_an_alert_without_a_runbook_is_caught(tmp_path: Path) -> None:
    broken = _rules_copy(tmp_path, "bookshop-alerts.yml", "          runbook_url: docs/observability.md#scrapetargetdown\n",
                         "")
    assert alert_rules.runbook_problems(broken, DOCS.read_text()) == [
        "ScrapeTargetDown: runbook_url '' is not a section of docs/observability.md"]


# --- the panels they name -----------------------------------------------------------------------

def test_every_panel_an_alert_or_runbook_names_exists() -> None:
    named = {title for text in _prose().values() for title in alert_rules.panel_references(text)}
    assert {"CPU per pod", "5xx at the gateway by response flag"} <= named
    assert alert_rules.panel_problems(_prose(), _panel_titles()) == []


def test_a_runbook_naming_a_panel_no_dashboard_has_is_caught() -> None:
    # The runbook once sent people to a CPU throttling panel that never existed.
    texts = _prose()
    texts["docs/observability.md"] = texts["docs/observability.md"].replace(
        '"CPU per pod" panel', '"CPU throttling" panel', 1)
    assert alert_rules.panel_problems(texts, _panel_titles()) == [
        "docs/observability.md names the panel 'CPU throttling', which no dashboard has"]


# --- retention ----------------------------------------------------------------------------------

def test_prometheus_keeps_the_longest_window_a_rule_reads() -> None:
    assert alert_rules.longest_window(RULES_DIR) == 3 * 86400
    assert alert_rules.retention(PROMETHEUS_DEPLOYMENT) >= alert_rules.longest_window(RULES_DIR)


def test_a_retention_shorter_than_the_windows_is_caught(tmp_path: Path) -> None:
    # Two days, as it was: the slow burn's 3-day window could never fill.
    deployment = tmp_path / "prometheus.yaml"
    text = PROMETHEUS_DEPLOYMENT.read_text()
    assert text.count("retention.time=4d") == 1
    deployment.write_text(text.replace("retention.time=4d", "retention.time=2d"))
    assert alert_rules.retention(deployment) < alert_rules.longest_window(RULES_DIR)


# --- the edge -----------------------------------------------------------------------------------

def test_an_edge_sli_reading_another_gateway_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "rules"
    shutil.copytree(RULES_DIR, broken)
    path = broken / "slo-latency.yml"
    path.write_text(path.read_text().replace('source_workload="istio-ingressgateway"', 'source_workload="ingress"', 1))
    assert alert_rules.edge_gateways(broken) == {"istio-ingressgateway", "ingress"}
    assert alert_rules.edge_gateways(broken) != alert_rules.installed_gateways(ISTIO_INSTALL)


def test_every_edge_selector_is_scoped_to_the_marketplace() -> None:
    # No other app behind the gateway can spend the budget (the promtool cases show it too).
    edge = [rule for rule in alert_rules.rules(RULES_DIR) if "istio_request" in rule["expr"]]
    assert len(edge) == 14
    for rule in edge:
        assert rule["expr"].count("{") == rule["expr"].count('destination_service_name="marketplace"'), rule
