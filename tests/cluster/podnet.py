"""A pod's own network, as a kubelet with Istio CNI would leave it, for a pod object the API
server holds (kwok marked it Running with a pod IP; istiod's webhook injected its sidecar):

- a network namespace of its own, `eth0` a veth into the control plane's namespace carrying the
  kwok-assigned pod IP, a default route out through it (so other pods, istiod and whatever a
  capture lets through reach the control plane's namespace, where the pod range is local);
- in the control plane's namespace, a /32 route to the pod IP through that veth, which overrides
  the pod range's `local` route there (netns.py), and forwarding on, so pods reach each other;
- Istio's own `pilot-agent istio-iptables` run inside it with the arguments Istio CNI's plugin
  derives from the pod (cni/pkg/plugin: `NewRedirect` and `Program`), or with the `istio-init`
  container's own when the injector made one;
- names: /etc/netns/NAME/{hosts,resolv.conf}, which `ip netns exec` mounts over /etc, carrying
  the cluster's Services as CoreDNS would answer for them (docs/cluster.md says why not DNS
  capture);
- processes started in it as a given uid, and everything removed on exit."""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import netns
from controlplane import Client

# Istio's defaults where the pod says nothing (cni/pkg/plugin/sidecar_redirect.go).
PROXY_UID = 1337
PROXY_GID = 1337
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
# The CNI plugin always adds these to the inbound exclusions: pilot-agent's status port, the
# gateway's health port and Envoy's Prometheus port.
ALWAYS_EXCLUDED_INBOUND = ("15020", "15021", "15090")
DEFAULT_EXCLUDED_OUTBOUND = "15020"
# A pod's next hop: a link-local address no one holds, resolved by a permanent neighbour entry
# to the control plane side of the veth (no ARP for an address that namespace does not own).
GATEWAY = "169.254.1.1"
CLUSTER_DOMAIN = "cluster.local"
STOP_TIMEOUT = 10


def cni_capture_args(pod: dict) -> list[str] | None:
    """`istio-iptables` arguments as Istio CNI's plugin programs them for `pod`, or None for a
    pod it leaves alone (no injected sidecar, injection off, a gateway's proxy, DISABLE_ENVOY,
    or an `istio-init` container that does it instead)."""
    annotations = pod["metadata"].get("annotations") or {}
    labels = pod["metadata"].get("labels") or {}
    containers = {c["name"]: c for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]}
    proxy = containers.get("istio-proxy")
    if "istio-init" in containers or proxy is None:
        return None
    env = {e["name"]: e.get("value", "") for e in proxy.get("env", [])}
    args = proxy.get("args", [])
    inject = labels.get("sidecar.istio.io/inject", annotations.get("sidecar.istio.io/inject", ""))
    if (_true(env.get("DISABLE_ENVOY")) or (len(args) >= 2 and args[0] == "proxy" and args[1] != "sidecar")
            or _false(inject) or "sidecar.istio.io/status" not in annotations):
        return None

    def annotation(key: str, default: str) -> str:
        return annotations.get(f"traffic.sidecar.istio.io/{key}", default)
    security = proxy.get("securityContext") or {}
    uid = security.get("runAsUser") or PROXY_UID
    gid = security.get("runAsGroup") or PROXY_GID
    excluded_inbound = [p for p in annotation("excludeInboundPorts", "15020").split(",") if p.strip()]
    excluded_inbound = list(dict.fromkeys([*excluded_inbound, *ALWAYS_EXCLUDED_INBOUND]))
    result = ["-p", str(OUTBOUND_CAPTURE_PORT), "-u", str(uid), "-g", str(gid),
              "-m", annotations.get("sidecar.istio.io/interceptionMode", "REDIRECT"),
              "-i", annotation("includeOutboundIPRanges", "*"),
              "-x", annotation("excludeOutboundIPRanges", ""),
              "-b", annotation("includeInboundPorts", "*"),
              "-d", ",".join(excluded_inbound),
              "-o", annotation("excludeOutboundPorts", DEFAULT_EXCLUDED_OUTBOUND),
              "-q", annotation("includeOutboundPorts", ""),
              "-c", annotation("excludeInterfaces", ""),
              "-k", annotations.get("istio.io/reroute-virtual-interfaces",
                                    annotation("kubevirtInterfaces", ""))]
    if _true(env.get("ISTIO_META_DNS_CAPTURE")):
        result += ["--redirect-dns", "--capture-all-dns"]
    if _true(env.get("INVALID_DROP")):
        result.append("--drop-invalid")
    if _true(env.get("ISTIO_DUAL_STACK")):
        result.append("--dual-stack")
    return result


