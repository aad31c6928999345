"""What the mesh overlays promise: every object part of the bookshop, pods ready for a sidecar,
per-overlay sampling, HTTPS in prod, autoscaling suited to a sidecar, and the pods as Istio's
injector makes them (what docs/mesh.md claims)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import istio_tools
import mesh_checks
import render
import schemas
from mesh_renders import MESH_RENDERS, broken
from outside_tools import REPO_ROOT, require_tool, run


# --- what the overlays promise ---------------------------------------------------------------

def _one(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("name", list(render.RENDERS))
def test_every_object_is_part_of_the_bookshop(name: str, docs) -> None:
    assert [f"{d['kind']}/{d['metadata']['name']}" for d in docs[name]
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "bookshop"] == []


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_pods_are_ready_for_a_sidecar(name: str, docs) -> None:
    namespace = _one(docs[name], "Namespace", "bookshop")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert _one(docs[name], "PeerAuthentication", "default")["spec"]["mtls"]["mode"] == "STRICT"
    for service in ("recommendations", "marketplace"):
        pod = _one(docs[name], "Deployment", service)["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert pod["metadata"]["labels"]["version"]
        assert annotations["sidecar.istio.io/nativeSidecar"] == "true"
        assert "holdApplicationUntilProxyStarts: true" in annotations["proxy.istio.io/config"]
        assert 'EXIT_ON_ZERO_ACTIVE_CONNECTIONS: "true"' in annotations["proxy.istio.io/config"]
        for key in ("proxyCPU", "proxyMemory", "proxyMemoryLimit"):
            assert annotations[f"sidecar.istio.io/{key}"]
        # No CPU limit on the proxy (docs/reliability.md): throttling it delays every request.
        assert "sidecar.istio.io/proxyCPULimit" not in annotations
        # Admin ports are not on the Services under STRICT mTLS (metrics merging serves them).
        ports = _one(docs[name], "Service", service)["spec"]["ports"]
        assert [p["name"] for p in ports if "admin" in p["name"]] == []


def test_sampling_is_per_overlay_at_the_ingress(docs) -> None:
    for name, percentage in (("dev", 100), ("prod", 10)):
        gateway = _one(docs[name], "Telemetry", "ingressgateway")
        assert gateway["metadata"]["namespace"] == "istio-system"
        assert [t["randomSamplingPercentage"] for t in gateway["spec"]["tracing"]] == [percentage]
        sidecars = _one(docs[name], "Telemetry", "mesh")
        assert [t["randomSamplingPercentage"] for t in sidecars["spec"]["tracing"]] == [percentage]


def test_prod_serves_https_for_its_one_host(docs) -> None:
    gateway = _one(docs["prod"], "Gateway", "bookshop")
    servers = {s["port"]["protocol"]: s for s in gateway["spec"]["servers"]}
    assert servers["HTTPS"]["tls"]["credentialName"]
    assert servers["HTTP"]["tls"]["httpsRedirect"] is True
    assert servers["HTTP"]["hosts"] == servers["HTTPS"]["hosts"] == ["bookshop.example.com"]


def test_fault_injection_is_off_except_in_its_overlay(docs) -> None:
    for name in ("dev", "prod"):
        assert all("fault" not in route for route in _one(docs[name], "VirtualService", "recommendations")["spec"]["http"])
    [route] = _one(docs["dev-faults"], "VirtualService", "recommendations")["spec"]["http"]
    assert route["fault"]["abort"]["grpcStatus"] == "UNAVAILABLE"
    assert mesh_checks.seconds(route["fault"]["delay"]["fixedDelay"]) > 0.5


@pytest.mark.parametrize("name", [n for n, (_, components) in render.RENDERS.items()
                                  if "hpa-pdb" in components or n == "prod"])
def test_autoscalers_scale_on_the_app_container(name: str, docs) -> None:
    assert mesh_checks.check_container_metrics(docs[name]) == []


def test_an_autoscaler_on_a_missing_container_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("kustomize/components/hpa-pdb/marketplace.yaml",
                                                   "container: marketplace", "container: istio-proxy")))
    assert any("container istio-proxy is not in Deployment/marketplace" in p for p in mesh_checks.check_container_metrics(docs))


def test_an_autoscaler_on_the_whole_pod_is_caught(tmp_path: Path) -> None:
    docs = render.parse(broken(tmp_path, "prod", ("kustomize/components/hpa-pdb/recommendations.yaml",
                                                   "    - type: ContainerResource\n      containerResource:\n"
                                                   "        name: cpu\n        container: recommendations\n",
                                                   "    - type: Resource\n      resource:\n        name: cpu\n")))
    assert any("HorizontalPodAutoscaler/recommendations: a Resource metric" in p
               for p in mesh_checks.check_container_metrics(docs))


@pytest.mark.parametrize("name", ["prod"])
def test_prod_autoscaling_budgets_and_spread_suit_a_sidecar(name: str, docs) -> None:
    for service in ("recommendations", "marketplace"):
        [metric] = _one(docs[name], "HorizontalPodAutoscaler", service)["spec"]["metrics"]
        assert metric["type"] == "ContainerResource"
        assert metric["containerResource"]["container"] == service
        assert _one(docs[name], "PodDisruptionBudget", service)["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        spread = _one(docs[name], "Deployment", service)["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c.get("nodeTaintsPolicy") for c in spread} == {"Honor"}


# --- the pods as Istio's injector makes them (what docs/mesh.md claims) ------------------------

def _injected_pod(injected: dict[str, list[dict]], name: str, service: str) -> dict:
    return _one(injected[name], "Deployment", service)["spec"]["template"]


# docs/reliability.md: measured, with no CPU limit (the injector then sets none: it takes the
# pod's annotations instead of its defaults, which have one).
PROXY_RESOURCES = {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def test_a_cpu_limit_annotation_would_reach_the_injected_proxy(rendered, istioctl, install) -> None:
    """The twin of the check below: the injector copies a proxyCPULimit annotation into the
    proxy's limits, so its absence there is the annotation's absence, not the injector's choice."""
    text = rendered[MESH_RENDERS[0]].replace("sidecar.istio.io/proxyMemoryLimit:",
                                             'sidecar.istio.io/proxyCPULimit: "2"\n        sidecar.istio.io/proxyMemoryLimit:')
    assert "proxyCPULimit" in text
    for service in ("recommendations", "marketplace"):
        spec = _one(istio_tools.parse(istio_tools.inject(istioctl, text, install)), "Deployment", service)
        [proxy] = [c for c in spec["spec"]["template"]["spec"]["initContainers"] if c["name"] == "istio-proxy"]
        assert proxy["resources"]["limits"].get("cpu") == "2"


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_the_sidecar_is_native_and_sized_per_pod(name: str, injected) -> None:
    for service in ("recommendations", "marketplace"):
        spec = _injected_pod(injected, name, service)["spec"]
        [proxy] = [c for c in spec["initContainers"] if c["name"] == "istio-proxy"]
        assert proxy["restartPolicy"] == "Always"  # a native sidecar: up before the app, down after it
        assert proxy["resources"] == PROXY_RESOURCES
        env = {e["name"]: e.get("value") for e in proxy.get("env", [])}
        assert env["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true"
        # Istio CNI: no privileged istio-init container.
        assert "istio-init" not in [c["name"] for c in spec["initContainers"]]


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_every_container_meets_the_restricted_pod_security_standard(name: str, injected) -> None:
    for service in ("recommendations", "marketplace"):
        spec = _injected_pod(injected, name, service)["spec"]
        pod_context = spec.get("securityContext", {})
        for container in spec["containers"] + spec.get("initContainers", []):
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("allowPrivilegeEscalation") is False, container["name"]
            assert context.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
            assert not set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}, container["name"]
            assert context.get("runAsNonRoot") is True or context.get("runAsUser", 0) != 0, container["name"]
            assert (context.get("seccompProfile") or pod_context.get("seccompProfile", {})).get("type") == "RuntimeDefault"


