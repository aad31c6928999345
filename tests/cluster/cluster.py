"""The whole local cluster, as `cargo xtask cluster` and the tests use it: a network namespace
of its own, the control plane in it, Istio installed with istiod serving its webhooks; then an
overlay applied with the README's command, literally, and its Deployments rolled out."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

import certs
import istio
import netns
from controlplane import Client, ControlPlane
from outside_tools import REPO_ROOT, required_dir

OVERLAYS = ("dev", "prod", "dev-faults")
# dev with the Gateway API ingress: a cluster of its own, for test_gateway_api.py only.
GATEWAY_API_OVERLAY = "dev-gateway-api"
# The README's deploy command (its "Look, then apply" step), with the overlay's name in it.
README_APPLY = "kubectl kustomize kustomize/overlays/{overlay} | kubectl apply -f -"
ROLLOUT_TIMEOUT = "120s"


@contextmanager
def running(folder: Path, bin_dir: Path, kwok_module: Path, namespace: str,
            progress: Callable[[str], None] = print, install: list | None = None) -> Iterator[ControlPlane]:
    """The cluster in `folder` with Istio installed from `install` (default: the developer
    install), up until the block ends (Ctrl-C included), then torn down: every process
    stopped, the network namespace gone."""
    # A fresh cluster: nothing of a previous one's (etcd's data above all).
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    progress = _also_logged(progress, folder / "progress.log")
    start = time.monotonic()
    try:
        with netns.namespace(namespace):
            progress(f"network namespace {namespace}: API server {netns.API_IP}, pods {netns.POD_RANGE}")
            stages = folder / "kwok-stages.yaml"
            # kwok's own "fast" stages: nodes Ready with heartbeats, pods Running and Ready at once.
            stages.write_text(_run([str(bin_dir / "kubectl"), "kustomize",
                                    str(kwok_module / "kustomize/stage/fast")]).stdout)
            with ControlPlane(folder, bin_dir, stages, progress) as cluster:
                progress(f"control plane up in {time.monotonic() - start:.1f} s; KUBECONFIG={cluster.kubeconfig}")
                istio.install(cluster, install or istio.install_files(None))
                progress(f"Istio installed in {time.monotonic() - start:.1f} s since the start")
                yield cluster
    finally:
        progress(f"network namespace {namespace} removed")


@dataclass
class Applied:
    """What applying an overlay gave: the command's output and the rollouts' failures."""
    overlay: str
    returncode: int
    stdout: str
    stderr: str
    rollout_failures: list[str]
    seconds: float


def apply(cluster: Client, overlay: str) -> Applied:
    """Runs the README's command for `overlay` through bash, with our kubectl first on PATH;
    keeps its output under the cluster's folder; then waits for every Deployment to roll out."""
    start = time.monotonic()
    # What the platform provides, for the objects the overlay renders.
    rendered = cluster.kubectl("kustomize", REPO_ROOT / "kustomize/overlays" / overlay).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    provide_tls_secrets(cluster, docs)
    provide_collector(cluster, docs)
    provide_gateway_api_crds(cluster, docs)
    command = README_APPLY.format(overlay=overlay)
    cluster.progress(f"$ {command}")
    # pipefail: a failed render is a failure, not an empty apply.
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=REPO_ROOT,
                            env=cluster.env(), capture_output=True, text=True, timeout=300)
    for stream in ("stdout", "stderr"):
        (cluster.folder / f"apply-{overlay}.{stream}").write_text(getattr(result, stream))
    failures = rollout(cluster) if result.returncode == 0 else []
    seconds = time.monotonic() - start
    cluster.progress(f"{overlay} applied (exit {result.returncode}) and rolled out "
                     f"({len(failures)} failures) in {seconds:.1f} s")
    return Applied(overlay, result.returncode, result.stdout, result.stderr, failures, seconds)


