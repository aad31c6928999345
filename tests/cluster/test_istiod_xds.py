"""Configuration from the real istiod (dev): each proxied pod's configuration, asked for over ADS
as its pilot-agent would (tests/cluster/agent.py), is complete; its endpoints are the kwok pod
IPs the controllers' EndpointSlices list; its inbound RBAC names the principals the overlay's
AuthorizationPolicies state; and the static bootstrap made of it passes `envoy --mode validate`.
Each check has a twin that makes it fail."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import agent
from conftest import Overlay, rendered
from outside_tools import envoy_binary, run

pytestmark = pytest.mark.parametrize("overlay", ["dev"], indirect=True)

NAMESPACE = "bookshop"
DOMAIN = "svc.cluster.local"
RBAC_TYPES = ("type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
              "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC")
# How long istiod may take to push a change it watched (its debounce is 100 ms to 10 s).
PUSH_TIMEOUT = 30


def walk(node: Any):
    """Every dict inside `node`."""
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from walk(child)


def by_name(pods: list[agent.Proxy], prefix: str) -> list[agent.Proxy]:
    found = [p for p in pods if p.name.startswith(prefix)]
    assert found, f"no proxy named {prefix}*"
    return found


def endpoints(xds: dict, cluster_name: str) -> set[str]:
    """The addresses istiod's EDS answered for `cluster_name`."""
    return {e["endpoint"]["address"]["socket_address"]["address"]
            for a in xds["endpoints"] if a["cluster_name"] == cluster_name
            for group in a.get("endpoints", []) for e in group.get("lb_endpoints", [])}


def slice_addresses(overlay: Overlay, service: str) -> set[str]:
    slices = overlay.cluster.get("endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={service}")
    return {a for s in slices["items"] for e in s.get("endpoints") or []
            if e["conditions"].get("ready") for a in e["addresses"]}


def principals(xds: dict) -> set[str]:
    """The peer identities the inbound RBAC filters of a proxy's listeners allow."""
    found = set()
    for node in walk(xds["listeners"]):
        if node.get("@type") in RBAC_TYPES:
            for match in walk(node):
                name = match.get("principal_name", {})
                if "exact" in name:
                    found.add(name["exact"])
    return found


def stated_principals(docs: list[dict], labels: dict[str, str]) -> set[str]:
    """The principals the AuthorizationPolicies that select a pod with `labels` state."""
    found = set()
    for policy in (d for d in docs if d["kind"] == "AuthorizationPolicy"
                   and d["metadata"].get("namespace", NAMESPACE) == NAMESPACE):
        selector = policy["spec"].get("selector", {}).get("matchLabels", {})
        if selector.items() <= labels.items():
            for rule in policy["spec"].get("rules", []):
                for source in rule.get("from", []):
                    found |= {f"spiffe://{p}" for p in source["source"].get("principals", [])}
    return found


def pod_labels(provisioned: agent.Provisioned, proxy: agent.Proxy) -> dict[str, str]:
    """The pod's labels as its node told istiod (pilot-agent reads them from the pod)."""
    return provisioned.xds(proxy)["node"]["metadata"]["LABELS"]


def test_every_proxy_got_a_complete_configuration_from_istiod(overlay: Overlay, provisioned: agent.Provisioned):
    for proxy in provisioned.proxies:
        xds = provisioned.xds(proxy)
        # The node pilot-agent builds: the pod's type, IP, name and DNS domain.
        kind = "router" if proxy.namespace == "istio-system" else "sidecar"
        assert xds["node"]["id"] == f"{kind}~{proxy.ip}~{proxy.name}.{proxy.namespace}~{proxy.namespace}.{DOMAIN}"
        assert xds["clusters"] and xds["listeners"], f"{proxy.base}: no clusters or listeners"
        # Every EDS cluster got its endpoints; every route a listener names was answered (the
        # bootstrap is written only then).
        eds = {c.get("eds_cluster_config", {}).get("service_name") or c["name"]
               for c in xds["clusters"] if c.get("type") == "EDS"}
        assert eds <= {a["cluster_name"] for a in xds["endpoints"]}, f"{proxy.base}: EDS unanswered"
        assert provisioned.bootstrap(proxy).is_file()
    # istiod placed each sidecar at its pod: inbound clusters for its Service's port.
    for name, port in (("marketplace", 8080), ("recommendations", 50051)):
        for proxy in by_name(provisioned.proxies, name):
            inbound = {c["name"] for c in provisioned.xds(proxy)["clusters"] if c["name"].startswith("inbound|")}
            assert f"inbound|{port}||" in inbound, f"{proxy.base}: {inbound}"


