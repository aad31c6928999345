"""`cargo xtask mesh`: the mesh's cases on each overlay's own cluster, as `cargo xtask test
mesh` runs them: per overlay a fresh control plane with istiod, the overlay applied with the
README's command, and the bookshop as its pods (shop_pods.py) on istiod's configuration and
certificates. Prints each case with its expected and observed outcome, one table per overlay,
and leaves every cluster's files (istiod's answers, the Envoys' configs and logs) in --out.

    python tests/cluster/run_mesh.py --bin-dir target/debug --tools-bin target/tools/bin \
        --kwok-module … --out target/mesh

Exits 1 if a case's outcome differs from the expected one."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "support"), str(HERE.parent / "mesh")]

import cluster  # noqa: E402
import istio  # noqa: E402
from cases import CASES, Case, Observation  # noqa: E402
from conftest import Overlay  # noqa: E402
from run_cases import exit_with, report  # noqa: E402
from test_prod_pods import PROD_CASES, prod_shop  # noqa: E402
from test_shop_pods import dev_shop  # noqa: E402

# Each overlay's cases and how its shop runs, the ones its test module uses.
CASES_ON = {"dev": (CASES, dev_shop), "prod": (PROD_CASES, prod_shop)}


def run_overlay(name: str, args: argparse.Namespace) -> list[tuple[Case, Observation]]:
    progress = lambda line: print(f"mesh[{name}]: {line}", file=sys.stderr, flush=True)  # noqa: E731
    folder = args.out / name
    results = []
    with cluster.running(folder, args.tools_bin, args.kwok_module, f"bookshop-mesh-{os.getpid()}",
                         progress, istio.install_files(name)) as running:
        overlay = Overlay(running, cluster.apply(running, name))
        if overlay.applied.returncode or overlay.applied.rollout_failures:
            raise RuntimeError(f"{name} did not apply and roll out: {overlay.applied.stderr.strip()} "
                               f"{overlay.applied.rollout_failures}")
        cases, shop_of = CASES_ON[name]
        with shop_of(overlay, args.bin_dir, folder / "shop-pods") as shop:
            for case in cases:
                progress(f"{case.id} ...")
                results.append((case, case.run(shop)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, required=True, help="where the built services are")
    parser.add_argument("--tools-bin", type=Path, required=True, help="the control plane's and Istio's binaries")
    parser.add_argument("--kwok-module", type=Path, required=True, help="sigs.k8s.io/kwok's source (its stages)")
    parser.add_argument("--out", type=Path, required=True, help="one folder per overlay, emptied first")
    parser.add_argument("--overlay", choices=tuple(CASES_ON), action="append",
                        help="only this overlay (repeatable; default: all)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    failed = 0
    for name in args.overlay or CASES_ON:
        failed += report(name, run_overlay(name, args), args.out / name)
    return 1 if failed else 0


if __name__ == "__main__":
    exit_with(main)