def _scaled_to_minimum(cluster: Client, timeout: float = 90) -> list[tuple[str, str]]:
    """The HPAs whose target has fewer replicas than their minimum after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        short = []
        for hpa in cluster.get("hpa", "-A")["items"]:
            spec, status = hpa["spec"], hpa.get("status", {})
            if status.get("currentReplicas", 0) < spec.get("minReplicas", 1):
                short.append((f"{hpa['metadata']['namespace']}/{hpa['metadata']['name']}", str(status)))
        if not short or time.monotonic() > deadline:
            return short
        time.sleep(1)


def provide_tls_secrets(cluster: Client, docs: list[dict]) -> None:
    """The TLS Secrets the overlay's Gateways name (`credentialName`), which the platform
    provides (cert-manager or its CA), made here with a throwaway CA's certificate for the host;
    the CA beside it (`tls/SECRET.ca.crt` in the cluster's folder), as a client's trust root."""
    for gateway in (d for d in docs if d["kind"] == "Gateway" and d["apiVersion"].startswith("networking.istio.io/")):
        for server in gateway["spec"]["servers"]:
            secret = server.get("tls", {}).get("credentialName")
            if secret and cluster.kubectl("get", "secret", secret, "-n", istio.NAMESPACE, check=False).returncode:
                folder = cluster.folder / "tls"
                folder.mkdir(exist_ok=True)
                for name, pem in zip((f"{secret}.ca.crt", "tls.crt", "tls.key"), certs.issued_for(server["hosts"][0])):
                    (folder / name).write_bytes(pem)
                cluster.kubectl("create", "secret", "tls", secret, "-n", istio.NAMESPACE,
                                "--cert", folder / "tls.crt", "--key", folder / "tls.key")
                cluster.progress(f"made the TLS Secret {istio.NAMESPACE}/{secret} the platform provides")


def provide_collector(cluster: Client, docs: list[dict]) -> None:
    """The trace collector the mesh's `otel` provider and the apps send to, when the overlay does
    not deploy it (prod: docs/mesh.md, "What the cluster must provide"): a Deployment of it and a
    Service at that name, as a platform's collector would have (kwok runs its pod: the tests
    that read spans stand a real Jaeger at its pod IP, as for dev's)."""
    (namespace, name), port = istio.otel_collector(cluster)
    if any(d["kind"] == "Service" and d["metadata"]["name"] == name
           and d["metadata"].get("namespace") == namespace for d in docs):
        return
    labels = {"app.kubernetes.io/name": name}
    # Restricted, as any workload should be; never pulled (kwok runs no container).
    container = {"name": "collector", "image": "otel/opentelemetry-collector:0.120.0",
                 "ports": [{"name": "grpc-otlp", "containerPort": port}],
                 "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                     "capabilities": {"drop": ["ALL"]},
                                     "seccompProfile": {"type": "RuntimeDefault"}}}
    # Outside the mesh, as the repository's own observability namespace; the port named for
    # its protocol, as Istio asks (IST0118).
    cluster.apply(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {"istio-injection": "disabled"}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
         "spec": {"selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
         "spec": {"selector": labels, "ports": [{"name": "grpc-otlp", "port": port}]}},
    ]))
    cluster.progress(f"made the collector {namespace}/{name} the platform provides")


def provide_gateway_api_crds(cluster: Client, docs: list[dict]) -> None:
    """The Gateway API CRDs, when the overlay has Gateway API objects (dev-gateway-api): the
    cluster's to provide, as Istio does not install them. The standard channel of the
    sigs.k8s.io/gateway-api version the pinned Istio requires (BOOKSHOP_GATEWAY_API_CRDS,
    which xtask sets), server-side (the HTTPRoute CRD is too big for the client-side annotation)."""
    if not any(d["apiVersion"].startswith("gateway.networking.k8s.io/") for d in docs):
        return
    crds = required_dir("BOOKSHOP_GATEWAY_API_CRDS", "the Gateway API CRDs (config/crd/standard of the "
                        "sigs.k8s.io/gateway-api module tools/istio/go.mod pins)")
    cluster.kubectl("apply", "--server-side", "-f", crds)
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.progress(f"installed the Gateway API CRDs the platform provides, from {crds}")


def rollout(cluster: Client) -> list[str]:
    """`kubectl rollout status` of every Deployment, once each HPA has brought its target up to
    `minReplicas` (prod's Deployments leave their replica count to the HPA, so they start at one
    pod and the HPA scales them on its next sync); the ones that did not, with why."""
    failures = [f"HPA {name}: {status}" for name, status in _scaled_to_minimum(cluster)]
    listed = cluster.kubectl("get", "deployments", "-A", "-o",
                             "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{'\\n'}{end}")
    for line in listed.stdout.split():
        namespace, name = line.split("/")
        status = cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace,
                                 f"--timeout={ROLLOUT_TIMEOUT}", check=False)
        if status.returncode != 0:
            failures.append(f"{line}: {status.stdout.strip()} {status.stderr.strip()}")
    return failures


def _also_logged(progress: Callable[[str], None], log: Path) -> Callable[[str], None]:
    """`progress`, each line also kept in `log` with the seconds since the start (the budgets'
    measurements, kept beside the cluster's other outputs)."""
    start = time.monotonic()

    def both(line: str) -> None:
        with log.open("a") as file:
            file.write(f"{time.monotonic() - start:7.1f} s  {line}\n")
        progress(line)
    return both


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True)
