"""podnet.py on dev's cluster: the injected bookshop pods, each in its own network namespace
with Istio's own istio-iptables run as Istio CNI would, capture what Istio's rules say they
capture. Stand-ins listen where Envoy would (15001 outbound, 15006 inbound, as uid 1337) and
report SO_ORIGINAL_DST; real connections are made as the app's and the proxy's uids."""

from __future__ import annotations

import copy
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

import netns
import podnet
from conftest import Overlay

pytestmark = pytest.mark.parametrize("overlay", ["dev"], indirect=True)

NAMESPACE = "bookshop"
# Its source, not its path: the probe runs as other uids, which a checkout private to root (a
# clone under `mktemp -d`, mode 0700) keeps out.
PROBE = ["-c", Path(__file__).with_name("capture_probe.py").read_text()]
# The probe runs as other uids, which cannot reach a venv under /root: the system's python3.
PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
LINE_TIMEOUT = 10


class Listener:
    """capture_probe.py listening in a pod: bound once started, one report per connection."""

    def __init__(self, pod: podnet.PodNetwork, port: int, uid: int, address: str = "0.0.0.0") -> None:
        self.process = pod.spawn([PYTHON, *PROBE, "listen", address, port], uid,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.buffer = b""
        assert self.line(LINE_TIMEOUT) == "listening", self.process.stderr.read().decode()

    def line(self, timeout: float) -> str | None:
        """The next line it printed, waiting at most `timeout` (0: only what is there now)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
            if not chunk:  # the time is up, or it exited
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def report(self) -> dict:
        line = self.line(LINE_TIMEOUT)
        assert line, f"no connection arrived on {self.process.args[-1]}"
        return json.loads(line)

    def idle(self) -> bool:
        """Nothing arrived (asked once the connection in question has landed or failed)."""
        return self.line(0) is None


def dial(pod: podnet.PodNetwork, host: str, port: int, uid: int) -> dict:
    result = pod.run([PYTHON, *PROBE, "dial", host, port], uid, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bookshop_pod(overlay: Overlay, app: str) -> dict:
    pods = overlay.cluster.get("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={app}")["items"]
    running = [p for p in pods if p["status"].get("podIP") and "deletionTimestamp" not in p["metadata"]]
    assert running, f"no running {app} pod"
    return running[0]


def app_uid(pod: dict) -> int:
    return podnet.run_as(pod, pod["spec"]["containers"][0]["name"])[0]


def service(overlay: Overlay, name: str) -> tuple[str, int]:
    """A bookshop Service's cluster IP and its first port."""
    spec = overlay.cluster.get("service", name, "-n", NAMESPACE)["spec"]
    return spec["clusterIP"], spec["ports"][0]["port"]


def container_port(pod: dict) -> int:
    return pod["spec"]["containers"][0]["ports"][0]["containerPort"]


@pytest.fixture
def pods(overlay: Overlay) -> Iterator:
    """A factory: `pods(app, capture=True)` attaches that app's pod, captured or not, for the
    test; everything is removed after it."""
    with ExitStack() as stack:
        def attach(app: str, capture: bool = True) -> podnet.PodNetwork:
            pod = stack.enter_context(podnet.attached(overlay.cluster, bookshop_pod(overlay, app)))
            if capture:
                pod.capture()
            return pod
        yield attach


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "without-istio-iptables"])
def test_outbound_to_a_cluster_ip_is_captured_to_15001_with_its_original_destination(overlay, pods, captured):
    marketplace = pods("marketplace", capture=captured)
    ip, port = service(overlay, "recommendations")
    envoy = Listener(marketplace, podnet.OUTBOUND_CAPTURE_PORT, podnet.PROXY_UID)
    dialled = dial(marketplace, ip, port, app_uid(marketplace.pod))
    if captured:
        assert dialled["connected"], dialled
        assert envoy.report()["original_dst"] == f"{ip}:{port}"
    else:
        # Nothing routes cluster IPs (no kube-proxy): only the capture makes them reachable.
        assert dialled == {"connected": False, "resolved": ip, "error": "ENETUNREACH"}
        assert envoy.idle()


