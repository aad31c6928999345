"""What the controllers, the scheduler, istiod's injector and kwok made of the overlay: every
Deployment rolled out with pods injected and Ready on the kwok nodes, spread as the topology
spread says; EndpointSlices listing the pods; disruption budgets computed by the real
disruption controller; and, last (it moves pods), a drain of one node within the budgets."""

from __future__ import annotations

from collections import Counter

from conftest import Overlay

NAMESPACE = "bookshop"
# The proxy's resources, by the annotation that asks for them (istio/workloads.yaml).
PROXY_RESOURCES = {"sidecar.istio.io/proxyCPU": ("requests", "cpu"),
                   "sidecar.istio.io/proxyMemory": ("requests", "memory"),
                   "sidecar.istio.io/proxyCPULimit": ("limits", "cpu"),
                   "sidecar.istio.io/proxyMemoryLimit": ("limits", "memory")}


def items(overlay: Overlay, kind: str, *args) -> list[dict]:
    return overlay.cluster.get(kind, *args)["items"]


def bookshop_pods(overlay: Overlay) -> list[dict]:
    pods = items(overlay, "pods", "-n", NAMESPACE)
    assert pods, "no pods in the bookshop namespace"
    return pods


def test_every_deployment_rolls_out(overlay: Overlay):
    assert overlay.applied.returncode == 0, overlay.applied.stderr
    assert not overlay.applied.rollout_failures, "\n".join(overlay.applied.rollout_failures)
    deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in items(overlay, "deployments", "-A")}
    # The install's ingress gateway rolls out beside the overlay's own.
    assert {("istio-system", "istio-ingressgateway"), (NAMESPACE, "recommendations"),
            (NAMESPACE, "marketplace")} <= deployments


def test_the_pods_are_ready_on_the_kwok_nodes_with_pod_ips(overlay: Overlay):
    nodes = {n["metadata"]["name"] for n in items(overlay, "nodes")}
    for pod in items(overlay, "pods", "-A"):
        name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        assert pod["spec"].get("nodeName") in nodes, f"{name} is not scheduled on a kwok node"
        ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        assert ready.get("Ready") == "True", f"{name} is not Ready: {pod['status']}"
        if not pod["spec"].get("hostNetwork"):
            assert pod["status"]["podIP"].startswith("10.244."), f"{name} has IP {pod['status'].get('podIP')}"


def test_istiods_webhook_injected_a_native_sidecar_with_the_asked_resources(overlay: Overlay):
    for pod in bookshop_pods(overlay):
        name = pod["metadata"]["name"]
        init = {c["name"]: c for c in pod["spec"].get("initContainers", [])}
        assert "istio-proxy" in init, f"{name} has no injected proxy"
        assert init["istio-proxy"].get("restartPolicy") == "Always", f"{name}'s proxy is not a native sidecar"
        assert "istio-proxy" not in {c["name"] for c in pod["spec"]["containers"]}
        # Istio CNI redirects the traffic: no privileged istio-init.
        assert "istio-init" not in init, f"{name} has istio-init although the install enables CNI"
        resources = init["istio-proxy"]["resources"]
        annotations = pod["metadata"].get("annotations", {})
        asked = {key: annotations[key] for key in PROXY_RESOURCES if key in annotations}
        assert asked, f"{name} asks for no proxy resources"
        for key, value in asked.items():
            section, resource = PROXY_RESOURCES[key]
            assert resources[section][resource] == value, f"{name}: {key}={value}, proxy has {resources}"


def test_the_pods_are_spread_as_their_topology_spread_says(overlay: Overlay):
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in items(overlay, "nodes")}
    pods = bookshop_pods(overlay)
    for pod in pods:
        for constraint in pod["spec"].get("topologySpreadConstraints", []):
            key = constraint["topologyKey"]
            same = {**constraint["labelSelector"]["matchLabels"],
                    **{k: pod["metadata"]["labels"][k] for k in constraint.get("matchLabelKeys", [])}}
            counts = Counter({labels[key]: 0 for labels in nodes.values()})
            counts.update(nodes[p["spec"]["nodeName"]][key] for p in pods
                          if same.items() <= p["metadata"]["labels"].items())
            skew = max(counts.values()) - min(counts.values())
            assert skew <= constraint["maxSkew"], f"{pod['metadata']['name']}: {key} skew {skew}: {dict(counts)}"


def test_endpointslices_list_the_ready_pods_of_each_service(overlay: Overlay):
    pods = bookshop_pods(overlay)
    for service in items(overlay, "services", "-n", NAMESPACE):
        name, selector = service["metadata"]["name"], service["spec"].get("selector")
        if not selector:
            continue
        expected = {p["status"]["podIP"] for p in pods if selector.items() <= p["metadata"]["labels"].items()}
        slices = items(overlay, "endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={name}")
        listed = {address for s in slices for e in s.get("endpoints") or []
                  if e["conditions"].get("ready") for address in e["addresses"]}
        assert expected and listed == expected, f"service {name}: slices list {listed}, pods are {expected}"


def test_the_disruption_budgets_allow_a_disruption(overlay: Overlay):
    budgets = items(overlay, "poddisruptionbudgets", "-n", NAMESPACE)
    if overlay.name == "prod":
        assert {b["metadata"]["name"] for b in budgets} >= {"recommendations", "marketplace"}
    for budget in budgets:
        assert budget["status"].get("disruptionsAllowed", 0) >= 1, f"{budget['metadata']['name']}: {budget['status']}"


def test_draining_a_node_keeps_every_budget(overlay: Overlay):
    """Last for its cluster (the last test of the last file): the drain evicts through the Eviction API, which refuses
    an eviction a budget forbids, so a drain that completes kept them; then everything rolls
    out again on the nodes left."""
    pods = bookshop_pods(overlay)
    node = Counter(p["spec"]["nodeName"] for p in pods).most_common(1)[0][0]
    drained = overlay.cluster.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                                      "--timeout=120s", check=False)
    assert drained.returncode == 0, drained.stderr
    assert "evicting pod bookshop/" in drained.stderr + drained.stdout
    for deployment in ("recommendations", "marketplace"):
        overlay.cluster.kubectl("rollout", "status", f"deployment/{deployment}", "-n", NAMESPACE, "--timeout=120s")
    left = [p for p in bookshop_pods(overlay) if "deletionTimestamp" not in p["metadata"]]
    assert all(p["spec"]["nodeName"] != node for p in left)
    for budget in items(overlay, "poddisruptionbudgets", "-n", NAMESPACE):
        status = budget["status"]
        assert status["currentHealthy"] >= status["desiredHealthy"], f"{budget['metadata']['name']}: {status}"
