"""Restarts and kills of recommendations under steady load, behind a real Envoy running what
Istio generates for the marketplace's sidecar (no active health check: Envoy learns of the
instances from EDS, its retries and outlier detection only): a rolling restart loses no page
and degrades none; a killed instance costs nothing while another is healthy, and when none is
left the pages degrade (never fail) and come back whole on their own once the probes have the
pod Ready again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from load import DEGRADED, FAILED, PAGE_TIMEOUT, WHOLE, Page, SteadyLoad, counts
from loopback import wait_until
from envoy_proxy import Envoy
from shop import ENDPOINT_LAG, Instance, Shop

# The time.sleep calls below are the scenario's durations: how long the load runs in each state
# (warm-up, between replacements, while no instance is left), as a cluster's own pace would
# have it. Nothing waits on a sleep for something to happen: that is wait_until's job.
ROUNDS = 3  # each instance is replaced this many times
WARM_UP = 1.0  # seconds of load before the first change
# Between two replacements (after the endpoint removal, shop.ENDPOINT_LAG after the SIGTERM).
# A new pod takes longer than this to pass its first readiness probe (every 5 s), so
# Kubernetes never replaces pods faster than this either.
DWELL = 1.0
# The services' SHUTDOWN_DELAY_SECONDS (5) + SHUTDOWN_TIMEOUT_SECONDS (20), and a margin.
DRAIN_BOUND = 5 + 20 + 10
TAIL = 0.5  # seconds of load after the last change
# What Envoy itself may take, once an endpoint is listed again, to send it calls that succeed
# (read the EDS file, connect): well under a second; generous.
ENVOY_SLACK = 2.0
# The longest a page waits on recommendations (RECOMMENDATIONS_TIMEOUT_MS, 500 ms) and a margin.
PAGE_BUDGET = 1.0


def show(pages: list[Page], origin: float, limit: int = 10) -> str:
    """The first pages that were not whole, times relative to `origin`."""
    bad = [page for page in pages if page.outcome != WHOLE][:limit]
    return "\n".join(f"  {page.start - origin:7.3f}s..{page.end - origin:7.3f}s {page.outcome}: {page.detail}"
                     for page in bad)


def summary(pages: list[Page], seconds: float) -> str:
    tally = counts(pages)
    return (f"{len(pages)} page loads in {seconds:.1f}s: {tally[FAILED]} failed, {tally[DEGRADED]} degraded, "
            f"{tally[WHOLE]} whole")


def rolling_restarts(shop: Shop, replace: Callable[[int], Instance]) -> tuple[list[Page], float]:
    """Steady load while each instance is replaced ROUNDS times, one after the other; the load
    goes on until every replaced instance has exited. The pages and when the load began."""
    with SteadyLoad(shop.url) as load:
        began = time.monotonic()
        time.sleep(WARM_UP)
        for _ in range(ROUNDS):
            for slot in range(len(shop.instances)):
                replace(slot)
                time.sleep(DWELL)
        shop.wait_retired_exit(DRAIN_BOUND)
        time.sleep(TAIL)
    return load.stop(), began


def test_the_envoy_runs_istios_cluster_with_no_health_check(sidecar, tmp_path) -> None:
    """What the Envoy below runs is Istio's cluster and route, changed only where
    envoy_proxy.DIFFERENCES says: no active health check, which Istio never configures."""
    envoy = Envoy(sidecar, tmp_path, tmp_path / "logs")
    config = json.loads((tmp_path / "envoy.json").read_text())
    (cluster,) = config["static_resources"]["clusters"]
    changed = {key for key in {*cluster, *sidecar.cluster} if cluster.get(key) != sidecar.cluster.get(key)}
    assert changed == {"type", "eds_cluster_config", "load_assignment", "transport_socket"}, changed
    assert "health_checks" not in cluster
    assert cluster["outlier_detection"] == sidecar.cluster["outlier_detection"]
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": envoy.address[0], "port_value": envoy.address[1]}


def test_rolling_restarts_lose_no_page(bin_dir, tmp_path, sidecar, record) -> None:
    with Shop(bin_dir, tmp_path, sidecar) as shop:
        pages, began = rolling_restarts(shop, shop.roll)
        retries = shop.envoy.cluster_stat("upstream_rq_retry")
    seconds = pages[-1].end - began
    tally = counts(pages)
    record("rolling restarts (SIGTERM, drain)", f"{summary(pages, seconds)}; {len(shop.retired)} instances replaced, "
           f"{retries} calls retried by Envoy", pages=len(pages), failed=tally[FAILED], degraded=tally[DEGRADED],
           seconds=round(seconds, 1), replaced=len(shop.retired), envoy_retries=retries)

    # Each old instance drained and exited cleanly while pages were being loaded.
    assert {old.name: old.popen.returncode for old in shop.retired} == {old.name: 0 for old in shop.retired}, \
        "a replaced instance did not exit 0 after SIGTERM"
    for old in shop.retired:
        assert old.terminated_at is not None and old.exited_at is not None
        assert any(page.overlaps(old.terminated_at, old.exited_at) for page in pages), \
            f"no page was loaded while {old.name} drained: the load stopped"
    assert tally[FAILED] == 0 and tally[DEGRADED] == 0, \
        f"{summary(pages, seconds)} across {len(shop.retired)} replacements:\n{show(pages, began)}"


# Broken copies of the rolling restart, each behind an Envoy without the mesh's retries (they
# would hide most of what a missing drain loses).
BROKEN = {
    # The old instance killed outright, its endpoint listed until the removal arrives.
    "killed instead of drained": ({}, True),
    # SIGTERM, but no delay: the listener closes at once, while Envoy still routes to it.
    "no shutdown delay": ({"SHUTDOWN_DELAY_SECONDS": "0"}, False),
}


@pytest.mark.parametrize("broken", BROKEN)
def test_a_broken_rolling_restart_is_seen(broken, bin_dir, tmp_path, sidecar, record) -> None:
    """The cross-check of the test above: the same rolling restart and load, judged the same
    way, must see pages degrade or fail when the instances do not drain: its zero is not
    for want of looking."""
    settings, kill = BROKEN[broken]
    with Shop(bin_dir, tmp_path, sidecar, retries=False, recommendations_settings=settings) as shop:
        pages, began = rolling_restarts(shop, lambda slot: shop.roll(slot, kill=kill))
    seconds = pages[-1].end - began
    tally = counts(pages)
    record(f"broken copy, {broken} (no retries)", summary(pages, seconds),
           pages=len(pages), failed=tally[FAILED], degraded=tally[DEGRADED], seconds=round(seconds, 1))
    assert tally[FAILED] + tally[DEGRADED] > 0, \
        f"a rolling restart with instances {broken} went unseen: {summary(pages, seconds)}"


def test_killed_instances_degrade_pages_only_while_none_is_left(bin_dir, tmp_path, sidecar, record) -> None:
    # From the first instance serving again to whole pages: its probes (Ready at worst this
    # long after it serves), the endpoint's way to the sidecar, and Envoy's own part.
    recovery_bound = sidecar.probes.ready_after_serving + ENDPOINT_LAG + ENVOY_SLACK
    with Shop(bin_dir, tmp_path, sidecar) as shop:
        before = shop.fallbacks()
        first = shop.instances[0]
        ports = [instance.grpc_port for instance in shop.instances]
        with SteadyLoad(shop.url) as load:
            began = time.monotonic()
            time.sleep(WARM_UP)

            # One instance killed: until its endpoint goes, the sidecar's retries carry its
            # calls to the other; then back on the same ports once its probes pass.
            one_down = time.monotonic()
            shop.crash([first])
            time.sleep(DWELL)
            shop.restart([first])
            shop.envoy.wait_healthy(ports)
            one_up = time.monotonic()
            time.sleep(DWELL)

            # Both killed: nothing left to answer. Then both back on their ports.
            none_left = time.monotonic()
            shop.crash(shop.instances)
            time.sleep(2 * DWELL)
            restarting = time.monotonic()
            back, listed = shop.restart(shop.instances)
            wait_until("a whole page after the restart",
                       lambda: any(page.start >= back and page.outcome == WHOLE for page in load.snapshot()),
                       timeout=recovery_bound)
            # A second of pages past the recovery bound, for the pages after it to be judged.
            wait_until("pages a second past the recovery bound",
                       lambda: any(page.start >= back + recovery_bound + 1 for page in load.snapshot()),
                       timeout=recovery_bound + 1 + PAGE_TIMEOUT)
        pages = load.stop()
        fallbacks = {reason: count - before.get(reason, 0) for reason, count in shop.fallbacks().items()}
        ejections = shop.envoy.cluster_stat("outlier_detection.ejections_enforced_total")

    seconds = pages[-1].end - began
    tally = counts(pages)
    whole_again = min(page.end for page in pages if page.start >= back and page.outcome == WHOLE)
    recovered, envoy_part = whole_again - back, whole_again - listed
    record("instances killed (SIGKILL)", f"{summary(pages, seconds)}; whole pages again {recovered:.1f}s after "
           f"the first instance served again ({envoy_part:.2f}s after its endpoint was listed; bound "
           f"{recovery_bound:.0f}s); {ejections} outlier ejections", pages=len(pages), failed=tally[FAILED],
           degraded=tally[DEGRADED], seconds=round(seconds, 1), recovery_seconds=round(recovered, 2),
           envoy_recovery_seconds=round(envoy_part, 2), outlier_ejections=ejections)

    assert tally[FAILED] == 0, f"pages failed instead of degrading: {summary(pages, seconds)}\n{show(pages, began)}"
    # While one instance was down, the other answered every page.
    one_down_pages = [page for page in pages if page.overlaps(one_down, one_up)]
    assert one_down_pages and all(page.outcome == WHOLE for page in one_down_pages), \
        f"pages degraded while a healthy instance was left:\n{show(one_down_pages, began)}"
    # With none left, the pages say so (each in time: the marketplace's deadline holds)...
    dark = [page for page in pages if page.start >= none_left + PAGE_BUDGET and page.end <= restarting]
    assert dark and all(page.outcome == DEGRADED for page in dark), \
        f"{len(dark)} pages while no instance ran, not all degraded: {counts(dark)}"
    # ...and only then: from the kill to a bounded time after the restart.
    stray = [page for page in pages if page.outcome == DEGRADED
             and not page.overlaps(none_left, back + recovery_bound)]
    assert not stray, f"degraded pages while an instance was healthy:\n{show(stray, began)}"
    after = [page for page in pages if page.start >= back + recovery_bound]
    assert after and all(page.outcome == WHOLE for page in after), \
        f"pages still not whole {recovery_bound:.0f}s after an instance served again: {counts(after)}"
    # The marketplace's own count of pages shown without recommendations agrees.
    assert sum(fallbacks.values()) == tally[DEGRADED], \
        f"marketplace_recommendations_fallback_total grew by {fallbacks}, the load saw {tally[DEGRADED]} degraded pages"