@pytest.mark.parametrize("who", ["proxy", "root", "app"])
def test_only_the_proxys_uid_is_exempt_from_outbound_capture(overlay, pods, who):
    marketplace = pods("marketplace")
    uid = {"proxy": podnet.PROXY_UID, "root": 0, "app": app_uid(marketplace.pod)}[who]
    ip, port = service(overlay, "recommendations")
    envoy = Listener(marketplace, podnet.OUTBOUND_CAPTURE_PORT, podnet.PROXY_UID)
    dialled = dial(marketplace, ip, port, uid)
    if who == "proxy":
        # Envoy's own upstream connections leave as they are (and a cluster IP goes nowhere).
        assert dialled["error"] == "ENETUNREACH", dialled
        assert envoy.idle()
    else:
        assert dialled["connected"], dialled
        assert envoy.report()["original_dst"] == f"{ip}:{port}"


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "without-istio-iptables"])
def test_inbound_to_the_app_port_from_another_pod_is_captured_to_15006(pods, captured):
    marketplace, recommendations = pods("marketplace"), pods("recommendations", capture=captured)
    port = container_port(recommendations.pod)
    envoy = Listener(recommendations, podnet.INBOUND_CAPTURE_PORT, podnet.PROXY_UID)
    app = Listener(recommendations, port, app_uid(recommendations.pod))
    # As the marketplace's Envoy dials an endpoint: uid 1337, so not captured on the way out.
    assert dial(marketplace, recommendations.ip, port, podnet.PROXY_UID)["connected"]
    landed, other = (envoy, app) if captured else (app, envoy)
    report = landed.report()
    assert report["peer"].split(":")[0] == marketplace.ip
    assert report["original_dst"] == (f"{recommendations.ip}:{port}" if captured else None)
    assert other.idle()


def excluded_inbound_ports(overlay: Overlay) -> list[int]:
    args = podnet.cni_capture_args(bookshop_pod(overlay, "recommendations"))
    return [int(p) for p in args[args.index("-d") + 1].split(",")]


def test_the_status_health_and_prometheus_ports_are_excluded_from_inbound_capture(overlay, pods):
    """Istio CNI always excludes 15020 (pilot-agent's status and merged metrics), 15021 (health)
    and 15090 (Envoy's Prometheus) inbound: each reaches its own listener, not 15006. The
    previous test is the flipped twin (the app port is captured)."""
    assert set(excluded_inbound_ports(overlay)) >= {15020, 15021, 15090}
    marketplace, recommendations = pods("marketplace"), pods("recommendations")
    envoy = Listener(recommendations, podnet.INBOUND_CAPTURE_PORT, podnet.PROXY_UID)
    for port in excluded_inbound_ports(overlay):
        listener = Listener(recommendations, port, podnet.PROXY_UID)
        assert dial(marketplace, recommendations.ip, port, podnet.PROXY_UID)["connected"]
        assert listener.report()["original_dst"] is None, port
        assert envoy.idle(), port


@pytest.mark.parametrize("port_kind", ["excluded", "app"])
def test_outbound_to_an_excluded_port_leaves_uncaptured(pods, port_kind):
    """15020 is excluded outbound (CNI's default when the pod sets no excludeOutboundPorts): the
    app's connection to another pod's 15020 goes straight there; to its app port, to 15001."""
    marketplace, recommendations = pods("marketplace"), pods("recommendations", capture=False)
    port = int(podnet.DEFAULT_EXCLUDED_OUTBOUND) if port_kind == "excluded" else container_port(recommendations.pod)
    envoy = Listener(marketplace, podnet.OUTBOUND_CAPTURE_PORT, podnet.PROXY_UID)
    target = Listener(recommendations, port, app_uid(recommendations.pod))
    assert dial(marketplace, recommendations.ip, port, app_uid(marketplace.pod))["connected"]
    landed, other = (target, envoy) if port_kind == "excluded" else (envoy, target)
    report = landed.report()
    assert report["original_dst"] == (None if port_kind == "excluded" else f"{recommendations.ip}:{port}")
    assert other.idle()


