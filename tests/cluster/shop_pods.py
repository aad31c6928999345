"""The real bookshop as the dev cluster's pods: the marketplace, recommendations and ingress
gateway pods the controllers made and istiod injected (and mesh-probe, when case_objects.py
made it; a Gateway API gateway's, when the overlay has one), each in its own network namespace
(podnet.py, with Istio CNI's capture in the sidecar pods), its app (pod_apps.py) and its Envoy
(pod_envoy.py) inside, on what istiod sent that pod with the certificate istiod's CA issued it
(agent.py); a real Jaeger at the collector Service's endpoint. It offers what tests/mesh's
cases ask of the loopback mesh (`plan`, `pod_ip`, `envoys`, `jaeger`, `callers`, `use`), so
they run here unchanged. `use(flip)` makes tests/mesh's flip through the API server,
asks istiod again until its answer has changed, and restarts the Envoys on it: they run static
bootstraps, as in the loopback (docs/mesh.md)."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import agent
import case_objects
import cluster_flips
import istio
import podnet
from controlplane import Client
from envoys import Envoys
from inputs import BASE, Doc, Flip
from jaeger import Jaeger
from loopback_mesh import slug
from pod_apps import PodApp, stop_together
from pod_callers import PodCallers
from pod_calls import InsidePod
from pod_envoy import PodEnvoy

GATEWAY_NAMESPACE = "istio-system"
# How long istiod may take to push a change it watched (its debounce is 100 ms to 10 s).
PUSH_TIMEOUT = 30.0


@dataclass(frozen=True)
class PodPlan:
    """The addresses tests/mesh's cases ask the loopback's Plan for: the pod IPs kwok gave,
    the cluster IPs the API server did."""
    pods: dict[str, str]
    cluster_ips: dict[tuple[str, str], str]

    @property
    def gateway_pod(self) -> str:
        return self.pods["gateway"]

    @property
    def marketplace_pod(self) -> str:
        return self.pods["marketplace"]

    @property
    def recommendations_pod(self) -> str:
        return self.pods["recommendations"]

    @property
    def probe_pod(self) -> str:
        return self.pods["probe"]

    def cluster_ip(self, namespace: str, name: str) -> str:
        return self.cluster_ips[(namespace, name)]


def role(proxy: agent.Proxy) -> str:
    """Which of the cases' workloads a proxy is: the gateway, the probe, or its app's name."""
    if proxy.name == case_objects.PROBE:
        return "probe"
    return "gateway" if proxy.namespace == GATEWAY_NAMESPACE else proxy.name.rsplit("-", 2)[0]


def keyed(proxies: list[agent.Proxy]) -> dict[str, agent.Proxy]:
    """The pods to run, by key: each workload's first pod under its role, its other replicas
    (prod runs three of each) as `role-2`, `role-3`, so that every endpoint istiod hands out
    answers; one gateway pod only, as nothing but the test asks a gateway for pages."""
    found: dict[str, agent.Proxy] = {}
    for proxy in proxies:
        key, count = role(proxy), sum(role(p) == role(proxy) for p in found.values())
        if count and key == "gateway":
            continue
        found[f"{key}-{count + 1}" if count else key] = proxy
    return found


def collector_endpoint(cluster: Client) -> tuple[str, int]:
    """The ready pod IP and port behind the collector Service's OTLP/gRPC port, where the
    Envoys' upstream connections (which the capture lets through) and the apps' (which their
    Envoy forwards) arrive."""
    (namespace, name), otlp_port = istio.otel_collector(cluster)
    service = cluster.get("service", name, "-n", namespace)["spec"]
    port_name = next(p["name"] for p in service["ports"] if p["port"] == otlp_port)
    slices = cluster.get("endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={name}")["items"]
    addresses = sorted(a for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                       for a in e["addresses"])
    port = next(p["port"] for s in slices for p in s.get("ports") or [] if p["name"] == port_name)
    if not addresses:
        raise RuntimeError(f"the Service {namespace}/{name} has no ready endpoint")
    return addresses[0], port


def fingerprint(provisioned: agent.Provisioned) -> dict[str, list[str]]:
    """Per proxy, what istiod sent it but its node and endpoints (what a policy flip changes),
    each kind's resources in a fixed order (istiod's order varies from one answer to the next)."""
    def one(proxy: agent.Proxy) -> list[str]:
        xds = provisioned.xds(proxy)
        return sorted(f"{kind} {json.dumps(resource, sort_keys=True)}" for kind, resources in xds.items()
                      if kind not in ("node", "endpoints") for resource in resources)
    return {proxy.base: one(proxy) for proxy in provisioned.proxies}


class ShopPods(Envoys):
    """Everything of one run; each pod's files (logs, Envoy configs) under the cluster's
    `pods/<namespace>.<pod>/`, its identity and first configuration under the cluster's
    `shop-agents/` (Envoy's uid reads them), Jaeger's and istiod's answers per flip under
    `work_dir`."""

    def __init__(self, cluster: Client, rendered: list[Doc], bin_dir: Path, work_dir: Path,
                 roles: frozenset[str] | None = None) -> None:
        """`roles`: the proxies to run (`role`), if not all of them."""
        super().__init__()
        self.roles = roles
        self.cluster = cluster
        self.rendered = rendered
        self.bin_dir = bin_dir
        self.work_dir = work_dir
        self.logs = work_dir / "logs"
        self.base: agent.Provisioned | None = None
        self.proxies: dict[str, agent.Proxy] = {}
        self.plan: PodPlan | None = None
        self.jaeger = Jaeger(self.logs, otlp_grpc_address=collector_endpoint(cluster))
        self.pods: dict[str, podnet.PodNetwork] = {}
        self.inside: dict[str, InsidePod] = {}
        self.callers: PodCallers | None = None
        self.applied = BASE  # what the API server holds
        self.answered: dict[str, list[str]] = {}  # istiod's answer (fingerprint) under the last flip
        self.starts = 0  # numbers each start's Envoy files, so a later start keeps an earlier one's log
        self._stack = ExitStack()

    def pod_ip(self, key: str) -> str:
        return self.plan.pods[key]

    def start(self) -> ShopPods:
        try:
            # Every proxy's identity and configuration as the pods are now (the session's
            # `provisioned` predates case_objects' probe and recommendations' new pod).
            start = time.monotonic()
            self.base = agent.provision(self.cluster, self.cluster.folder / "shop-agents",
                                        lambda proxy: self.roles is None or role(proxy) in self.roles)
            self.cluster.progress(f"{len(self.base.proxies)} proxies' certificates and configuration from istiod "
                                  f"in {time.monotonic() - start:.1f} s")
            self.proxies = keyed(self.base.proxies)
            services = self.cluster.get("services", "-A")["items"]
            self.plan = PodPlan({key: proxy.ip for key, proxy in self.proxies.items()},
                                {(s["metadata"]["namespace"], s["metadata"]["name"]): s["spec"].get("clusterIP")
                                 for s in services})
            self.jaeger.start()
            self._stack.callback(self.jaeger.stop)
            for key, proxy in self.proxies.items():
                pod = self.cluster.get("pod", proxy.name, "-n", proxy.namespace)
                self.pods[key] = self._stack.enter_context(podnet.attached(self.cluster, pod))
                self.inside[key] = InsidePod(self.pods[key].name)
                self._stack.callback(self.inside[key].close)
                # Istio CNI leaves a gateway's pod alone (cni_capture_args says None).
                if podnet.cni_capture_args(pod) is not None:
                    self.pods[key].capture()
            self.callers = PodCallers(self.pods, self.plan, self.work_dir / "stubs")
            apps: list[PodApp] = []
            # Stopped together, as a kubelet stops pods: each waits out its own shutdown delay.
            self._stack.callback(stop_together, apps)
            # Recommendations' replicas first, so the marketplace's first calls find them.
            for key in sorted(self.proxies, key=lambda key: role(self.proxies[key]), reverse=True):
                if role(self.proxies[key]) in ("recommendations", "marketplace"):
                    apps.append(PodApp(self.cluster, self.pods[key], self.bin_dir, self.inside[key]).start())
            self.use(BASE)
            self.cluster.progress(f"pods attached, apps and Envoys ready {time.monotonic() - start:.1f} s "
                                  "after the certificates were first asked for")
        except BaseException:
            self.stop()
            raise
        return self

    def use(self, flip: Flip = BASE) -> ShopPods:
        """The Envoys on what istiod sends for the overlay changed by `flip`."""
        return super().use(flip)

    def _envoys_for(self, flip: Flip) -> dict[str, PodEnvoy]:
        undone: dict[str, list[str]] = {}
        if self.applied not in (BASE, flip):
            cluster_flips.undo(self.cluster, self.rendered, self.applied)
            self.applied, undone = BASE, self.answered
            if flip == BASE:
                self._configured(BASE)
        if self.applied != flip:
            cluster_flips.apply(self.cluster, self.rendered, flip)
            self.applied = flip
        configured = self.base if flip == BASE else self._configured(flip, undone)
        self.starts += 1
        return {key: PodEnvoy(self.pods[key], configured.bootstrap(proxy), configured.sds_dir / proxy.base,
                              self.inside[key], f"{self.starts:02d}-{slug(flip.name)}")
                for key, proxy in self.proxies.items()}

    def with_identity(self, key: str, sds_dir: Path) -> PodEnvoy:
        """`key`'s Envoy restarted on the overlay's configuration but with the secrets in
        `sds_dir` (another identity's key and certificate); the next `use` puts every Envoy back
        as configured."""
        self.use(BASE)
        self.flip = None
        proxy, own = self.proxies[key], self.base.sds_dir / self.proxies[key].base
        bootstrap = self.work_dir / f"{proxy.base}.as-{sds_dir.name}.bootstrap.json"
        bootstrap.write_text(self.base.bootstrap(proxy).read_text().replace(f"{own}/", f"{sds_dir}/"))
        self.envoys[key].stop()
        self.starts += 1
        self.envoys[key] = PodEnvoy(self.pods[key], bootstrap, sds_dir, self.inside[key],
                                    f"{self.starts:02d}-as-{sds_dir.name}")
        return self.envoys[key].start()

    def _configured(self, flip: Flip, undone: dict[str, list[str]] | None = None) -> agent.Provisioned:
        """istiod's answer for every proxy once it reflects `flip` (applied): for the overlay, one
        that matches its answer again; for a flip, one that differs from it and, for each proxy
        the flip just undone had changed, from that flip's answer (so none still runs it, and the
        overlay's answer need not be waited for in between)."""
        base = fingerprint(self.base)
        stale = {proxy: answer for proxy, answer in (undone or {}).items() if answer != base[proxy]}
        out = self.work_dir / slug(flip.name)
        deadline = time.monotonic() + PUSH_TIMEOUT
        while True:
            configured = agent.configure(self.cluster, self.base.proxies, self.base.sds_dir.parent, out)
            seen = fingerprint(configured)
            if flip == BASE and seen == base:
                return configured
            if flip != BASE and seen != base and all(seen[proxy] != answer for proxy, answer in stale.items()):
                self.answered = seen
                return configured
            if time.monotonic() > deadline:
                raise AssertionError(f"istiod's answer did not reflect {flip.name!r} within {PUSH_TIMEOUT:.0f} s")
            time.sleep(1)

    def stop(self) -> None:
        """Everything stopped, the pods detached, and the overlay's objects as rendered again."""
        self._stop_envoys()
        self.flip = None
        try:
            if self.applied != BASE:
                cluster_flips.undo(self.cluster, self.rendered, self.applied)
                self.applied = BASE
        finally:
            self._stack.close()

    def __enter__(self) -> ShopPods:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
