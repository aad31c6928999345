"""Istio's translation (mesh-xds) and the real Envoys that run what it wrote: one process per
workload, each with its own identity (its own SDS directory) and an admin port for readiness
and statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loopback import Process, free_ports, get_json
from outside_tools import envoy_binary, require_tool, run

from inputs import INSTALL_CONFIG

# What the harness adds to, or changes in, mesh-xds's bootstrap (docs/mesh.md lists these too).
WILDCARDS = ("0.0.0.0", "::")


def translate(inputs: list[Path], sds_dir: Path, out: Path) -> Path:
    """`mesh-xds`: Istio's own config generation for every Pod of `inputs`, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    args = [require_tool("mesh-xds"), "--mesh-config", str(INSTALL_CONFIG), "--sds-dir", str(sds_dir),
            "--out", str(out)]
    for path in inputs:
        args += ["--in", str(path)]
    result = run(args, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"mesh-xds failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return out


def _walk(node: Any, visit) -> None:
    if isinstance(node, dict):
        visit(node)
        for child in node.values():
            _walk(child, visit)
    elif isinstance(node, list):
        for child in node:
            _walk(child, visit)


def runnable(bootstrap: dict[str, Any], *, pod_ip: str, sds_dir: Path,
             admin_port: int) -> tuple[dict[str, Any], list[str]]:
    """mesh-xds's bootstrap made to run beside the others on one loopback, and what changed:
    - an admin listener on 127.0.0.1 (readiness, statistics);
    - a listener on the wildcard address binds the pod's own address instead (in a pod, the
      wildcard is the pod's own network namespace; here all pods share one).
    Every SDS file it reads must be in `sds_dir`, this workload's own (its identity)."""
    config = json.loads(json.dumps(bootstrap))
    changes = [f"admin: 127.0.0.1:{admin_port} added (readiness and statistics for the harness)"]
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    for listener in config.get("static_resources", {}).get("listeners", []):
        address = listener.get("address", {}).get("socket_address", {})
        if address.get("address") in WILDCARDS:
            changes.append(f"listener {listener.get('name')}: binds {pod_ip}:{address.get('port_value')} "
                           f"instead of {address['address']} (the pod's own address)")
            address["address"] = pod_ip
        if listener.get("additional_addresses"):
            changes.append(f"listener {listener.get('name')}: additional addresses dropped (one pod address)")
            del listener["additional_addresses"]

    def check_sds(node: dict[str, Any]) -> None:
        source = node.get("path_config_source")
        if isinstance(source, dict) and Path(source.get("path", "")).parent != sds_dir:
            raise RuntimeError(f"the bootstrap reads {source.get('path')}, not a file of {sds_dir}")
    _walk(config, check_sds)
    return config, changes


class Envoy:
    """One workload's Envoy on the bootstrap mesh-xds wrote for it (made runnable)."""

    def __init__(self, name: str, bootstrap: Path, *, pod_ip: str, sds_dir: Path, log_dir: Path) -> None:
        self.name = name
        (self.admin_port,) = free_ports(1)
        config, self.changes = runnable(json.loads(bootstrap.read_text()), pod_ip=pod_ip, sds_dir=sds_dir,
                                        admin_port=self.admin_port)
        self.config_path = bootstrap.with_name(bootstrap.name.replace(".bootstrap.json", ".envoy.json"))
        self.config_path.write_text(json.dumps(config, indent=2))
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        # One worker thread each: four Envoys share two cores. No hot restart: several Envoys on
        # one host would otherwise contend for the same shared memory.
        self.process = Process(f"envoy-{name}", [envoy_binary(), "-c", str(self.config_path), "--concurrency", "1",
                                                 "--disable-hot-restart", "--log-level", "warning"],
                               log_dir / f"envoy-{name}.log", isolated=True)

    def start(self) -> Envoy:
        # /ready answers 200 once the server is LIVE: static listeners bound, secrets loaded.
        self.process.start_ready(f"{self.admin}/ready")
        return self

    def stop(self) -> None:
        self.process.stop()

    def counters(self, contains: str) -> dict[str, int]:
        """Counters whose name contains `contains`."""
        return counters_in(get_json(f"{self.admin}/stats?format=json&filter={contains}"), contains)

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON access lines Istio's Telemetry turned on (stdout, in the process's log)."""
        return access_lines(self.process.log())


def start_all(envoys: list[Any]) -> None:
    """Starts each Envoy until ready; if one never is, those started are stopped again."""
    try:
        for envoy in envoys:
            envoy.start()
    except BaseException:
        for envoy in envoys:
            envoy.stop()
        raise


class Envoys:
    """The Envoys of a harness, all running one variant (`flip`) of the manifests: `use` stops
    them and starts those `_envoys_for` that variant makes. Both harnesses (this loopback mesh and
    tests/cluster's pods) share this shape; each says how a variant's Envoys are made."""

    def __init__(self) -> None:
        self.envoys: dict[str, Any] = {}
        self.flip: Any = None  # what the Envoys run

    def _envoys_for(self, flip: Any) -> dict[str, Any]:
        raise NotImplementedError

    def use(self, flip: Any) -> Any:
        if self.flip == flip:
            return self
        self._stop_envoys()
        self.flip = None
        self.envoys = self._envoys_for(flip)
        start_all(list(self.envoys.values()))
        self.flip = flip
        return self

    def _stop_envoys(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.envoys = {}


def counters_in(stats: dict[str, Any], contains: str) -> dict[str, int]:
    """The counters of an admin `/stats?format=json` answer whose name contains `contains`."""
    return {s["name"]: s["value"] for s in stats["stats"] if "value" in s and contains in s["name"]}


def access_lines(log: str) -> list[dict[str, Any]]:
    """The JSON access lines in an Envoy's output (its own log lines are not JSON)."""
    lines = []
    for line in log.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines
