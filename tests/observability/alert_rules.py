"""The alert rules as data, and the checks that tie them to the rest of the repository: each
alert's runbook is a section of docs/observability.md, every panel a runbook or an alert names
exists, Prometheus keeps the longest window a rule reads, the edge SLIs name the installed
gateway. Each check returns the problems found, [] when all is well."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

import promql

RUNBOOK_PREFIX = "docs/observability.md#"
# A panel named in prose: "Its title" panel.
_PANEL_REFERENCE = re.compile(r'"([^"]+)" panels?\b')
_RANGE = re.compile(r"\[(\d+[smhd])\]")


def rules(rules_dir: Path) -> Iterator[dict]:
    for path in sorted(rules_dir.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def alerts(rules_dir: Path) -> list[dict]:
    return [rule for rule in rules(rules_dir) if "alert" in rule]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    for line in markdown.splitlines():
        if match := re.match(r"#{1,6} +(.+)", line):
            anchors.add(re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def runbook_problems(rules_dir: Path, docs: str) -> list[str]:
    anchors = github_anchors(docs)
    problems = []
    for alert in alerts(rules_dir):
        url = alert.get("annotations", {}).get("runbook_url", "")
        if not url.startswith(RUNBOOK_PREFIX):
            problems.append(f"{alert['alert']}: runbook_url {url!r} is not a section of docs/observability.md")
        elif url.removeprefix(RUNBOOK_PREFIX) not in anchors:
            problems.append(f"{alert['alert']}: docs/observability.md has no heading #{url.removeprefix(RUNBOOK_PREFIX)}")
        elif url.removeprefix(RUNBOOK_PREFIX) != alert["alert"].lower():
            problems.append(f"{alert['alert']}: runbook_url {url!r} is another alert's section")
    return problems


def panel_references(text: str) -> list[str]:
    return _PANEL_REFERENCE.findall(re.sub(r"\s+", " ", text))


def panel_problems(texts: dict[str, str], titles: set[str]) -> list[str]:
    """Every "Title" panel that a runbook or an alert names is a panel of a dashboard."""
    return [f"{where} names the panel {title!r}, which no dashboard has"
            for where, text in texts.items() for title in panel_references(text) if title not in titles]


def longest_window(rules_dir: Path) -> float:
    """Seconds of the longest range a rule reads ([3d] …)."""
    return max(promql.seconds(r) for rule in rules(rules_dir) for r in _RANGE.findall(rule["expr"]))


def retention(deployment: Path) -> float:
    """Seconds of --storage.tsdb.retention.time in the Prometheus Deployment."""
    for doc in yaml.safe_load_all(deployment.read_text()):
        if doc and doc["kind"] == "Deployment":
            for arg in doc["spec"]["template"]["spec"]["containers"][0]["args"]:
                if arg.startswith("--storage.tsdb.retention.time="):
                    return promql.seconds(arg.split("=", 1)[1])
    raise LookupError(f"{deployment}: no --storage.tsdb.retention.time")


def edge_gateways(rules_dir: Path) -> set[str]:
    """The gateway workloads the edge SLIs read (source_workload of reporter="source")."""
    found = set()
    for rule in rules(rules_dir):
        names = promql.names(rule["expr"])
        if ("reporter", "=", "source") in names.matchers:
            found |= {value for label, op, value in names.matchers if label == "source_workload" and op == "="}
    return found


def installed_gateways(install: Path) -> set[str]:
    """The ingress gateways istio/install/istio-operator.yaml installs (their Deployments'
    names, which Istio reports as source_workload)."""
    spec = yaml.safe_load(install.read_text())["spec"]
    return {g["name"] for g in spec["components"].get("ingressGateways", []) if g.get("enabled", True)}