def test_istiod_sends_nothing_to_a_proxy_whose_token_is_another_identitys(overlay: Overlay,
                                                                          provisioned: agent.Provisioned,
                                                                          tmp_path: Path):
    """The twin of the completeness check: the marketplace's node with a token of the
    recommendations ServiceAccount; istiod's xDS server matches the authenticated identity
    against the node's namespace and service account and closes the stream."""
    proxy = by_name(provisioned.proxies, "marketplace")[0]
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / f"{proxy.base}.token").write_text(
        agent.token(overlay.cluster, NAMESPACE, "recommendations", pod=None))
    with pytest.raises(RuntimeError, match="PermissionDenied|Unauthenticated") as refused:
        agent.configure(overlay.cluster, [proxy], tmp_path, tmp_path / "xds")
    assert "recommendations" in str(refused.value)
    assert not (tmp_path / "xds" / f"{proxy.base}.xds.json").exists()


def service_ports(overlay: Overlay) -> dict[str, list[int]]:
    """The bookshop's Services with a selector, and their ports."""
    services = overlay.cluster.get("services", "-n", NAMESPACE)["items"]
    return {s["metadata"]["name"]: [p["port"] for p in s["spec"]["ports"]]
            for s in services if s["spec"].get("selector")}


def test_the_eds_endpoints_are_the_kwok_pod_ips_of_the_endpointslices(overlay: Overlay, provisioned: agent.Provisioned):
    checked = set()
    for service, ports in service_ports(overlay).items():
        expected = slice_addresses(overlay, service)
        assert expected and all(ip.startswith("10.244.") for ip in expected), expected
        for proxy in provisioned.proxies:
            xds = provisioned.xds(proxy)
            for port in ports:
                name = f"outbound|{port}||{service}.{NAMESPACE}.{DOMAIN}"
                if any(a["cluster_name"] == name for a in xds["endpoints"]):
                    got = endpoints(xds, name)
                    assert got == expected, f"{proxy.base} → {name}: EDS {got}, slices {expected}"
                    checked.add((proxy.name.split("-")[0], service))
    # At least the calls the bookshop makes: the gateway to the marketplace, it to recommendations.
    assert {("istio", "marketplace"), ("marketplace", "recommendations")} <= checked, checked


def test_the_inbound_rbac_names_the_principals_the_authorization_policies_state(overlay: Overlay,
                                                                               provisioned: agent.Provisioned):
    docs = rendered(overlay)
    for name in ("marketplace", "recommendations"):
        for proxy in by_name(provisioned.proxies, name):
            stated = stated_principals(docs, pod_labels(provisioned, proxy))
            assert stated, f"no AuthorizationPolicy names a principal for {proxy.base}"
            assert principals(provisioned.xds(proxy)) == stated, proxy.base