def _true(value: str | None) -> bool:
    """Go's strconv.ParseBool true, as the plugin reads the proxy's environment."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _false(value: str | None) -> bool:
    """Go's strconv.ParseBool false, as the plugin reads the inject switch."""
    return value in ("0", "f", "F", "FALSE", "false", "False")


def container_args(pod: dict, name: str) -> list[str] | None:
    """The `pilot-agent` arguments of an injected init container (`istio-init`,
    `istio-validation`), which the injector writes as `istio-iptables …`."""
    for container in pod["spec"].get("initContainers", []):
        if container["name"] == name:
            return container["args"]
    return None


def run_as(pod: dict, container: str) -> tuple[int, int]:
    """The uid and gid a container runs as: its own securityContext, else the pod's (0 when
    neither says, as a runtime would run an image without a USER)."""
    spec = pod["spec"]
    found = next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container)
    pod_level, own = spec.get("securityContext") or {}, found.get("securityContext") or {}
    uid = own.get("runAsUser", pod_level.get("runAsUser", 0))
    return uid, own.get("runAsGroup", pod_level.get("runAsGroup", uid))


def hosts_file(pod: dict, services: list[dict]) -> str:
    """/etc/hosts for `pod`: the kubelet's (localhost, the pod's own name), then each Service
    with a cluster IP under the names CoreDNS answers for it and the kubelet's search path
    completes (`name` in the pod's own namespace, `name.ns`, `name.ns.svc`, the full name).
    Headless Services are left out."""
    namespace = pod["metadata"]["namespace"]
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback",
             f"{pod['status']['podIP']} {pod['metadata']['name']}"]
    for service in services:
        ip = service["spec"].get("clusterIP")
        if not ip or ip == "None":
            continue
        name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
        names = [f"{name}.{ns}.svc.{CLUSTER_DOMAIN}", f"{name}.{ns}.svc", f"{name}.{ns}"]
        lines.append(" ".join([ip, *names, *([name] if ns == namespace else [])]))
    return "\n".join(lines) + "\n"


def resolv_conf(namespace: str) -> str:
    """The kubelet's resolv.conf for a pod of `namespace` (ClusterFirst), with no nameserver:
    there is no cluster DNS here, so every answer is the hosts file's."""
    return (f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
            "options ndots:5\n")


