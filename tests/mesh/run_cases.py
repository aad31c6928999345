"""`cargo xtask mesh`: the cases of the loopback mesh (cases.py, the same the tests run), by hand.
Prints each case with its expected and observed outcome, and leaves Istio's translation, the
Envoy configs that ran, the test identities and every process's log in --out.

    python tests/mesh/run_cases.py --bin-dir target/debug --out target/mesh

Exits 1 if a case's outcome differs from the expected one."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "support")]

from cases import CASES, Case, Observation  # noqa: E402
from loopback_mesh import LoopbackMesh, slug  # noqa: E402

COLUMNS = ("case", "manifests", "expected", "observed", "")


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, required=True, help="where the built services are")
    parser.add_argument("--out", type=Path, required=True, help="emptied, then filled with configs and logs")
    args = parser.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    results: list[tuple[Case, Observation]] = []
    with LoopbackMesh(args.bin_dir.resolve(), out) as mesh:
        for case in CASES:
            print(f"mesh: {case.id} ...", file=sys.stderr, flush=True)
            results.append((case, case.run(mesh)))
    failed = report("loopback", results, out)
    for flip in dict.fromkeys(case.flip for case in CASES):
        print(f"{flip.name}: {flip.what} -> {out / slug(flip.name)}")
    print(f"logs: {out / 'logs'}; identities (SDS files): {out / 'sds'}")
    return 1 if failed else 0


def report(label: str, results: list[tuple[Case, Observation]], out: Path) -> int:
    """Prints the cases as a table, each beside its twin, then those that differ; returns how
    many differ. `cargo xtask mesh` on the clusters (tests/cluster/run_mesh.py) prints the same."""
    order = {name: index for index, name in enumerate(dict.fromkeys(case.name for case, _ in results))}
    results = sorted(results, key=lambda result: order[result[0].name])
    rows = [COLUMNS] + [(case.name, case.flip.name, case.expected, seen.outcome,
                         "ok" if seen.outcome == case.expected else "DIFFERS") for case, seen in results]
    print(f"{label} ({out}):")
    print(table(rows))
    print()
    differing = [(case, seen) for case, seen in results if seen.outcome != case.expected]
    for case, seen in differing:
        print(f"DIFFERS: {label}: {case.id}: expected {case.expected!r}, observed {seen.outcome!r} ({seen.detail})")
    print(f"mesh: {label}: {len(results) - len(differing)} passed, {len(differing)} failed")
    return len(differing)


def exit_with(main: Callable[[], int]) -> None:
    """Exits with main's status; on an error, with one line saying what failed (not a traceback)."""
    try:
        sys.exit(main())
    except Exception as err:  # noqa: BLE001
        sys.exit(f"mesh: {err}")
    except BaseException as err:
        # A missing tool or setting ends in pytest.fail (outside_tools), whose message says how to fix it.
        if type(err).__name__ != "Failed":
            raise
        sys.exit(f"mesh: {err}")


if __name__ == "__main__":
    exit_with(main)
