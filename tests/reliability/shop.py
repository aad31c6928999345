"""The marketplace calling recommendations instances through Envoy, all real processes on
loopback: instances come and go the way Kubernetes starts, stops and kills pods."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from bookshop import SETTINGS
from envoy_proxy import Envoy
from load import PAGE_TIMEOUT, WHOLE, judge
from loopback import STOP_TIMEOUT, Process, free_ports, http_get, wait_until
from istio_sidecar import SidecarConfig


# How long the removal of an endpoint takes to reach the sidecars: the endpoint controller,
# istiod's debounce (100 ms at least) and its push. Well under a second in a quiet cluster;
# a round second here, so the drain delay (not a loopback file rename) is what covers it.
ENDPOINT_LAG = 1.0


class Instance:
    """One recommendations process (a pod) on its own gRPC and admin ports. Unless `settings`
    say otherwise it keeps the services' shutdown defaults (SHUTDOWN_DELAY_SECONDS 5,
    SHUTDOWN_TIMEOUT_SECONDS 20): the drain under test is the one production runs."""

    def __init__(self, bin_dir: Path, log_dir: Path, name: str, settings: dict[str, str]) -> None:
        self.name = name
        self.grpc_port, self.admin_port = free_ports(2)
        env = {"LOG_FORMAT": "json", "RUST_LOG": "info", **settings, "GRPC_PORT": str(self.grpc_port),
               "ADMIN_PORT": str(self.admin_port)}
        self.process = Process(name, [str(bin_dir / "recommendations")], log_dir / f"{name}.log", env,
                               isolated=True)
        # time.monotonic() of the SIGTERM and of the moment it was seen gone.
        self.terminated_at: float | None = None
        self.exited_at: float | None = None

    def start(self) -> Instance:
        """Start and wait until ready, as the readiness probe would (the kubelet restarts a
        killed container in the same pod, on the same ports: so does calling this again)."""
        self.process.start_ready(f"http://127.0.0.1:{self.admin_port}/readyz")
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        assert self.process.popen is not None, f"{self.name} never started"
        return self.process.popen

    def terminate(self) -> None:
        """SIGTERM, as the kubelet sends it to a pod being deleted."""
        self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the process is gone at once (an OOM kill, a crashed node)."""
        self.popen.kill()
        self.popen.wait(timeout=STOP_TIMEOUT)


