"""tests/mesh's cases on the dev cluster's own pods (shop_pods.py): the real services and
Envoys in the pods' network namespaces behind Istio's capture, configured by the real istiod
and identified by its CA. The cases are tests/mesh/cases.py's, each under the overlay as
rendered and, as its twin, under the same flip of one policy made through the API server.
All of CASES: the page through the ingress gateway's pod IP over mTLS on both hops, plaintext
to either sidecar's pod, the trace of a page and a client's traceparent, the marketplace's calls
to recommendations (Recommend, health, reflection, a burst it sheds), made from inside its pod,
and mesh-probe's (sa/default) to either service, made from inside the probe's. That each case has
its twin, with another outcome, tests/mesh/test_mesh.py checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import agent
import case_objects

from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with the other suites)
from cases import BOOKS, CASES, DENIED, Case, check, page_through_ingress, recommend_as_marketplace
from conftest import Overlay, rendered
from shop_pods import ShopPods

@contextmanager
def dev_shop(overlay: Overlay, bin_dir: Path, work_dir: Path) -> Iterator[ShopPods]:  # noqa: F811
    """dev's bookshop as its pods, with the objects its cases need (case_objects.py); also
    `cargo xtask mesh`'s (run_mesh.py)."""
    with case_objects.made(overlay.cluster), ShopPods(overlay.cluster, rendered(overlay), bin_dir,
                                                      work_dir) as running:
        yield running


@pytest.fixture(scope="module")
def shop(overlay: Overlay, bin_dir, tmp_path_factory) -> Iterator[ShopPods]:  # noqa: F811
    with dev_shop(overlay, bin_dir, tmp_path_factory.mktemp("shop-pods")) as running:
        yield running


@pytest.mark.parametrize("overlay", ["dev"], indirect=True)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(shop: ShopPods, case: Case) -> None:
    check(case, shop)


@pytest.mark.parametrize("overlay", ["dev"], indirect=True)
@pytest.mark.parametrize("account", ["marketplace", "recommendations"])
def test_the_marketplaces_calls_follow_the_certificate_its_envoy_holds(overlay: Overlay, shop: ShopPods,
                                                                       account: str) -> None:
    """The marketplace's Envoy given a certificate istiod's CA issued for a TokenRequest token of
    `account` (the process, its pod and its configuration unchanged). With the marketplace's
    own, Recommend and the page pass. With recommendations': recommendations' policy, which
    allows only sa/marketplace, denies the call; and the gateway, which verifies that the
    marketplace's endpoint presents sa/marketplace, refuses the connection (503)."""
    namespace = "bookshop"
    # Beside the cluster's files, not under pytest's root-only temporary folder: Envoy's uid reads it.
    out = overlay.cluster.folder / "identities" / f"{namespace}.{account}"
    issued = agent.certify(overlay.cluster, out, namespace=namespace, service_account=account,
                           bearer=agent.token(overlay.cluster, namespace, account))
    assert issued.returncode == 0, issued.stderr
    try:
        shop.with_identity("marketplace", out)
        recommended = recommend_as_marketplace(shop)
        page = page_through_ingress(shop)
    finally:
        shop.use()
    if account == "marketplace":
        assert (recommended.outcome, page.outcome) == ("OK, 3 books", f"{BOOKS}, mTLS on both hops")
    else:
        assert (recommended.outcome, page.outcome) == (DENIED, "503"), page.detail