@dataclass
class PodNetwork:
    """One pod's network namespace, attached to the control plane's."""
    pod: dict
    name: str
    cluster_namespace: str
    host_link: str
    folder: Path
    pilot_agent: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return self.pod["status"]["podIP"]

    def command(self, args: list, uid: int = 0, gid: int | None = None) -> list[str]:
        """`args` inside the pod's namespace (its /etc/hosts and resolv.conf mounted) as
        uid:gid, with no supplementary groups."""
        gid = uid if gid is None else gid
        return ["ip", "netns", "exec", self.name, "setpriv", f"--reuid={uid}", f"--regid={gid}",
                "--clear-groups", "--", *map(str, args)]

    def run(self, args: list, uid: int = 0, gid: int | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(args, uid, gid), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def spawn(self, args: list, uid: int = 0, gid: int | None = None, **popen) -> subprocess.Popen:
        """A process left running inside the pod (Envoy as the proxy's uid, the app as its
        own), stopped when the pod's network goes."""
        process = subprocess.Popen(self.command(args, uid, gid), **popen)
        self.processes.append(process)
        return process

    def capture(self, args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Runs `pilot-agent istio-iptables` in the pod, as root (CNI's plugin and istio-init
        both are): with `args`, or those Istio CNI derives from the pod (istio-init's own when
        the injector made one). Raises if the pod is one Istio would not capture."""
        args = args or cni_capture_args(self.pod) or container_args(self.pod, "istio-init")
        if args is None:
            raise ValueError(f"Istio captures no traffic of pod {self.name}")
        if args[0] == "istio-iptables":
            args = args[1:]
        result = self.run([self.pilot_agent, "istio-iptables", *args])
        (self.folder / "istio-iptables.log").write_text(
            f"$ pilot-agent istio-iptables {shlex.join(args)}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise RuntimeError(f"istio-iptables failed in {self.name}:\n{result.stdout}{result.stderr}")
        return result

    def validate(self) -> subprocess.CompletedProcess[str]:
        """The injected `istio-validation` container's check, as that container runs it (its
        own args and uid): connections to 127.0.0.6:15002 must arrive redirected."""
        args = container_args(self.pod, "istio-validation")
        if args is None:
            raise ValueError(f"pod {self.name} has no istio-validation container")
        uid, gid = run_as(self.pod, "istio-validation")
        return self.run([self.pilot_agent, *args], uid, gid)

    def stop(self) -> None:
        """Ends what was started in the pod: ours first, then anything they left (only what ran
        here is in this namespace)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        left = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        for pid in left.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def pod_ns_name(cluster_namespace: str, pod: dict) -> str:
    return f"{cluster_namespace}-{pod['metadata']['namespace']}-{pod['metadata']['name']}"


def host_link_name(ip: str) -> str:
    """The veth's name on the control plane's side (at most 15 characters): from the pod IP,
    which is unique there."""
    address = ipaddress.ip_address(ip).packed
    return f"pod-{address[2]}-{address[3]}"


@contextmanager
def attached(cluster: Client, pod: dict, folder: Path | None = None) -> Iterator[PodNetwork]:
    """`pod` (as read from the API server, Running with a pod IP) in a network namespace of its
    own, attached to the control plane's (the one this process is in), until the block ends; no
    capture until `capture()`."""
    ip = pod["status"]["podIP"]
    cluster_ns = netns.current()
    name = pod_ns_name(cluster_ns, pod)
    link = host_link_name(ip)
    folder = folder or cluster.folder / "pods" / f"{pod['metadata']['namespace']}.{pod['metadata']['name']}"
    folder.mkdir(parents=True, exist_ok=True)
    network = PodNetwork(pod, name, cluster_ns, link, folder, cluster.bin_dir / "pilot-agent")
    etc = Path("/etc/netns") / name
    try:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        # The pod's sysctls, which the kubelet sets in its namespace (a gateway's
        # ip_unprivileged_port_start=0: its Envoy binds port 80 as the proxy's uid).
        for sysctl in (pod["spec"].get("securityContext") or {}).get("sysctls", []):
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", f"{sysctl['name']}={sysctl['value']}"],
                           check=True, capture_output=True)
        _ip("-n", cluster_ns, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("-n", cluster_ns, "link", "set", link, "up")
        _ip("-n", name, "addr", "add", f"{ip}/32", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        mac = json.loads(_ip("-j", "-n", cluster_ns, "link", "show", link))[0]["address"]
        _ip("-n", name, "neigh", "add", GATEWAY, "lladdr", mac, "dev", "eth0", "nud", "permanent")
        _ip("-n", name, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
        _ip("-n", name, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        # In the `local` table, which is looked up first: more specific than the pod range's
        # local route, so the pod IP leaves through the veth instead of landing on `lo`.
        _ip("-n", cluster_ns, "route", "add", f"{ip}/32", "dev", link, "table", "local")
        subprocess.run(["ip", "netns", "exec", cluster_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True, capture_output=True)
        etc.mkdir(parents=True, exist_ok=True)
        services = cluster.get("services", "-A")["items"]
        (etc / "hosts").write_text(hosts_file(pod, services))
        (etc / "resolv.conf").write_text(resolv_conf(pod["metadata"]["namespace"]))
        yield network
    finally:
        network.stop()
        # Deleting one end removes the pair and the route through it now; the namespace's own
        # teardown (which would take them too) finishes asynchronously.
        subprocess.run(["ip", "-n", cluster_ns, "link", "delete", link], capture_output=True)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
