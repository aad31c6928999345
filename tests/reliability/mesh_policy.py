"""What our mesh configures for the marketplace → recommendations call, read from
istio/recommendations-traffic.yaml (the VirtualService and the DestinationRule), in the form
Envoy's bootstrap needs. Read, not copied: a change to the mesh's policy changes the proxy the
reliability tests run behind."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from outside_tools import REPO_ROOT

TRAFFIC_POLICY = REPO_ROOT / "istio" / "recommendations-traffic.yaml"


def seconds(duration: str) -> float:
    """An Istio duration ("450ms", "10s", "1m") in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration.strip())
    if match is None:
        raise ValueError(f"not an Istio duration: {duration!r}")
    value, unit = match.groups()
    return float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@dataclass(frozen=True)
class MeshPolicy:
    """The numbers of the VirtualService route and the DestinationRule traffic policy."""
    timeout: float
    attempts: int
    per_try_timeout: float
    retry_on: str
    load_balancer: str
    connect_timeout: float
    max_connections: int
    http2_max_requests: int
    http1_max_pending_requests: int
    retry_budget_percent: float
    min_retry_concurrency: int
    consecutive_5xx_errors: int
    outlier_interval: float
    base_ejection_time: float
    max_ejection_percent: int
    min_health_percent: int


def load(path: Path = TRAFFIC_POLICY) -> MeshPolicy:
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}
    try:
        (route,) = documents["VirtualService"]["spec"]["http"]
        retries = route["retries"]
        policy = documents["DestinationRule"]["spec"]["trafficPolicy"]
        pool, outlier, budget = policy["connectionPool"], policy["outlierDetection"], policy["retryBudget"]
        return MeshPolicy(
            timeout=seconds(route["timeout"]),
            attempts=int(retries["attempts"]),
            per_try_timeout=seconds(retries["perTryTimeout"]),
            retry_on=retries["retryOn"],
            load_balancer=policy["loadBalancer"]["simple"],
            connect_timeout=seconds(pool["tcp"]["connectTimeout"]),
            max_connections=int(pool["tcp"]["maxConnections"]),
            http2_max_requests=int(pool["http"]["http2MaxRequests"]),
            http1_max_pending_requests=int(pool["http"]["http1MaxPendingRequests"]),
            retry_budget_percent=float(budget["percent"]),
            min_retry_concurrency=int(budget["minRetryConcurrency"]),
            consecutive_5xx_errors=int(outlier["consecutive5xxErrors"]),
            outlier_interval=seconds(outlier["interval"]),
            base_ejection_time=seconds(outlier["baseEjectionTime"]),
            max_ejection_percent=int(outlier["maxEjectionPercent"]),
            # Istio's default when the DestinationRule names none: 0, no panic mode.
            min_health_percent=int(outlier.get("minHealthPercent", 0)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise AssertionError(f"{path}: not the VirtualService route and DestinationRule policy "
                             f"this suite mirrors ({type(err).__name__}: {err})") from err