@pytest.mark.parametrize("name", MESH_RENDERS)
def test_probes_and_scrapes_go_through_the_sidecar_agent(name: str, injected, docs) -> None:
    # Under STRICT mTLS the kubelet and Prometheus reach the agent on 15020, never an intercepted port.
    for service, admin in (("recommendations", "9464"), ("marketplace", "9465")):
        pod = _injected_pod(injected, name, service)
        [app] = [c for c in pod["spec"]["containers"] if c["name"] == service]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert app[probe]["httpGet"]["port"] == 15020, (service, probe)
            assert app[probe]["httpGet"]["path"].startswith(f"/app-health/{service}/")
        annotations = pod["metadata"]["annotations"]
        assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("15020", "/stats/prometheus")
        [proxy] = [c for c in pod["spec"]["initContainers"] if c["name"] == "istio-proxy"]
        merged = {e["name"]: e.get("value") for e in proxy["env"]}["ISTIO_PROMETHEUS_ANNOTATIONS"]
        assert json.loads(merged) == {"scrape": "true", "path": "/metrics", "port": admin}
        # The render itself still names the app's admin port (the merge source).
        assert _one(docs[name], "Deployment", service)["spec"]["template"]["metadata"]["annotations"][
            "prometheus.io/port"] == admin


def test_yamllint_finds_nothing_in_istio() -> None:
    # test_yamllint.py lints the other YAML trees; istio/ is this file's.
    yamllint = require_tool("yamllint")
    result = run([yamllint, "--strict", "--config-file", ".yamllint.yaml", "istio"])
    assert result.returncode == 0, result.stdout


def test_the_verification_probes_are_valid_and_restricted() -> None:
    # istio/verify/probes.yaml, which docs/mesh.md has users apply by hand.
    documents = istio_tools.parse((REPO_ROOT / "istio/verify/probes.yaml").read_text())
    assert [p for d in documents for p in schemas.kubernetes_problems(d)] == []
    for pod in (d for d in documents if d["kind"] == "Pod"):
        assert pod["spec"]["serviceAccountName"] == "default"  # not an identity any policy allows
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
