"""Istio on the control plane, as `istioctl install -f istio/install/istio-operator.yaml` leaves
it: the objects `istioctl manifest generate` renders (CRDs, RBAC, ConfigMaps, webhook
configurations, istiod's and the ingress gateway's Deployments and Services) applied, and one
real istiod (pilot-discovery from the pinned module) serving them.

istiod's Deployment becomes kwok pods with pod IPs, which its Service's EndpointSlices list.
The API server calls the webhooks through that Service at its endpoints
(--enable-aggregator-routing), and every pod IP is a local address of the namespace, so
whichever endpoint it picks, the one pilot-discovery process listening on :15017 answers, under
the certificate it issues itself for istiod.istio-system.svc, as in a cluster. The webhook
configurations keep their `service:` references rather than `url:`: a `url:` would be a change
to what the install renders, and it would need a host name the certificate names and the API
server resolves, which nothing here provides."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import yaml
from prometheus_client.parser import text_string_to_metric_families

from controlplane import ControlPlane
from outside_tools import REPO_ROOT

INSTALL = REPO_ROOT / "istio/install/istio-operator.yaml"
# Prod's control plane and edge on top of it: two pods each, spread, disruption budgets.
PRODUCTION = REPO_ROOT / "istio/install/production.yaml"


# The one EnvoyFilter the overlays carry on purpose: the edge drops clients' trace headers before
# Envoy's tracer reads them, which no other Istio API reaches (docs/mesh.md). istiod warns on
# every EnvoyFilter, at apply (its webhook) and in `istioctl analyze` (IST0133); those warnings,
# for this object only, are expected. Another EnvoyFilter, or any other warning, fails.
EXPECTED_ENVOYFILTERS = {"istio-system/edge-trace-context"}
ENVOYFILTER_WARNING = "Warning: EnvoyFilter exposes internal implementation details"


def envoyfilters(docs: list[dict]) -> set[str]:
    """`namespace/name` of each EnvoyFilter in `docs`."""
    return {f"{d['metadata'].get('namespace', 'bookshop')}/{d['metadata']['name']}"
            for d in docs if d["kind"] == "EnvoyFilter"}


def install_files(overlay: str | None) -> list:
    """The install files docs/mesh.md gives for `overlay` (prod adds production.yaml)."""
    return [INSTALL, PRODUCTION] if overlay == "prod" else [INSTALL]
NAMESPACE = "istio-system"
MONITORING = "http://127.0.0.1:15014"


def manifest(cluster: ControlPlane, files: list) -> str:
    """What `istioctl install -f FILE…` would apply, from the built istioctl."""
    return cluster_tool(cluster, "istioctl", "manifest", "generate", *(a for f in files for a in ("-f", f)))


def run_tool(cluster: ControlPlane, name: str, *args) -> subprocess.CompletedProcess[str]:
    """One of the built tools, as a client of the cluster, from the repository root."""
    return subprocess.run([str(cluster.bin_dir / name), *map(str, args)], capture_output=True,
                          text=True, env=cluster.env(), cwd=REPO_ROOT, timeout=300)


def cluster_tool(cluster: ControlPlane, name: str, *args) -> str:
    """run_tool's output; its failure raises."""
    result = run_tool(cluster, name, *args)
    if result.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result.stdout


def install(cluster: ControlPlane, files: list) -> None:
    """Applies the install of `files`, starts istiod as its Deployment says, and waits until
    both webhooks have istiod's CA bundle and the validating one fails closed."""
    rendered = manifest(cluster, files)
    (cluster.folder / "istio-install.yaml").write_text(rendered)
    # `istioctl install` makes the namespace itself; the rendered objects assume it.
    cluster.kubectl("create", "namespace", NAMESPACE)
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    # The CRDs first, established, so the rest (which may use them) finds them.
    crds = [doc for doc in docs if doc["kind"] == "CustomResourceDefinition"]
    applied = [cluster.apply(yaml.safe_dump_all(crds))]
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    applied.append(cluster.apply(yaml.safe_dump_all([doc for doc in docs if doc["kind"] != "CustomResourceDefinition"])))
    # What the server said of the install (its warnings, if any), beside the render.
    (cluster.folder / "istio-install.stderr").write_text("".join(a.stderr for a in applied))
    # What `istioctl install` does beyond the render when no Istio was there before: it sets
    # the `default` revision tag, whose webhooks validate (istiod-default-validator) and inject
    # for objects without an `istio.io/rev` label, such as the bookshop's, and it deactivates
    # the install's own namespace injectors that the tag's replace.
    cluster_tool(cluster, "istioctl", "tag", "set", "default", "--revision", "default",
                 "--overwrite", "--skip-confirmation")
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "istiod")
    start_istiod(cluster, deployment)
    cluster.wait_for("istiod's validating webhook to fail closed", lambda: _validator_ready(cluster))
    cluster.wait_for("istiod's CA bundle in the injector", lambda: _injector_ready(cluster))
    cluster.progress("istiod serving its webhooks (validation failurePolicy: Fail)")


