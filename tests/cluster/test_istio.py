"""istiod against the live API server: Istio's analyzers read the cluster, not files; istiod's
registry has every Service; the mesh's tracing provider names a Service that exists."""

from __future__ import annotations

from collections import Counter


import istio
from conftest import Overlay, rendered

DOMAIN = "svc.cluster.local"


def services(overlay: Overlay) -> set[str]:
    listed = overlay.cluster.get("services", "-A")["items"]
    return {f"{s['metadata']['name']}.{s['metadata']['namespace']}.{DOMAIN}" for s in listed}


def test_istioctl_analyze_on_the_live_cluster_reports_nothing(overlay: Overlay):
    # `default` is the cluster's own namespace, which none of our objects uses; the expected
    # EnvoyFilters draw IST0133 (istio.EXPECTED_ENVOYFILTERS says why).
    suppressed = ["IST0102=Namespace default",
                  *(f"IST0133=EnvoyFilter {name}" for name in sorted(istio.EXPECTED_ENVOYFILTERS))]
    report = istio.run_tool(overlay.cluster, "istioctl", "analyze", "--all-namespaces",
                            *(a for s in suppressed for a in ("--suppress", s)))
    assert report.returncode == 0 and not report.stdout.strip(), report.stdout
    assert "No validation issues found" in report.stderr, report.stderr


def test_istiods_webhook_validated_every_istio_object(overlay: Overlay):
    """istiod counts what its validating webhook passed, by resource (galley_validation_passed):
    at least every Istio object of the overlay went through it and passed."""
    plurals = {(crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd["spec"]["names"]["plural"]
               for crd in overlay.cluster.get("crd")["items"]}
    expected = Counter(plurals[(doc["apiVersion"].split("/")[0], doc["kind"])] for doc in rendered(overlay)
                       if doc["apiVersion"].split("/")[0].endswith("istio.io"))
    assert expected, "the overlay has no Istio object"
    passed = Counter()
    for sample in istio.metrics("galley_validation_passed"):
        passed[sample.labels["resource"]] += int(sample.value)
    short = {resource: (count, passed[resource]) for resource, count in expected.items() if passed[resource] < count}
    assert not short, f"resource: (objects, validations passed): {short}"


def test_istiods_registry_lists_every_service(overlay: Overlay):
    registry = {entry["hostname"] for entry in istio.debug("registryz")}
    missing = services(overlay) - registry
    assert not missing, f"istiod does not know {sorted(missing)}"


def test_the_tracing_provider_is_a_service_that_exists(overlay: Overlay):
    providers = {p["name"]: p for p in istio.mesh_config(overlay.cluster).get("extensionProviders", [])}
    tracer = providers["otel"]["opentelemetry"]["service"]
    assert tracer.endswith(DOMAIN) and tracer in services(overlay), f"no Service {tracer}"