def test_service_names_resolve_to_cluster_ips_inside_the_pod(overlay, pods):
    marketplace = pods("marketplace")
    ip, port = service(overlay, "recommendations")
    envoy = Listener(marketplace, podnet.OUTBOUND_CAPTURE_PORT, podnet.PROXY_UID)
    # The short name, through the pod's search path, as the app dials it.
    dialled = dial(marketplace, "recommendations", port, app_uid(marketplace.pod))
    assert dialled == {"connected": True, "resolved": ip}
    assert envoy.report()["original_dst"] == f"{ip}:{port}"
    collector = overlay.cluster.get("service", "otel-collector", "-n", "observability")["spec"]["clusterIP"]
    full = marketplace.run(["getent", "hosts", "otel-collector.observability.svc.cluster.local"])
    assert full.stdout.split()[0] == collector, full


def test_names_resolve_only_inside_the_pod(pods):
    """The twin: the same name from the control plane's namespace (no pod files mounted), and a
    name that is no Service from inside the pod, resolve to nothing."""
    marketplace = pods("marketplace")
    outside = subprocess.run(["getent", "hosts", "recommendations.bookshop.svc.cluster.local"],
                             capture_output=True, text=True)
    assert outside.returncode != 0, outside.stdout
    assert marketplace.run(["getent", "hosts", "no-such-service"]).returncode != 0


def short_flags(args: list[str]) -> dict[str, str]:
    """`-x value` pairs of an istio-iptables command line."""
    return {flag: value for flag, value in zip(args, args[1:])
            if flag.startswith("-") and not flag.startswith("--")}


def disagreements(pod: dict) -> list[str]:
    """Where the capture podnet derives as Istio CNI does differs from the injector's own
    rendering of the same annotations, in the pod's istio-validation arguments (ports as sets:
    the two list them in different orders). -z is left to its default by CNI."""
    derived = short_flags(podnet.cni_capture_args(pod))
    injected = short_flags(podnet.container_args(pod, "istio-validation"))
    derived.setdefault("-z", str(podnet.INBOUND_CAPTURE_PORT))
    found = []
    for flag, value in injected.items():
        ours = derived.get(flag, "")
        if set(ours.split(",")) != set(value.split(",")):
            found.append(f"{flag}: injected {value!r}, derived {ours!r}")
    return found


def test_the_derived_capture_agrees_with_the_injectors_istio_validation_arguments(overlay):
    pods = overlay.cluster.get("pods", "-n", NAMESPACE)["items"]
    assert pods
    for pod in pods:
        assert not disagreements(pod), (pod["metadata"]["name"], disagreements(pod))
    # The twin: an annotation the injector never saw (so its arguments do not carry it).
    pod = copy.deepcopy(pods[0])
    pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] = "9464"
    assert disagreements(pod) == [f"-d: injected {short_flags(podnet.container_args(pod, 'istio-validation'))['-d']!r}, "
                                  "derived '9464,15020,15021,15090'"]


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "without-istio-iptables"])
def test_the_injected_istio_validation_check_passes_only_with_the_capture(pods, captured):
    """The check the injector puts in every pod when Istio CNI is on (its own args and uid)."""
    marketplace = pods("marketplace", capture=captured)
    checked = marketplace.validate()
    assert (checked.returncode == 0) == captured, checked.stdout + checked.stderr


def test_detaching_removes_the_namespace_the_veth_the_route_and_the_files(overlay):
    pod = bookshop_pod(overlay, "marketplace")
    ip = pod["status"]["podIP"]
    with podnet.attached(overlay.cluster, pod) as attached:
        attached.capture()
        attached.spawn(["sleep", "600"], podnet.PROXY_UID)
        assert f"dev {attached.host_link}" in route(ip)
        assert Path("/run/netns", attached.name).exists()
    assert not Path("/run/netns", attached.name).exists()
    assert not Path("/etc/netns", attached.name).exists()
    assert all(p.poll() is not None for p in attached.processes)
    assert subprocess.run(["ip", "link", "show", attached.host_link], capture_output=True).returncode != 0
    # The pod IP is a local address of the control plane's namespace again.
    assert route(ip).startswith("local "), route(ip)


def route(ip: str) -> str:
    return subprocess.run(["ip", "-n", netns.current(), "route", "get", ip], capture_output=True,
                          text=True, check=True).stdout
