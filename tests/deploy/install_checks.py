"""Checks of the Istio install (istio/install/): its mesh config is exactly the platform contract
that docs/mesh.md writes down (nothing mesh-wide beyond it), every provider the bookshop names
is in that contract, and production's istiod and ingress gateway survive a node drain. Each
takes parsed objects and returns a list of problems, empty when all is well."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

# The mesh config keys the contract may hold: named providers (inert until a Telemetry names
# them) and metrics merging (Istio's default). Anything else in meshConfig applies to every
# tenant's proxies (outboundTrafficPolicy, accessLogFile, accessLogEncoding, defaultProviders...).
CONTRACT_KEYS = {"enablePrometheusMerge", "extensionProviders"}

# docs/mesh.md's heading above the contract's YAML block.
CONTRACT_HEADING = "## What the cluster must provide"

# The control plane and the edge: the Deployments that must survive a drain in production.
DRAINED = ("istiod", "istio-ingressgateway")


def contract_in_docs(markdown: str) -> Doc:
    """The first ```yaml block after CONTRACT_HEADING in docs/mesh.md: the meshConfig entries a
    cluster must hold."""
    if CONTRACT_HEADING not in markdown:
        raise AssertionError(f"docs/mesh.md has no section {CONTRACT_HEADING!r}")
    section = markdown.split(CONTRACT_HEADING, 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    if match is None:
        raise AssertionError(f"docs/mesh.md's {CONTRACT_HEADING!r} holds no ```yaml block")
    return yaml.safe_load(match.group(1))["meshConfig"]


def check_mesh_config_is_the_contract(install_mesh_config: Doc, contract: Doc) -> list[str]:
    """The install's meshConfig (as written in the IstioOperator) is the documented contract,
    no more: no key outside CONTRACT_KEYS, and the same values as docs/mesh.md."""
    problems = [f"meshConfig.{key} applies to every tenant of the mesh, not only the bookshop"
                for key in sorted(set(install_mesh_config) - CONTRACT_KEYS)]
    problems += [f"the documented contract holds meshConfig.{key}, outside what a tenant may ask of the mesh"
                 for key in sorted(set(contract) - CONTRACT_KEYS)]
    for key in sorted(CONTRACT_KEYS):
        if install_mesh_config.get(key) != contract.get(key):
            problems.append(f"meshConfig.{key} differs between the install and docs/mesh.md's contract: "
                            f"{install_mesh_config.get(key)!r} vs {contract.get(key)!r}")
    return problems


def check_rendered_mesh_config(rendered: Doc, contract: Doc) -> list[str]:
    """What istiod will run with (the install's rendered `istio` ConfigMap) holds the contract."""
    problems = []
    if rendered.get("enablePrometheusMerge") is not contract.get("enablePrometheusMerge", True):
        problems.append(f"enablePrometheusMerge is {rendered.get('enablePrometheusMerge')!r} in the rendered mesh config")
    providers = {p["name"]: p for p in rendered.get("extensionProviders", [])}
    for wanted in contract.get("extensionProviders", []):
        if providers.get(wanted["name"]) != wanted:
            problems.append(f"extension provider {wanted['name']} is {providers.get(wanted['name'])!r} in the rendered "
                            f"mesh config, not {wanted!r}")
    return problems


def check_providers_in_contract(docs: list[Doc], contract: Doc) -> list[str]:
    """Every provider a Telemetry names is in the contract, and every provider of the contract is
    used (a contract entry nothing names is a demand on the platform for nothing)."""
    contracted = {p["name"] for p in contract.get("extensionProviders", [])}
    named = {p["name"] for d in docs if d.get("kind") == "Telemetry"
             for section in ("tracing", "accessLogging", "metrics") for entry in d["spec"].get(section, [])
             for p in entry.get("providers", [])}
    return ([f"a Telemetry names provider {name}, which the platform contract does not hold"
             for name in sorted(named - contracted)]
            + [f"the platform contract asks for provider {name}, which no Telemetry names"
               for name in sorted(contracted - named)])


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _floor(manifest: list[Doc], deployment: Doc) -> int:
    """The fewest pods the Deployment runs: its autoscaler's minimum, or its replicas."""
    name = deployment["metadata"]["name"]
    for hpa in (d for d in manifest if d.get("kind") == "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == name:
            return int(hpa["spec"].get("minReplicas", 1))
    return int(deployment["spec"].get("replicas", 1))


def _evictions(pdb: Doc, pods: int) -> int:
    """How many of `pods` healthy pods the budget lets a drain evict at once."""
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        value = spec["maxUnavailable"]
        return int(pods * int(value[:-1]) / 100) if isinstance(value, str) else int(value)
    value = spec.get("minAvailable", 0)
    floor = -(-pods * int(value[:-1]) // 100) if isinstance(value, str) else int(value)
    return pods - floor


def check_survives_a_drain(manifest: list[Doc], names: tuple[str, ...] = DRAINED) -> list[str]:
    """Each named Deployment of an install manifest runs at least two pods, has a
    PodDisruptionBudget over its pods that lets one be evicted (a drain can proceed) while
    another serves, and spreads its pods over nodes (a topology spread on the hostname)."""
    problems: list[str] = []
    deployments = {d["metadata"]["name"]: d for d in manifest if d.get("kind") == "Deployment"}
    budgets = [d for d in manifest if d.get("kind") == "PodDisruptionBudget"]
    for name in names:
        deployment = deployments.get(name)
        if deployment is None:
            problems.append(f"Deployment/{name} is not in the install")
            continue
        pods = _floor(manifest, deployment)
        if pods < 2:
            problems.append(f"Deployment/{name} runs {pods} pod at least: a drain of its node leaves none")
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        mine = [b for b in budgets if _selects(b["spec"].get("selector", {}), labels)]
        if not mine:
            problems.append(f"Deployment/{name}: no PodDisruptionBudget selects its pods")
        for budget in mine:
            evictable = _evictions(budget, pods)
            if evictable < 1:
                problems.append(f"PodDisruptionBudget/{budget['metadata']['name']} lets no pod of {pods} be evicted: "
                                "a drain blocks")
            elif evictable >= pods:
                problems.append(f"PodDisruptionBudget/{budget['metadata']['name']} lets all {pods} pods go at once")
        spread = deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        if not any(c["topologyKey"] == "kubernetes.io/hostname" and _selects(c.get("labelSelector", {}), labels)
                   for c in spread):
            problems.append(f"Deployment/{name}: no topology spread over nodes for its own pods")
    return problems


def gateway_entries(config: Path) -> list[tuple[str, str]]:
    """(name, namespace) of each ingress gateway an IstioOperator file lists."""
    [operator] = [d for d in yaml.safe_load_all(config.read_text()) if d and d.get("kind") == "IstioOperator"]
    return [(g["name"], g.get("namespace", "istio-system"))
            for g in operator["spec"].get("components", {}).get("ingressGateways", [])]
