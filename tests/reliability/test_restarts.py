"""Restarts and kills of recommendations under steady load, behind a real Envoy configured as
the mesh configures the marketplace's sidecar: a rolling restart loses no page and degrades
none; a killed instance costs nothing while another is healthy, and when none is left the pages
degrade (never fail) and come back whole on their own."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from load import DEGRADED, FAILED, PAGE_TIMEOUT, WHOLE, Page, SteadyLoad, counts
from loopback import wait_until
from shop import Instance, Shop

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
# From the first instance back (ready) to whole pages again: Envoy's health check (250 ms) and
# its 1 s merge window for health changes make it at most about 1.5 s; generous.
RECOVERY_BOUND = 5.0
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


def test_rolling_restarts_lose_no_page(bin_dir, tmp_path, policy, record) -> None:
    with Shop(bin_dir, tmp_path, policy) as shop:
        pages, began = rolling_restarts(shop, shop.roll)
        retries = shop.envoy.stat("cluster.recommendations.upstream_rq_retry")
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


# Broken copies of the rolling restart, each behind an Envoy without its health check and
# the mesh's retries (either would hide most of what a missing drain loses).
BROKEN = {
    # The old instance killed outright, its endpoint listed until the removal arrives.
    "killed instead of drained": ({}, True),
    # SIGTERM, but no delay: the listener closes at once, while Envoy still routes to it.
    "no shutdown delay": ({"SHUTDOWN_DELAY_SECONDS": "0"}, False),
}


@pytest.mark.parametrize("broken", BROKEN)
def test_a_broken_rolling_restart_is_seen(broken, bin_dir, tmp_path, policy, record) -> None:
    """The cross-check of the test above: the same rolling restart and load, judged the same
    way, must see pages degrade or fail when the instances do not drain: its zero is not
    for want of looking."""
    settings, kill = BROKEN[broken]
    with Shop(bin_dir, tmp_path, policy, health_check=False, retries=False,
              recommendations_settings=settings) as shop:
        pages, began = rolling_restarts(shop, lambda slot: shop.roll(slot, kill=kill))
    seconds = pages[-1].end - began
    tally = counts(pages)
    record(f"broken copy, {broken} (no health check, no retries)", summary(pages, seconds),
           pages=len(pages), failed=tally[FAILED], degraded=tally[DEGRADED], seconds=round(seconds, 1))
    assert tally[FAILED] + tally[DEGRADED] > 0, \
        f"a rolling restart with instances {broken} went unseen: {summary(pages, seconds)}"


def test_killed_instances_degrade_pages_only_while_none_is_left(bin_dir, tmp_path, policy, record) -> None:
    with Shop(bin_dir, tmp_path, policy) as shop:
        before = shop.fallbacks()
        first = shop.instances[0]
        ports = [instance.grpc_port for instance in shop.instances]
        with SteadyLoad(shop.url) as load:
            began = time.monotonic()
            time.sleep(WARM_UP)

            # One instance killed (its endpoint stays listed, as when the kubelet restarts the
            # container in the same pod), then back on the same port.
            one_down = time.monotonic()
            first.kill()
            wait_until("Envoy to mark the killed instance unhealthy",
                       lambda: shop.envoy.hosts().get(first.grpc_port), timeout=10, interval=0.05)
            time.sleep(DWELL)
            first.start()
            shop.envoy.wait_healthy(ports)
            one_up = time.monotonic()
            time.sleep(DWELL)

            # Both killed: nothing left to answer. Then both back on their ports.
            none_left = time.monotonic()
            for instance in shop.instances:
                instance.kill()
            time.sleep(2 * DWELL)
            restarting = time.monotonic()
            first.start()
            back = time.monotonic()
            for instance in shop.instances[1:]:
                instance.start()
            wait_until("a whole page after the restart",
                       lambda: any(page.start >= back and page.outcome == WHOLE for page in load.snapshot()),
                       timeout=RECOVERY_BOUND)
            # A second of pages past the recovery bound, for the pages after it to be judged.
            wait_until("pages a second past the recovery bound",
                       lambda: any(page.start >= back + RECOVERY_BOUND + 1 for page in load.snapshot()),
                       timeout=RECOVERY_BOUND + 1 + PAGE_TIMEOUT)
        pages = load.stop()
        fallbacks = {reason: count - before.get(reason, 0) for reason, count in shop.fallbacks().items()}

    seconds = pages[-1].end - began
    tally = counts(pages)
    recovered = min(page.end for page in pages if page.start >= back and page.outcome == WHOLE) - back
    record("instances killed (SIGKILL)", f"{summary(pages, seconds)}; whole pages again {recovered:.1f}s after "
           "the first instance was back", pages=len(pages), failed=tally[FAILED], degraded=tally[DEGRADED],
           seconds=round(seconds, 1), recovery_seconds=round(recovered, 2))

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
             and not page.overlaps(none_left, back + RECOVERY_BOUND)]
    assert not stray, f"degraded pages while an instance was healthy:\n{show(stray, began)}"
    after = [page for page in pages if page.start >= back + RECOVERY_BOUND]
    assert after and all(page.outcome == WHOLE for page in after), \
        f"pages still not whole {RECOVERY_BOUND:.0f}s after an instance was back: {counts(after)}"
    # The marketplace's own count of pages shown without recommendations agrees.
    assert sum(fallbacks.values()) == tally[DEGRADED], \
        f"marketplace_recommendations_fallback_total grew by {fallbacks}, the load saw {tally[DEGRADED]} degraded pages"
