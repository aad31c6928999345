"""Where the observability configuration lives in the repository."""

from __future__ import annotations

from outside_tools import REPO_ROOT

OBSERVABILITY = REPO_ROOT / "observability"
PROMETHEUS_DIR = OBSERVABILITY / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
COMPOSE_PROMETHEUS = PROMETHEUS_DIR / "prometheus.yml"
KUBERNETES_PROMETHEUS = PROMETHEUS_DIR / "kubernetes.yml"
DASHBOARDS_DIR = OBSERVABILITY / "grafana/dashboards"
DATASOURCES = OBSERVABILITY / "grafana/provisioning/datasources/datasources.yaml"
ISTIO_METRICS = OBSERVABILITY / "istio/standard-metrics.yaml"
PROMETHEUS_DEPLOYMENT = PROMETHEUS_DIR / "prometheus.yaml"
DOCS = REPO_ROOT / "docs/observability.md"
ISTIO_INSTALL = REPO_ROOT / "istio/install/istio-operator.yaml"
