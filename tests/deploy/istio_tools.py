"""Istio's own tools on the mesh (istio/): the install rendered by istioctl, its mesh config and
gateway identities, the sidecar injector, istioctl analyze and every analyzer with the pods and
Services a cluster would hold (mesh-analyze), and the expected analyzer messages."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from mesh_checks import WORKLOAD_KINDS, Doc
from outside_tools import REPO_ROOT, require_tool, run

INSTALL_CONFIG = REPO_ROOT / "istio/install/istio-operator.yaml"
# Production's install: INSTALL_CONFIG with this file on top (istioctl's -f ... -f ...).
PRODUCTION_CONFIG = REPO_ROOT / "istio/install/production.yaml"

# Messages of Istio's analyzers that are expected: (code, resource as istioctl names it, e.g.
# "Namespace observability", globs allowed) -> (the renders it applies to, why).
SUPPRESSIONS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("IST0102", "Namespace observability"): (("dev", "dev-faults"),
        "NamespaceNotInjected (Info): the observability stack (dev's observability Component) stays "
        "outside the mesh on purpose: Prometheus scrapes the sidecars' plaintext :15020, and Jaeger "
        "takes OTLP from sidecars and apps, which fall back to plaintext for a pod without a sidecar"),
    ("IST0133", "EnvoyFilter istio-system/edge-trace-context"): (("dev", "prod", "dev-faults"),
        "SchemaValidationWarning: every EnvoyFilter draws it (internal APIs that may change). This one "
        "drops clients' trace headers before Envoy's tracer reads them, which no other Istio API reaches; "
        "tests/mesh proves it on Envoy, and a new Istio minor must be checked against it"),
}


def suppressions_for(render_name: str) -> dict[tuple[str, str], str]:
    return {key: reason for key, (renders, reason) in SUPPRESSIONS.items() if render_name in renders}

# --- the tools -------------------------------------------------------------------------------

def istioctl() -> str:
    return require_tool("istioctl")


def mesh_analyze() -> str:
    return require_tool("mesh-analyze")


def env_file(variable: str, what: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.fail(f"set {variable} to {what}", pytrace=False)
    path = Path(value)
    if not path.exists():
        pytest.fail(f"{variable}={value} does not exist ({what})", pytrace=False)
    return path


def parse(text: str) -> list[Doc]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(text, Loader=loader) if d]


def install_manifest(istioctl_path: str, config: Path = INSTALL_CONFIG, *more: Path) -> str:
    """`istioctl manifest generate -f CONFIG [-f MORE]...`: what `istioctl install` with those
    files (each on top of the ones before) would apply, rendered offline by the same Istio (it
    also validates the IstioOperators)."""
    files = [arg for path in (config, *more) for arg in ("-f", str(path))]
    result = run([istioctl_path, "manifest", "generate", *files], timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"istioctl manifest generate {' '.join(files)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def install_spec(config: Path = INSTALL_CONFIG) -> Doc:
    [operator] = [d for d in parse(config.read_text()) if d.get("kind") == "IstioOperator"]
    return operator["spec"]


def mesh_config(manifest: list[Doc]) -> Doc:
    """The mesh config istiod will run with: the `mesh` key of the `istio` ConfigMap that the
    install renders (the IstioOperator's meshConfig with Istio's defaults merged in)."""
    for d in manifest:
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "istio":
            return yaml.safe_load(d["data"]["mesh"]) or {}
    raise AssertionError("the install manifest has no ConfigMap `istio` (mesh config)")


def gateway_principals(manifest: list[Doc], trust_domain: str) -> set[str]:
    """The SPIFFE identities of the installed gateways' pods: trust domain, namespace and the
    service account their Deployment runs as."""
    principals = set()
    for d in manifest:
        if d.get("kind") != "Deployment":
            continue
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        if labels.get("istio") in ("ingressgateway", "egressgateway"):
            namespace = d["metadata"].get("namespace", "istio-system")
            account = d["spec"]["template"]["spec"].get("serviceAccountName", "default")
            principals.add(f"{trust_domain}/ns/{namespace}/sa/{account}")
    return principals


def inject(istioctl_path: str, manifest: str, install: list[Doc]) -> str:
    """`istioctl kube-inject` of the manifest, offline, with the injector's template, values and
    mesh config as the install renders them: the pods as the sidecar injector would admit them
    (annotations such as proxy.istio.io/config are parsed on the way)."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in install if d.get("kind") == "ConfigMap"}
    injector = configmaps.get("istio-sidecar-injector")
    if injector is None or "istio" not in configmaps:
        raise AssertionError("the install manifest lacks the ConfigMaps istio and istio-sidecar-injector")
    with tempfile.TemporaryDirectory(prefix="kube-inject-") as tmp:
        files = {"in.yaml": manifest, "inject.yaml": injector["config"], "values.json": injector["values"],
                 "mesh.yaml": configmaps["istio"]["mesh"]}
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        # --revision default: otherwise istioctl asks a cluster which revision is the default.
        result = run([istioctl_path, "kube-inject", "--revision", "default", "-f", f"{tmp}/in.yaml",
                      "--injectConfigFile", f"{tmp}/inject.yaml",
                      "--valuesFile", f"{tmp}/values.json", "--meshConfigFile", f"{tmp}/mesh.yaml"], timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"istioctl kube-inject failed:\n{result.stderr[-3000:]}")
    return result.stdout