def start_istiod(cluster: ControlPlane, deployment: dict) -> None:
    """pilot-discovery with the arguments and environment of the install's istiod container
    (the downward-API ones filled in as a kubelet would), its own working directory (it writes
    its DNS certificate under ./var/run/secrets), and the API access of the istiod
    ServiceAccount: a token from the TokenRequest API, so the install's RBAC is what it has."""
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "discovery")
    token = cluster.kubectl("create", "token", "istiod", "-n", NAMESPACE, "--duration=24h").stdout.strip()
    home = cluster.folder / "istiod"
    home.mkdir(exist_ok=True)
    kubeconfig = home / "kubeconfig"
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    kubeconfig.write_text(yaml.safe_dump(config))
    downward = {"metadata.name": "istiod-local", "metadata.namespace": NAMESPACE,
                "spec.serviceAccountName": "istiod"}
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
        # resourceFieldRef (GOMEMLIMIT, GOMAXPROCS from the limits): the Go defaults instead.
    cluster.spawn("pilot-discovery", *container["args"], "--kubeconfig", kubeconfig, env=env, cwd=home)


def _validator_ready(cluster: ControlPlane) -> bool:
    """Both of the revision's validating webhook configurations (the install's and the tag's)
    have istiod's CA bundle and fail closed."""
    found = cluster.get("validatingwebhookconfigurations", "-l", "istio.io/rev=default")["items"]
    webhooks = [w for config in found for w in config["webhooks"]]
    return len(found) == 2 and all(w.get("failurePolicy") == "Fail" and w["clientConfig"].get("caBundle")
                                   for w in webhooks)


def _injector_ready(cluster: ControlPlane) -> bool:
    """Both of the revision's injectors (the install's and the tag's) have istiod's CA bundle."""
    found = cluster.get("mutatingwebhookconfigurations", "-l", "istio.io/rev=default")["items"]
    return len(found) == 2 and all(w["clientConfig"].get("caBundle") for config in found for w in config["webhooks"])


def debug(path: str) -> object:
    """One of istiod's debug endpoints (on its monitoring port), as JSON."""
    with urllib.request.urlopen(f"{MONITORING}/debug/{path}", timeout=30) as response:
        return json.load(response)


def metrics(name: str) -> list:
    """The samples of one of istiod's metrics (on its monitoring port); a counter's by its name
    without the `_total` the text format adds."""
    with urllib.request.urlopen(f"{MONITORING}/metrics", timeout=30) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) if family.name == name
            for sample in family.samples if sample.name in (name, f"{name}_total")]


def mesh_config(cluster: ControlPlane) -> dict:
    """The mesh config istiod reads: the `mesh` key of the install's `istio` ConfigMap."""
    config = cluster.get("configmap", "istio", "-n", NAMESPACE)
    return yaml.safe_load(config["data"]["mesh"])


def otel_collector(cluster: ControlPlane) -> tuple[tuple[str, str], int]:
    """(namespace, name) and port of the Service the mesh's `otel` tracing provider sends to:
    dev's Jaeger, the platform's collector in prod."""
    providers = mesh_config(cluster).get("extensionProviders", [])
    otel = next(p["opentelemetry"] for p in providers if p["name"] == "otel")
    name, namespace = otel["service"].split(".")[:2]
    return (namespace, name), otel["port"]
