"""The deploy checks need nothing from beside the repository: a clone of the committed HEAD,
alone in an empty folder, passes a representative part of them (every render, schema
validation with Istio's objects, the cross-checks and their broken copies). checkov is left
out: it is the slow part and reads only the render."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from outside_tools import ISTIO_CRDS_VARIABLE, REPO_ROOT, require_tool, run

# Every render built and validated (Istio's objects against the CRDs, yamllint), every
# cross-check on every render, and broken copies that copy kustomize/ with istio/ beside it.
NESTED_TESTS = ["tests/deploy/test_kustomize.py", "tests/deploy/test_crosschecks.py",
                "tests/deploy/test_network_policies.py",
                "-k", "test_kustomize.py or agree_with or prerequisite_namespace or istiod"]

# All the nested run is given: where the tools are, and the two inputs that come from outside
# the repository by design (the built binaries, the pinned Istio module's CRDs).
PASSED_THROUGH = ("PATH", "HOME", "LANG", "BOOKSHOP_BIN_DIR", ISTIO_CRDS_VARIABLE)


def test_a_lone_clone_of_head_passes_the_deploy_checks(tmp_path: Path, bin_dir: Path, istio_crds: Path) -> None:
    git = require_tool("git")
    alone = tmp_path / "alone"
    alone.mkdir()
    clone = alone / "bookshop"
    result = run([git, "clone", "--quiet", str(REPO_ROOT), str(clone)])
    assert result.returncode == 0, result.stderr
    assert [p.name for p in alone.iterdir()] == ["bookshop"]

    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    env.update(BOOKSHOP_BIN_DIR=str(bin_dir), **{ISTIO_CRDS_VARIABLE: str(istio_crds)},
               PYTHONDONTWRITEBYTECODE="1")
    # The nested pytest's own temporary files go beside `alone`, not in it.
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "--basetemp", str(tmp_path / "nested-tmp"), *NESTED_TESTS],
                 cwd=clone, env=env, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
    assert [p.name for p in alone.iterdir()] == ["bookshop"], "the nested run wrote beside the clone"


# Built from parts so this file does not match itself.
FORBIDDEN = ("../" + "shared", "BOOKSHOP_" + "SHARED_DIR", "/work/" + "shared")


def test_no_committed_file_points_beside_the_repository() -> None:
    git = require_tool("git")
    files = run([git, "ls-files", "-z"]).stdout.split("\0")
    found = []
    for name in filter(None, files):
        path = REPO_ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {needle}" for needle in FORBIDDEN if needle in text]
    assert found == []


def test_without_the_istio_crds_variable_the_suite_says_how_to_run_it(tmp_path: Path) -> None:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
                  "tests/deploy/test_kustomize.py::test_istio_objects_validate_against_istio_crds"], env=env)
    assert result.returncode == 1, result.stdout
    assert f"{ISTIO_CRDS_VARIABLE} is not set: run the deploy checks through `cargo xtask test deploy`" in result.stdout
