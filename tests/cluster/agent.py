"""What each pod's istio-agent does against the real istiod, done by `mesh-xds` with Istio's own
agent code: a ServiceAccount token from the API server's TokenRequest (audience `istio-ca`),
the workload's key and certificate from istiod's CA on 15012 (`mesh-xds identity`), and the
proxy's configuration from istiod over ADS with the node pilot-agent builds from the injected
pod (`mesh-xds istiod`), written as the static bootstraps and SDS files upstream Envoy runs
(tests/mesh)."""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import istio
from controlplane import Client

AUDIENCE = "istio-ca"
TRUST_DOMAIN = "cluster.local"
# istiod's xDS and CA port, and the name its serving certificate carries (what CA_ADDR says).
XDS_PORT = 15012
ISTIOD_SAN = "istiod.istio-system.svc"
# The ConfigMap istiod writes into every namespace, which injected pods mount as their root.
ROOT_CONFIGMAP = "istio-ca-root-cert"
# The injector's CA token lifetime (the istio-token volume: 43200 s).
TOKEN_LIFETIME = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Proxy:
    """A pod that runs an istio-proxy (the injected sidecars, the gateway)."""
    namespace: str
    name: str
    service_account: str
    ip: str

    @property
    def base(self) -> str:
        """The name of its files: `<namespace>.<pod>`, as mesh-xds writes them."""
        return f"{self.namespace}.{self.name}"

    @property
    def identity(self) -> str:
        return spiffe_id(self.namespace, self.service_account)


def spiffe_id(namespace: str, service_account: str) -> str:
    """The identity istiod's CA gives a token of `service_account` in `namespace`."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def proxies(cluster: Client) -> list[Proxy]:
    """Every running pod with an istio-proxy container, sorted by namespace and name."""
    found = []
    for pod in cluster.get("pods", "-A")["items"]:
        spec, meta = pod["spec"], pod["metadata"]
        containers = spec.get("initContainers", []) + spec["containers"]
        if "deletionTimestamp" in meta or not any(c["name"] == "istio-proxy" for c in containers):
            continue
        found.append(Proxy(meta["namespace"], meta["name"], spec["serviceAccountName"], pod["status"]["podIP"]))
    return sorted(found, key=lambda p: p.base)


def istiod_address(cluster: Client) -> str:
    """istiod's xDS address as a pod reaches `istiod.istio-system.svc:15012`: an endpoint of
    its Service (no kube-proxy routes the cluster IP here; every pod IP is local)."""
    slices = cluster.get("endpointslices", "-n", istio.NAMESPACE, "-l", "kubernetes.io/service-name=istiod")["items"]
    ready = sorted(a for s in slices for e in s.get("endpoints") or []
                   if e["conditions"].get("ready") for a in e["addresses"])
    if not ready:
        raise RuntimeError("istiod's Service has no ready endpoint")
    return f"{ready[0]}:{XDS_PORT}"


def token(cluster: Client, namespace: str, service_account: str, *, audience: str = AUDIENCE,
          pod: str | None = None) -> str:
    """A token of `service_account` from the TokenRequest API (`kubectl create token`), bound to
    `pod` as the kubelet's projected istio-token is."""
    args = ["create", "token", service_account, "-n", namespace, f"--audience={audience}",
            f"--duration={int(TOKEN_LIFETIME.total_seconds())}s"]
    if pod:
        args += ["--bound-object-kind=Pod", f"--bound-object-name={pod}"]
    return cluster.kubectl(*args).stdout.strip()


def root_cert(cluster: Client, namespace: str) -> str:
    """istiod's root as a pod of `namespace` mounts it."""
    return cluster.get("configmap", ROOT_CONFIGMAP, "-n", namespace)["data"]["root-cert.pem"]


