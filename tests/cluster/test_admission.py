"""The overlay as the API server and its admission see it: accepted whole, with no warning;
the bookshop namespace enforcing Pod Security `restricted`; and broken copies of its objects
rejected at apply, each by the part of the server that should (schema, istiod's webhook, Pod
Security), with the server's error shown."""

from __future__ import annotations

import copy

import yaml

import istio
from conftest import Overlay, rendered

NAMESPACE = "bookshop"


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert found, f"the render has no {kind} {name or ''}"
    return copy.deepcopy(found[0])


def rejected(overlay: Overlay, obj: dict) -> str:
    """Applies `obj` (renamed, so it is a new object) and returns the server's error."""
    obj["metadata"]["name"] = "broken-" + obj["metadata"]["name"]
    result = overlay.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert result.returncode != 0, f"the server accepted a broken {obj['kind']}:\n{result.stdout}"
    print(f"server's error: {result.stderr.strip()}")
    return result.stderr


def test_every_object_is_accepted_without_a_warning(overlay: Overlay):
    applied = overlay.applied
    assert applied.returncode == 0, f"`{applied.overlay}` was not applied:\n{applied.stderr}"
    filters = istio.envoyfilters(rendered(overlay))
    assert filters <= istio.EXPECTED_ENVOYFILTERS, f"an EnvoyFilter not known to be needed: {filters}"
    warnings = [line for line in applied.stderr.splitlines() if line.startswith("Warning:")]
    # istiod's webhook warns once for each EnvoyFilter (istio.EXPECTED_ENVOYFILTERS says why).
    expected = [w for w in warnings if w.startswith(istio.ENVOYFILTER_WARNING)][:len(filters)]
    unexpected = [w for w in warnings if w not in expected]
    assert not unexpected, "the server warned:\n" + "\n".join(unexpected)
    assert "created" in applied.stdout


def test_the_bookshop_namespace_enforces_restricted(overlay: Overlay):
    labels = overlay.cluster.get("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"


def test_a_privileged_pod_is_rejected_in_the_bookshop_namespace(overlay: Overlay):
    """The control: the namespace's enforcement rejects what `restricted` forbids (the server
    itself allows privileged pods), while the overlay's own, injected pods were admitted."""
    deployment = one(rendered(overlay), "Deployment", "recommendations")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "recommendations", "namespace": NAMESPACE},
           "spec": deployment["spec"]["template"]["spec"]}
    # (privileged with allowPrivilegeEscalation false would be invalid for any namespace)
    pod["spec"]["containers"][0]["securityContext"].update(privileged=True, allowPrivilegeEscalation=True)
    error = rejected(overlay, pod)
    assert 'violates PodSecurity "restricted:latest"' in error and "privileged" in error


def test_a_deployment_restricted_forbids_draws_a_warning(overlay: Overlay):
    """The twin of the no-warning check: Pod Security warns about a Deployment whose pods it
    would reject, and that warning is what the check above reads."""
    deployment = one(rendered(overlay), "Deployment", "marketplace")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    deployment["metadata"]["name"] = "broken-marketplace"
    result = overlay.cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(deployment))
    assert "Warning: would violate PodSecurity" in result.stderr, result.stderr


def test_an_unknown_field_in_an_istio_object_is_rejected(overlay: Overlay):
    policy = one(rendered(overlay), "AuthorizationPolicy")
    policy["spec"]["actionn"] = "ALLOW"
    assert 'unknown field "spec.actionn"' in rejected(overlay, policy)


def test_an_authorization_policy_istiods_webhook_rejects_is_rejected(overlay: Overlay):
    """Well-formed for the CRD's schema and its CEL rules; istiod's validation forbids a source
    that names no one (the rule would match any caller, which was surely not meant)."""
    policies = [d for d in rendered(overlay) if d["kind"] == "AuthorizationPolicy"
                and any("principals" in s.get("source", {}) for r in d["spec"].get("rules", [])
                        for s in r.get("from", []))]
    assert policies, "no AuthorizationPolicy names principals"
    policy = copy.deepcopy(policies[0])
    policy["spec"]["rules"][0]["from"][0]["source"] = {}
    error = rejected(overlay, policy)
    assert "validation.istio.io" in error and "denied the request" in error
    assert "`from.source` must not be empty" in error
