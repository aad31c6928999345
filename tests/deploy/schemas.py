"""Schema validation: Kubernetes kinds against the API's own schemas (kubernetes-validate,
strict), Istio kinds against Istio's CRDs (crd-all.gen.yaml of the istio.io/istio module that
tools/istio/go.mod pins; BOOKSHOP_ISTIO_CRDS names it)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# The oldest Kubernetes the manifests promise to work with; bump deliberately.
KUBERNETES_VERSION = "1.33.0"

Doc = dict[str, Any]


def is_istio(doc: Doc) -> bool:
    return doc.get("apiVersion", "").split("/")[0].endswith("istio.io")


def kubernetes_problems(doc: Doc) -> list[str]:
    """Strict validation: an unknown field is an error, as `kubectl apply` would make it."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{name}: {error.message} at {'/'.join(map(str, error.path))}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: no Kubernetes {KUBERNETES_VERSION} schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    return []


def _strict(schema: Any) -> Any:
    """Reject unknown fields, as the API server's strict field validation does: every object
    schema with properties and no x-kubernetes-preserve-unknown-fields gets
    additionalProperties: false."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A bare `=` (an enum value in the Prometheus Operator's CRDs) is YAML 1.1's "value" tag to
    PyYAML; to Kubernetes it is the string "="."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


@cache
def istio_schemas(crds_path: Path) -> dict[tuple[str, str, str], Doc]:
    """(group, version, kind) -> strict schema, from Istio's CRD file (or any file of CRDs: the
    Prometheus Operator's are read the same way, test_prometheus_operator.py)."""
    if not crds_path.is_file():
        raise FileNotFoundError(f"Istio CRDs not found at {crds_path}: set BOOKSHOP_ISTIO_CRDS (cargo xtask test deploy does)")
    schemas = {}
    for crd in yaml.load_all(crds_path.read_text(), Loader=_CrdLoader):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {}).update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
            schemas[(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return schemas


def crd_problems(doc: Doc, crd_schemas: dict[tuple[str, str, str], Doc], owner: str) -> list[str]:
    """`doc` against the schema of its kind among `crd_schemas` (whose CRDs `owner` defines)."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    group, _, version = doc["apiVersion"].partition("/")
    schema = crd_schemas.get((group, version, doc["kind"]))
    if schema is None:
        return [f"{name}: {owner} has no {doc['apiVersion']} {doc['kind']}"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{name}: {e.message} at {'/'.join(map(str, e.path))}"
            for e in validator.iter_errors(copy.deepcopy(doc))]


def istio_problems(doc: Doc, crds_path: Path) -> list[str]:
    return crd_problems(doc, istio_schemas(crds_path), "Istio")


def validate(doc: Doc, crds_path: Path) -> list[str]:
    return istio_problems(doc, crds_path) if is_istio(doc) else kubernetes_problems(doc)
