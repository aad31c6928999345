"""The rendered manifests as the cross-checks read them: workloads and their pod templates,
containers and their ports, label selectors, the environment a container really sees, and which
of our binaries an image runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from clihelp import Settings

Doc = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

def of_kind(docs: list[Doc], kind: str) -> Iterator[Doc]:
    return (d for d in docs if d.get("kind") == kind)


def workloads_of(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(Kind/name, pod template) of every workload."""
    for d in docs:
        if d.get("kind") in WORKLOAD_KINDS:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]


def containers_of(pod: Doc) -> list[Doc]:
    return pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])


def ports_of(container: Doc) -> dict[str, int]:
    """name (or the number as text) -> number, for every container port."""
    ports: dict[str, int] = {}
    for port in container.get("ports", []):
        ports[str(port["containerPort"])] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a label selector matches the labels. A Service's selector is a bare map; the
    others have matchLabels and matchExpressions. An empty or missing selector matches nothing
    here (select-all policies are not what these checks are about)."""
    if not selector:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return all(labels.get(k) == v for k, v in selector.items())
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, operator, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": labels.get(key) not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def pods_selected(docs: list[Doc], selector: Doc | None) -> list[tuple[str, Doc]]:
    return [(name, pod) for name, pod in workloads_of(docs) if selects(selector, pod["metadata"].get("labels", {}))]


def effective_env(docs: list[Doc], container: Doc, accepted: Settings) -> tuple[dict[str, str | None], list[str]]:
    """The value each accepted setting takes in this container (env, then envFrom ConfigMaps,
    then the binary's default), and the problems met resolving envFrom."""
    values: dict[str, str | None] = dict(accepted)
    problems: list[str] = []
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None:
            continue
        if ref["name"] not in configmaps:
            if not ref.get("optional", False):
                problems.append(f"container {container['name']}: envFrom names ConfigMap {ref['name']}, "
                                "which the render does not contain")
            continue
        prefix = source.get("prefix", "")
        for key, value in configmaps[ref["name"]].items():
            values[prefix + key] = value
    for var in container.get("env", []):
        values[var["name"]] = var.get("value")
    return values, problems


def image_binary(container: Doc, accepted: dict[str, Settings]) -> str | None:
    """Which of our binaries a container runs: the one its image is named after
    (…/bookshop/recommendations:tag, …@sha256:…), or None for anyone else's image."""
    repository = container.get("image", "").split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return repository if repository in accepted else None


def settings_of(container: Doc, accepted: dict[str, Settings]) -> Settings:
    """The binary's settings with their defaults, or nothing for another image."""
    binary = image_binary(container, accepted)
    return accepted[binary] if binary else {}


def namespace_of(docs: list[Doc], workload: str) -> str | None:
    kind, name = workload.split("/", 1)
    for d in of_kind(docs, kind):
        if d["metadata"]["name"] == name:
            return d["metadata"].get("namespace")
    return None


def pods_of(docs: list[Doc]) -> list[tuple[str, str | None, Doc]]:
    """(Kind/name, namespace, pod template) of every workload."""
    return [(f"{d['kind']}/{d['metadata']['name']}", d["metadata"].get("namespace"), d["spec"]["template"])
            for d in docs if d.get("kind") in WORKLOAD_KINDS]


def namespace_labels(docs: list[Doc]) -> dict[str, dict[str, str]]:
    """namespace -> its labels, with the kubernetes.io/metadata.name label the API server adds."""
    return {d["metadata"]["name"]: {**d["metadata"].get("labels", {}), "kubernetes.io/metadata.name": d["metadata"]["name"]}
            for d in of_kind(docs, "Namespace")}



def is_istio_api(doc: Doc) -> bool:
    return doc.get("apiVersion", "").split("/")[0].endswith("istio.io")
