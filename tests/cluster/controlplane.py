"""A Kubernetes control plane of real binaries, built from the pinned module (tools/istio/go.mod):
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok in place of kubelets,
with nodes in two zones whose pods it marks Running and Ready with IPs from the pod range. It
runs in the network namespace the caller is in (netns.namespace); its files (keys, kubeconfig,
etcd's data, one log per process) go under one folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import yaml

import netns
from certs import Keys

API_PORT = 6443
# Nodes: two per zone, so a topology spread over zones and nodes has somewhere to go and a
# drained node leaves each zone a node. kwok manages the nodes that carry its annotation.
ZONES = {"zone-a": ["kwok-a-1", "kwok-a-2"], "zone-b": ["kwok-b-1", "kwok-b-2"]}
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
# How long a start may take before we give up and show the logs (a guard, not a budget: the
# budgets are in docs/cluster.md and measured by the step).
START_TIMEOUT = 120


def node_manifests() -> list[dict]:
    return [{"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": name, "annotations": {KWOK_ANNOTATION: "fake"},
                          "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                     "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "kwok",
                                     "topology.kubernetes.io/zone": zone}}}
            for zone, names in ZONES.items() for name in names]


class Client:
    """Our kubectl with the cluster's kubeconfig (kept in `folder`, beside its outputs)."""

    def __init__(self, folder: Path, bin_dir: Path, progress: Callable[[str], None] = print) -> None:
        self.folder = folder
        self.bin_dir = bin_dir
        self.progress = progress
        self.kubeconfig = folder / "kubeconfig"

    def env(self) -> dict[str, str]:
        """The environment for a client: our kubectl first on PATH, our kubeconfig."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def kubectl(self, *args, input: str | None = None, check: bool = True,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.bin_dir / "kubectl"), *map(str, args)], input=input,
                                capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(map(str, args))} failed:\n{result.stderr}")
        return result

    def apply(self, manifests: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=manifests)

    def get(self, *args) -> dict:
        """`kubectl get … -o yaml`, parsed."""
        return yaml.safe_load(self.kubectl("get", *args, "-o", "yaml").stdout)


class ControlPlane(Client):
    """Started by `with`; stopped (every process, newest first) on leaving it, Ctrl-C included."""

    def __init__(self, folder: Path, bin_dir: Path, kwok_stages: Path,
                 progress: Callable[[str], None] = print) -> None:
        super().__init__(folder, bin_dir, progress)
        self.kwok_stages = kwok_stages
        self.logs = folder / "logs"
        self._processes: list[tuple[str, subprocess.Popen]] = []

    # ── running ──

    def __enter__(self) -> ControlPlane:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        keys = Keys(self.folder / "pki", netns.API_IP, netns.KUBERNETES_SERVICE_IP)
        self._write_kubeconfig(keys)
        self.spawn("etcd", "--data-dir", self.folder / "etcd",
                   "--client-url", "http://127.0.0.1:2379", "--peer-url", "http://127.0.0.1:2380")
        self.spawn("kube-apiserver", *self._apiserver_flags(keys))
        self.wait_for("the API server to be ready", lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0)
        self.progress("API server ready")
        common = ["--kubeconfig", self.kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1"]
        self.spawn("kube-controller-manager", *common,
                   # The kube-root-ca.crt ConfigMap in every namespace, as a cluster has.
                   "--root-ca-file", keys.ca,
                   # Each controller under its own service account, as kubeadm runs it: the
                   # controllers' RBAC is the real one.
                   "--use-service-account-credentials=true",
                   "--service-account-private-key-file", keys.service_account_key)
        self.spawn("kube-scheduler", *common)
        self.spawn("kwok", "--config", self.kwok_stages, "--kubeconfig", self.kubeconfig,
                   f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                   "--cidr", netns.POD_RANGE, "--node-ip", netns.NODE_IP,
                   # Heartbeats as a kubelet sends them (a Lease renewed every 10 s), or the node
                   # lifecycle controller marks every node NotReady, and its pods, after 50 s.
                   "--node-lease-duration-seconds", "40")
        self.apply(yaml.safe_dump_all(node_manifests()))
        self.wait_for("the nodes to be Ready", lambda: self.kubectl(
            "wait", "--for=condition=Ready", "node", "--all", "--timeout=5s", check=False).returncode == 0)
        # A pod needs its namespace's default ServiceAccount, which a controller makes.
        self.wait_for("the default ServiceAccount", lambda: self.kubectl(
            "get", "serviceaccount", "default", check=False).returncode == 0)
        self.progress(f"{len(node_manifests())} kwok nodes Ready in {len(ZONES)} zones")

    def _apiserver_flags(self, keys: Keys) -> list:
        return [
            "--etcd-servers", "http://127.0.0.1:2379",
            "--advertise-address", netns.API_IP, "--secure-port", API_PORT,
            "--tls-cert-file", keys.cert("apiserver"), "--tls-private-key-file", keys.key("apiserver"),
            "--client-ca-file", keys.ca,
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", keys.service_account_public,
            "--service-account-signing-key-file", keys.service_account_key,
            "--service-cluster-ip-range", netns.SERVICE_RANGE,
            "--authorization-mode", "Node,RBAC",
            # Privileged pods are allowed by the server, so Pod Security `restricted` is what
            # rejects the privileged control in the bookshop namespace.
            "--allow-privileged=true",
            # The API server calls a webhook (istiod's) at its Service's endpoints, not at a
            # cluster IP: nothing here routes cluster IPs (no kube-proxy). Every pod IP is a
            # local address in the namespace, so each endpoint reaches the one istiod process.
            "--enable-aggregator-routing=true",
            "--profiling=false",
        ]

    def _write_kubeconfig(self, keys: Keys) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "bookshop",
            "clusters": [{"name": "bookshop", "cluster": {
                "server": f"https://{netns.API_IP}:{API_PORT}", "certificate-authority": str(keys.ca)}}],
            "users": [{"name": "admin", "user": {
                "client-certificate": str(keys.cert("admin")), "client-key": str(keys.key("admin"))}}],
            "contexts": [{"name": "bookshop", "context": {"cluster": "bookshop", "user": "admin"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def spawn(self, name: str, *args, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """Starts a program of the bin dir, its output in logs/NAME.log, in a session of its own
        so a terminal's Ctrl-C reaches us alone and we stop it in order."""
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen([str(self.bin_dir / name), *map(str, args)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})}, cwd=cwd)
        log.close()
        self._processes.append((name, process))
        self.progress(f"started {name} (pid {process.pid})")
        return process

    def stop(self) -> None:
        start = time.monotonic()
        stopped = bool(self._processes)
        while self._processes:
            name, process = self._processes.pop()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.progress(f"{name} ignored SIGTERM for 15 s: killed")
                    process.kill()
                    process.wait()
        if stopped:
            self.progress(f"every process stopped in {time.monotonic() - start:.1f} s")

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Polls `ready`; fails with the processes that died and where their logs are."""
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [f"{name} (exit {p.returncode})" for name, p in self._processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"gave up waiting for {what}: "
                                   f"{'exited: ' + ', '.join(dead) if dead else f'not after {timeout} s'}; "
                                   f"logs in {self.logs}")
            time.sleep(0.5)
