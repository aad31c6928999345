"""The PrometheusRule of kustomize/components/prometheus-operator, generated from the rule files
Prometheus itself loads (observability/prometheus/rules/*.yml): one source for both.

    python3 tests/deploy/prometheus_rule.py      # rewrites prometheus-rule.yaml

test_prometheus_operator.py fails when the committed file differs from what this generates."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "observability/prometheus/rules"
GENERATED = REPO_ROOT / "kustomize/components/prometheus-operator/prometheus-rule.yaml"

HEADER = """\
# Generated from observability/prometheus/rules/*.yml by tests/deploy/prometheus_rule.py: do not
# edit. Edit the rule files, then run `python3 tests/deploy/prometheus_rule.py`.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the rules' expressions) as literal blocks, as the rule files write them."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def generate(rules_dir: Path = RULES_DIR) -> str:
    groups = [group for path in sorted(rules_dir.glob("*.yml")) for group in yaml.safe_load(path.read_text())["groups"]]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "bookshop", "labels": {"app.kubernetes.io/part-of": "bookshop"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


if __name__ == "__main__":
    GENERATED.write_text(generate())
    sys.stdout.write(f"wrote {GENERATED.relative_to(REPO_ROOT)}\n")