def test_a_changed_authorization_policy_changes_the_inbound_rbac(overlay: Overlay, provisioned: agent.Provisioned,
                                                                tmp_path: Path):
    """The twin: the marketplace's policy, applied with another principal, is what istiod then
    sends, and no longer what the overlay states; the overlay's policy is applied back."""
    cluster = overlay.cluster
    docs = rendered(overlay)
    policy = next(d for d in docs if d["kind"] == "AuthorizationPolicy" and d["metadata"]["name"] == "marketplace")
    changed = json.loads(json.dumps(policy))
    other = "cluster.local/ns/bookshop/sa/recommendations"
    changed["spec"]["rules"][0]["from"][0]["source"]["principals"] = [other]
    proxy = by_name(provisioned.proxies, "marketplace")[0]
    cluster.apply(yaml.safe_dump(changed))
    try:
        deadline = time.monotonic() + PUSH_TIMEOUT
        while True:
            got = principals(agent.configure(cluster, [proxy], provisioned.sds_dir.parent, tmp_path).xds(proxy))
            if f"spiffe://{other}" in got or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert got == {f"spiffe://{other}"}
        assert got != stated_principals(docs, pod_labels(provisioned, proxy))
    finally:
        cluster.apply(yaml.safe_dump(policy))


def validate(bootstrap: Path) -> tuple[int, str]:
    result = run([envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--log-level", "error"], timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_each_bootstrap_passes_envoy_validate(overlay: Overlay, provisioned: agent.Provisioned):
    for proxy in provisioned.proxies:
        code, output = validate(provisioned.bootstrap(proxy))
        assert code == 0, f"{proxy.base}: {output[-2000:]}"


def test_a_bootstrap_with_an_istio_proxy_filter_back_fails_envoy_validate(overlay: Overlay,
                                                                          provisioned: agent.Provisioned,
                                                                          tmp_path: Path):
    """The twin: one of the istio-proxy filters the converter removes (its differences file says
    which), put back into the marketplace's bootstrap, is one upstream Envoy cannot load."""
    proxy = by_name(provisioned.proxies, "marketplace")[0]
    config = json.loads(provisioned.bootstrap(proxy).read_text())
    managers = [n for n in walk(config["static_resources"]["listeners"]) if "http_filters" in n]
    assert managers, "no HTTP connection manager in the marketplace's bootstrap"
    managers[0]["http_filters"].insert(0, {"name": "istio.stats", "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": "type.googleapis.com/stats.PluginConfig", "value": {}}})
    broken = tmp_path / "bootstrap.json"
    broken.write_text(json.dumps(config))
    code, output = validate(broken)
    assert code != 0, "envoy accepted an istio-proxy filter"


def test_a_new_pod_changes_the_endpoints_istiod_sends(overlay: Overlay, provisioned: agent.Provisioned,
                                                      tmp_path: Path):
    """The twin of the EDS check, last (it changes the cluster, then puts it back): one more
    recommendations pod, at a new kwok IP; the endpoints fetched before no longer match the
    slices, and istiod's new answer does."""
    cluster = overlay.cluster
    caller = by_name(provisioned.proxies, "marketplace")[0]
    name = f"outbound|50051||recommendations.{NAMESPACE}.{DOMAIN}"
    before = endpoints(provisioned.xds(caller), name)
    replicas = cluster.get("deployment", "recommendations", "-n", NAMESPACE)["spec"]["replicas"]
    cluster.kubectl("scale", "deployment/recommendations", "-n", NAMESPACE, f"--replicas={replicas + 1}")
    try:
        cluster.kubectl("rollout", "status", "deployment/recommendations", "-n", NAMESPACE, "--timeout=120s")
        now = slice_addresses(overlay, "recommendations")
        assert len(now) == replicas + 1 and before < now, (before, now)
        deadline = time.monotonic() + PUSH_TIMEOUT
        while True:
            got = endpoints(agent.configure(cluster, [caller], provisioned.sds_dir.parent, tmp_path).xds(caller), name)
            if got == now or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert got == now, f"EDS {got}, slices {now}"
    finally:
        cluster.kubectl("scale", "deployment/recommendations", "-n", NAMESPACE, f"--replicas={replicas}")
        cluster.kubectl("rollout", "status", "deployment/recommendations", "-n", NAMESPACE, "--timeout=120s")
