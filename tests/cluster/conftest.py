"""One fresh cluster per overlay (pytest groups the tests by overlay, so each comes up once),
the overlay applied to it with the README's command; and the logs of its processes attached to
a failing test's report."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import agent
import cluster
import istio
import failure_logs
from controlplane import ControlPlane
from outside_tools import REPO_ROOT, required_dir

@dataclass
class Overlay:
    """An overlay applied to its own cluster."""
    cluster: ControlPlane
    applied: cluster.Applied

    @property
    def name(self) -> str:
        return self.applied.overlay


def rendered(overlay: Overlay) -> list[dict]:
    """The overlay as the README's command renders it, with our kubectl."""
    text = overlay.cluster.kubectl("kustomize", REPO_ROOT / "kustomize/overlays" / overlay.name).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    return required_dir("BOOKSHOP_TOOLS_BIN", "the Go tools built from tools/istio (cargo xtask test cluster builds them)")


@pytest.fixture(scope="session")
def kwok_module() -> Path:
    return required_dir("BOOKSHOP_KWOK_MODULE", "the source of the sigs.k8s.io/kwok module tools/istio/go.mod pins")


@pytest.fixture(scope="session")
def outputs() -> Path:
    """Where each cluster keeps its files (kubeconfig, logs, the apply's output)."""
    root = os.environ.get("BOOKSHOP_ARTIFACTS_DIR")
    return Path(root) / "cluster" if root else Path.cwd() / "target" / "cluster"


@pytest.fixture(scope="session", params=cluster.OVERLAYS)
def overlay(request, tools_bin: Path, kwok_module: Path, outputs: Path) -> Iterator[Overlay]:
    name = request.param
    progress = lambda line: print(f"\ncluster[{name}]: {line}", flush=True)  # noqa: E731
    with cluster.running(outputs / name, tools_bin, kwok_module, f"bookshop-test-{os.getpid()}",
                         progress, istio.install_files(name)) as running:
        yield Overlay(running, cluster.apply(running, name))


@pytest.fixture(scope="session")
def provisioned(overlay: Overlay) -> agent.Provisioned:
    """Every proxy's certificate from istiod's CA and configuration from istiod over ADS, as
    each pod's istio-agent would get them (tests/cluster/agent.py), beside the cluster's files."""
    return agent.provision(overlay.cluster, overlay.cluster.folder / "agents")


# The mesh's proof on the pods (capture, identities, istiod's configuration, the cases, the
# Gateway API ingress): marked `mesh`, which `cargo xtask test mesh` runs and
# `cargo xtask test cluster` leaves out (pytest -m).
MESH_MODULES = {"test_podnet", "test_identity", "test_istiod_xds", "test_shop_pods", "test_prod_pods",
                "test_gateway_api"}


def pytest_itemcollected(item) -> None:
    if item.module.__name__ in MESH_MODULES:
        item.add_marker(pytest.mark.mesh)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list) -> None:
    """The tests grouped by cluster, in OVERLAYS' order, test_gateway_api.py's (its own `overlay`
    parameter) last. pytest groups a session fixture's tests by parameter index, and a module's
    own parameter list starts at index 0, as dev's: without this, test_gateway_api.py's or
    test_prod_pods.py's cluster would come up between two of dev's tests, and dev's twice."""
    order = (*cluster.OVERLAYS, cluster.GATEWAY_API_OVERLAY)
    items.sort(key=lambda item: order.index(item.callspec.params["overlay"])
               if getattr(item, "callspec", None) is not None and "overlay" in item.callspec.params else -1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, the tails of the cluster's process logs, and of the pods' own (their app's
    and the Envoy that ran last) when the bookshop ran as its pods."""
    outcome = yield
    report = outcome.get_result()
    applied = item.funcargs.get("overlay")
    if report.when == "call" and report.failed and isinstance(applied, Overlay):
        failure_logs.attach(report, applied.cluster.logs)
        for pod in sorted((applied.cluster.folder / "pods").glob("*/")):
            failure_logs.attach(report, pod, newest=2)
