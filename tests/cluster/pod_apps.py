"""A bookshop container run as its pod would run it: the binary of its name (BOOKSHOP_BIN_DIR)
inside the pod's network namespace, as the container's uid and gid, with exactly the
environment the pod spec gives it (its `env`, the ConfigMaps its `envFrom` names, read from the
API server), nothing else; ready when its admin port's /readyz answers 200 from inside the pod,
as tests/support's Bookshop judges it (the kubelet's probes would go through the pod's agent,
which does not run here)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import podnet
from controlplane import Client
from loopback import Process, http_get
from pod_calls import InsidePod

ADMIN_PORT_NAME = "http-admin"


def _field(pod: dict, path: str) -> str:
    """A downward API field (`fieldRef.fieldPath`) of the pod."""
    node: object = pod
    for part in path.split("."):
        node = node[part]  # type: ignore[index]
    return str(node)


def container_env(cluster: Client, pod: dict, container: dict) -> dict[str, str]:
    """The environment a kubelet gives `container`: `envFrom` first, then `env` over it (literal
    values, ConfigMap keys, the downward API), as Kubernetes orders them."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None:
            raise ValueError(f"{container['name']}: envFrom {source} is not a ConfigMap")
        data = cluster.get("configmap", ref["name"], "-n", namespace).get("data", {})
        env |= {source.get("prefix", "") + key: value for key, value in data.items()}
    for variable in container.get("env", []):
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = variable.get("value", "")
        elif "fieldRef" in source:
            env[variable["name"]] = _field(pod, source["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[variable["name"]] = cluster.get("configmap", ref["name"], "-n", namespace)["data"][ref["key"]]
        else:
            raise ValueError(f"{container['name']}: {variable['name']} from {source}, which this does not read")
    return env


def app_container(pod: dict) -> dict:
    """The pod's own container (not the injected istio-proxy)."""
    [container] = [c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy"]
    return container


def container_port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


class PodApp:
    """The app container of an attached pod; started and ready by `start()`."""

    def __init__(self, cluster: Client, pod: podnet.PodNetwork, bin_dir: Path, inside: InsidePod) -> None:
        container = app_container(pod.pod)
        self.name = container["name"]
        self.inside = inside
        self.admin = f"http://127.0.0.1:{container_port(container, ADMIN_PORT_NAME)}"
        uid, gid = podnet.run_as(pod.pod, self.name)
        env = container_env(cluster, pod.pod, container)
        self.process = Process(self.name, pod.command([bin_dir / self.name], uid, gid),
                               pod.folder / f"{self.name}.log", env, isolated=True)

    def start(self) -> PodApp:
        self.process.start_ready(f"{self.admin}/readyz",
                                 via=lambda url, **kw: self.inside.call(http_get, url, **kw))
        return self

    def stop(self) -> None:
        self.process.stop()


def stop_together(apps: list[PodApp]) -> None:
    """Every app sent SIGTERM at once, then waited for (not one shutdown delay after another)."""
    if apps:
        with ThreadPoolExecutor(len(apps)) as pool:
            list(pool.map(PodApp.stop, apps))