def pods(docs: list[Doc]) -> list[Doc]:
    """One Pod per workload, as its controller would create it from the template: the analyzers
    look at Pods (which policy selects a workload, which pod lacks its proxy), not templates."""
    out = []
    for d in (d for d in docs if d.get("kind") in WORKLOAD_KINDS):
        template = d["spec"]["template"]
        metadata = {"name": f"{d['metadata']['name']}-0", "namespace": d["metadata"].get("namespace") or "default",
                    "labels": template["metadata"].get("labels", {}),
                    "annotations": template["metadata"].get("annotations", {})}
        out.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
    return out


def _suppress_args(suppressions: dict[tuple[str, str], str]) -> list[str]:
    return [arg for (code, resource) in suppressions for arg in ("--suppress", f"{code}={resource}")]


def _messages(result, what: str) -> list[Doc]:
    try:
        return (json.loads(result.stdout) if result.stdout.strip() else None) or []
    except json.JSONDecodeError:
        raise AssertionError(f"{what} gave no JSON (exit {result.returncode}):\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}") from None


def _write(tmp: str, manifests: list[str], mesh: Doc) -> tuple[list[str], str]:
    files = []
    for i, text in enumerate(manifests):
        path = Path(tmp) / f"{i}.yaml"
        path.write_text(text)
        files.append(str(path))
    mesh_file = Path(tmp) / "mesh.yaml"
    mesh_file.write_text(yaml.safe_dump(mesh))
    return files, str(mesh_file)


def istioctl_analyze(istioctl_path: str, manifests: list[str], mesh: Doc,
                     suppressions: dict[tuple[str, str], str]) -> list[Doc]:
    """`istioctl analyze --use-kube=false --all-namespaces` of the manifests with the install's
    mesh config: its messages (JSON). Every namespace: the default keeps only the messages about
    `default`. istioctl drops the files' Services, Pods and Namespaces (it expects those from a
    cluster), so the analyzers that need them do not run here: see analyze()."""
    with tempfile.TemporaryDirectory(prefix="istioctl-analyze-") as tmp:
        files, mesh_file = _write(tmp, manifests, mesh)
        result = run([istioctl_path, "analyze", "--use-kube=false", "--all-namespaces", "--meshConfigFile", mesh_file,
                      "--output", "json", *_suppress_args(suppressions), *files], timeout=300)
    if "Error(s) adding files" in result.stderr:
        raise AssertionError(f"istioctl analyze could not read the files:\n{result.stderr[-3000:]}")
    return _messages(result, "istioctl analyze")


def analyze(analyzer_path: str, manifests: list[str], mesh: Doc,
            suppressions: dict[tuple[str, str], str]) -> list[Doc]:
    """Every analyzer of istioctl analyze, on the manifests with their Services, Pods and
    Namespaces as a cluster would hold them (tools/istio/mesh-analyze, built from the same pinned
    module), in every namespace, with the install's mesh config: the messages (JSON)."""
    with tempfile.TemporaryDirectory(prefix="mesh-analyze-") as tmp:
        files, mesh_file = _write(tmp, manifests, mesh)
        result = run([analyzer_path, "--mesh-config", mesh_file, *_suppress_args(suppressions), *files], timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"mesh-analyze failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return _messages(result, "mesh-analyze")


def certificate_secrets(docs: list[Doc], gateway_namespace: str = "istio-system") -> list[Doc]:
    """What the cluster's operator provides before applying prod: for each Gateway server's
    `credentialName`, a kubernetes.io/tls Secret in the gateway's namespace holding a
    certificate for the server's hosts (made here, self-signed, valid for a day), so the
    analyzers check the reference like any other instead of reporting the Secret missing."""
    import base64

    secrets = []
    for gateway in (d for d in docs if d.get("kind") == "Gateway"):
        for server in gateway["spec"].get("servers", []):
            name = server.get("tls", {}).get("credentialName")
            if not name:
                continue
            openssl = require_tool("openssl")  # for a throwaway certificate
            host = server["hosts"][0].split("/")[-1].replace("*", "wildcard")
            with tempfile.TemporaryDirectory(prefix="certificate-") as tmp:
                result = run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                              "-nodes", "-days", "1", "-subj", f"/CN={host}", "-keyout", f"{tmp}/tls.key",
                              "-out", f"{tmp}/tls.crt"], timeout=60)
                if result.returncode != 0:
                    raise RuntimeError(f"openssl could not make a certificate:\n{result.stderr}")
                data = {key: base64.b64encode((Path(tmp) / key).read_bytes()).decode() for key in ("tls.crt", "tls.key")}
            secrets.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                            "metadata": {"name": name, "namespace": gateway_namespace}, "data": data})
    return secrets


def describe(message: Doc) -> str:
    origin = message.get("origin", "?")
    return f"{message.get('level')} [{message.get('code')}] ({origin}) {message.get('message')}"