class Shop:
    """Envoy, two recommendations instances in its endpoint list, and the marketplace whose
    recommendations address is Envoy's listener."""

    def __init__(self, bin_dir: Path, work_dir: Path, sidecar: SidecarConfig, *, retries: bool = True,
                 recommendations_settings: dict[str, str] | None = None) -> None:
        self.bin_dir = bin_dir
        self.recommendations_settings = recommendations_settings or {}
        self.log_dir = work_dir / "logs"
        self.probes = sidecar.probes
        self.envoy = Envoy(sidecar, work_dir, self.log_dir, retries=retries)
        self.started = 0
        self.instances: list[Instance] = []
        self.retired: list[Instance] = []
        self.http_port, self.admin_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.http_port}/"
        env = {**SETTINGS, "HTTP_PORT": str(self.http_port), "ADMIN_PORT": str(self.admin_port),
               "RECOMMENDATIONS_HOST": self.envoy.address[0], "RECOMMENDATIONS_PORT": str(self.envoy.address[1])}
        self.marketplace = Process("marketplace", [str(bin_dir / "marketplace")], self.log_dir / "marketplace.log",
                                   env, isolated=True)

    def new_instance(self) -> Instance:
        self.started += 1
        return Instance(self.bin_dir, self.log_dir, f"recommendations-{self.started}",
                        self.recommendations_settings).start()

    def start(self) -> Shop:
        try:
            self.envoy.start()
            self.instances = [self.new_instance(), self.new_instance()]
            self.envoy.write_endpoints([instance.grpc_port for instance in self.instances])
            self.envoy.wait_healthy([instance.grpc_port for instance in self.instances])
            self.marketplace.start_ready(f"http://127.0.0.1:{self.admin_port}/readyz")
            wait_until("the marketplace to show recommendations through Envoy",
                       lambda: judge(*self.page())[0] == WHOLE, timeout=20)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.marketplace.stop()
        # Killed, not drained: the drain is what `roll` tests; at teardown it would only add
        # SHUTDOWN_DELAY_SECONDS per instance.
        for instance in [*self.instances, *self.retired]:
            if instance.process.popen is not None and instance.popen.poll() is None:
                instance.kill()
        self.envoy.stop()

    def __enter__(self) -> Shop:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def roll(self, slot: int, *, kill: bool = False, endpoint_lag: float = ENDPOINT_LAG) -> Instance:
        """Replace one instance the way a Deployment's rolling update does (maxSurge 1,
        maxUnavailable 0): the new pod starts; once ready, the endpoint controller lists it;
        then the old pod is deleted, which sends it SIGTERM and removes its endpoint at the
        same time (Kubernetes does both concurrently, nothing orders them), the removal
        reaching the sidecar `endpoint_lag` seconds later. The old instance, draining, is
        returned. With `kill`, a broken copy: SIGKILL instead, no drain at all."""
        old, new = self.instances[slot], self.new_instance()
        self.envoy.add_endpoint(new.grpc_port)
        old.terminated_at = time.monotonic()
        if kill:
            old.kill()
        else:
            old.terminate()
        time.sleep(endpoint_lag)
        self.envoy.remove_endpoint(old.grpc_port)
        self.instances[slot] = new
        self.retired.append(old)
        return old

    def crash(self, instances: list[Instance]) -> None:
        """SIGKILL, as an OOM kill or a crashed container: calls to it are refused at once, and
        the kubelet marks the pod not Ready (a container that exited is not ready), which
        removes its endpoint; the removal reaches the sidecar ENDPOINT_LAG later. Meanwhile
        only the sidecar's retries and outlier detection stand between the pages and it."""
        for instance in instances:
            instance.kill()
        time.sleep(ENDPOINT_LAG)
        gone = {instance.grpc_port for instance in instances}
        self.envoy.write_endpoints([port for port in self.envoy.ports if port not in gone])

    def restart(self, instances: list[Instance]) -> tuple[float, float]:
        """The kubelet restarting crashed containers: each serves again (on its old ports), is
        marked Ready by its probes at worst `probes.ready_after_serving` later, and its endpoint
        reaches the sidecar ENDPOINT_LAG after that. When the first served again and when the
        endpoints were listed (time.monotonic())."""
        serving = None
        for instance in instances:
            instance.start()
            serving = serving or time.monotonic()
        assert serving is not None, "nothing to restart"
        time.sleep(self.probes.ready_after_serving + ENDPOINT_LAG)
        self.envoy.write_endpoints([*self.envoy.ports, *(instance.grpc_port for instance in instances)])
        return serving, time.monotonic()

    def page(self) -> tuple[int, str]:
        status, _, body = http_get(self.url, timeout=PAGE_TIMEOUT)
        return status, body

    def wait_retired_exit(self, timeout: float) -> None:
        """Until every replaced instance has exited, noting when each was seen gone."""
        def all_gone() -> bool:
            for old in self.retired:
                if old.exited_at is None and old.popen.poll() is not None:
                    old.exited_at = time.monotonic()
            return all(old.exited_at is not None for old in self.retired)
        try:
            wait_until("every replaced instance to exit", all_gone, timeout=timeout, interval=0.02)
        except AssertionError as err:
            running = [old for old in self.retired if old.exited_at is None]
            raise AssertionError(f"{err}: {[old.name for old in running]} still running after they were "
                                 f"replaced:\n{running[0].process.log_tail()}") from None

    def fallbacks(self) -> dict[str, int]:
        """marketplace_recommendations_fallback_total by reason, from its /metrics."""
        status, _, body = http_get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5)
        assert status == 200, f"marketplace /metrics answered {status}"
        return {reason: int(float(value)) for reason, value in
                re.findall(r'^marketplace_recommendations_fallback_total\{reason="(\w+)"\} (\S+)$', body, re.M)}