def certify(cluster: Client, out: Path, *, namespace: str, service_account: str,
            bearer: str) -> subprocess.CompletedProcess[str]:
    """`mesh-xds identity`: a key and certificate from istiod's CA for a pod of `namespace` running
    as `service_account`, authenticated with `bearer`; SDS files (default.yaml, ROOTCA.yaml) and
    PEM files (key.pem, cert-chain.pem, root-cert.pem) in `out`. Its failure is the caller's to
    judge."""
    out.mkdir(parents=True, exist_ok=True)
    secrets = out.parent / f"{out.name}.inputs"
    secrets.mkdir(exist_ok=True)
    (secrets / "token").write_text(bearer)
    (secrets / "root-cert.pem").write_text(root_cert(cluster, namespace))
    return istio.run_tool(cluster, "mesh-xds", "identity", "--ca-addr", istiod_address(cluster),
                          "--ca-san", ISTIOD_SAN, "--root-cert", secrets / "root-cert.pem",
                          "--token-file", secrets / "token", "--namespace", namespace,
                          "--service-account", service_account, "--out", out)


@dataclass
class Provisioned:
    """Every proxy's identity and configuration, from istiod."""
    proxies: list[Proxy]
    sds_dir: Path
    xds_dir: Path

    def xds(self, proxy: Proxy) -> dict:
        """What istiod sent the proxy (clusters, endpoints, listeners, routes, and its node)."""
        return json.loads((self.xds_dir / f"{proxy.base}.xds.json").read_text())

    def bootstrap(self, proxy: Proxy) -> Path:
        return self.xds_dir / f"{proxy.base}.bootstrap.json"


def provision(cluster: Client, folder: Path, wanted: Callable[[Proxy], bool] = lambda proxy: True) -> Provisioned:
    """For each proxy (`wanted` ones): a token bound to its pod and its certificate from istiod's
    CA, then its configuration from istiod over ADS, into `folder`."""
    targets = [proxy for proxy in proxies(cluster) if wanted(proxy)]
    for proxy in targets:
        bearer = token(cluster, proxy.namespace, proxy.service_account, pod=proxy.name)
        (folder / "tokens").mkdir(parents=True, exist_ok=True)
        (folder / "tokens" / f"{proxy.base}.token").write_text(bearer)
        issued = certify(cluster, folder / "sds" / proxy.base, namespace=proxy.namespace,
                         service_account=proxy.service_account, bearer=bearer)
        if issued.returncode != 0:
            raise RuntimeError(f"no certificate for {proxy.base}: {issued.stderr}")
    return configure(cluster, targets, folder, folder / "xds")


def configure(cluster: Client, targets: list[Proxy], folder: Path, out: Path,
              edit: Callable[[dict], None] | None = None) -> Provisioned:
    """`mesh-xds istiod`: the configuration istiod sends each of `targets` (their tokens and
    certificates already in `folder`), given the injected pods as the API server holds them now
    (changed by `edit` first, if given) and the ConfigMaps they mount; into `out`."""
    wanted = {p.base for p in targets}
    listed = json.loads(cluster.kubectl("get", "pods,configmaps", "-A", "-o", "json").stdout)
    listed["items"] = [i for i in listed["items"] if i["kind"] != "Pod"
                       or f"{i['metadata']['namespace']}.{i['metadata']['name']}" in wanted]
    for item in listed["items"]:
        if edit and item["kind"] == "Pod":
            edit(item)
    out.mkdir(parents=True, exist_ok=True)
    objects = out / "objects.json"
    objects.write_text(json.dumps(listed))
    fetched = istio.run_tool(cluster, "mesh-xds", "istiod", "--objects", objects,
                             "--discovery-addr", istiod_address(cluster), "--istiod-san", ISTIOD_SAN,
                             "--token-dir", folder / "tokens", "--sds-dir", folder / "sds", "--out", out)
    if fetched.returncode != 0:
        raise RuntimeError(f"mesh-xds istiod failed: {fetched.stderr}")
    return Provisioned(targets, folder / "sds", out)
