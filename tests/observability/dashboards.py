"""The Grafana dashboards as data: their panels, queries and links, and the offline checks
each test runs on the real files and on a copy broken on purpose."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

import promql
from config_files import DASHBOARDS_DIR, DATASOURCES

Dashboard = dict[str, Any]


def load(name: str) -> Dashboard:
    return json.loads((DASHBOARDS_DIR / f"{name}.json").read_text())


def all_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def provisioned_uids() -> set[str]:
    return {d["uid"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}


def panels(dashboard: Dashboard) -> Iterator[dict]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: Dashboard) -> Iterator[tuple[dict, dict]]:
    """(panel, target) for every Prometheus query of a panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel, target


def variable_queries(dashboard: Dashboard) -> Iterator[tuple[str, str]]:
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            yield variable["name"], query["query"] if isinstance(query, dict) else query


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def explore_link_uids(url: str) -> set[str]:
    """Datasource uids an Explore link names (its `panes` parameter, JSON)."""
    if not url.startswith("/explore"):
        return set()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    uids: set[str] = set()
    for panes in query.get("panes", []):
        for node in _walk(json.loads(panes)):
            if isinstance(node, dict):
                if isinstance(node.get("datasource"), str):
                    uids.add(node["datasource"])
                if isinstance(node.get("datasource"), dict):
                    uids.add(node["datasource"]["uid"])
    return uids


def used_uids(dashboard: Dashboard) -> set[str]:
    uids: set[str] = set()
    for node in _walk(dashboard):
        if isinstance(node, dict):
            datasource = node.get("datasource")
            if isinstance(datasource, dict) and "uid" in datasource:
                uids.add(datasource["uid"])
            if isinstance(node.get("url"), str):
                uids |= explore_link_uids(node["url"])
    return uids


# --- checks: each returns the problems found, [] when all is well --------------------------

def check_panel_ids(dashboard: Dashboard) -> list[str]:
    seen: dict[int, str] = {}
    problems = []
    for panel in panels(dashboard):
        if "id" not in panel:
            problems.append(f"panel {panel.get('title')!r} has no id")
        elif panel["id"] in seen:
            problems.append(f"panel id {panel['id']} is used by {seen[panel['id']]!r} and {panel.get('title')!r}")
        else:
            seen[panel["id"]] = panel.get("title", "")
    return problems


def check_datasources(dashboard: Dashboard, provisioned: set[str]) -> list[str]:
    return [f"datasource uid {uid!r} is not provisioned" for uid in sorted(used_uids(dashboard) - provisioned)]


# Labels that name a place: never compared with a literal, only with a dashboard variable.
PLACE_LABEL = re.compile(r"^(instance|pod|namespace|.*_namespace|job|node)$")


def check_no_hard_coded_place(dashboard: Dashboard) -> list[str]:
    """No query pins an instance, pod or namespace; each filters by $namespace, and by $pod or
    (the mesh dashboard's gateway row) by the $gateway workload."""
    problems = []
    for panel, target in queries(dashboard):
        where = f"panel {panel['id']} {panel['title']!r} {target['refId']}"
        found = promql.names(target["expr"])
        for label, op, value in found.matchers:
            if PLACE_LABEL.match(label) and not value.startswith("$"):
                problems.append(f"{where}: {label}{op}{value!r} is hard-coded")
        if "$namespace" not in target["expr"]:
            problems.append(f"{where}: does not filter by $namespace")
        if "$pod" not in target["expr"] and 'source_workload="$gateway"' not in target["expr"]:
            problems.append(f"{where}: does not filter by $pod")
    return problems


def is_latency_panel(panel: dict) -> bool:
    return any(t.get("expr", "").startswith("histogram_quantile") for t in panel.get("targets", []))


def check_latency_links(dashboard: Dashboard, trace_uids: set[str]) -> list[str]:
    """Every latency panel links to traces (an Explore link naming a Jaeger datasource)."""
    problems = []
    for panel in panels(dashboard):
        if is_latency_panel(panel):
            links = [link["url"] for link in panel.get("links", [])]
            if not any(explore_link_uids(url) & trace_uids for url in links):
                problems.append(f"latency panel {panel['id']} {panel['title']!r} has no link to Jaeger")
    return problems
