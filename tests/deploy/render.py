"""Rendering kustomize/ with `kubectl kustomize`: the overlays and every base + component mix."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from outside_tools import REPO_ROOT, require_tool, run

KUSTOMIZE = REPO_ROOT / "kustomize"
COMPONENTS = ("hpa-pdb", "network-policies")
NAMESPACE = "bookshop"

# What a user may deploy: each overlay, and the base with any choice of components (in a
# kustomization of their own that, like the overlays, sets the namespace).
# name -> (overlay directory, or None for the base) and the components added to it.
RENDERS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "base": (None, ()),
    "base+hpa-pdb": (None, ("hpa-pdb",)),
    "base+network-policies": (None, ("network-policies",)),
    "base+hpa-pdb+network-policies": (None, COMPONENTS),
    "dev": ("overlays/dev", ()),
    "prod": ("overlays/prod", ()),
    "dev-faults": ("overlays/dev-faults", ()),
}

Doc = dict[str, Any]


def kustomize(directory: Path) -> str:
    """`kubectl kustomize DIRECTORY`, failing with kustomize's own message."""
    result = run([require_tool("kubectl"), "kustomize", str(directory)])
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


def render(name: str, root: Path = KUSTOMIZE) -> str:
    """The YAML of one entry of RENDERS, from the kustomize tree at `root` (a copy, in tests)."""
    overlay, components = RENDERS[name]
    if overlay is not None:
        return kustomize(root / overlay)
    # A throwaway kustomization naming the base and the components (kustomize wants relative paths).
    with tempfile.TemporaryDirectory(prefix="kustomize-mix-") as tmp:
        def relative(path: Path) -> str:
            return os.path.relpath(path, tmp)
        lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization",
                 f"namespace: {NAMESPACE}", f"resources: [{relative(root / 'base')}]"]
        if components:
            lines.append("components: [" + ", ".join(relative(root / "components" / c) for c in components) + "]")
        (Path(tmp) / "kustomization.yaml").write_text("\n".join(lines) + "\n")
        return kustomize(Path(tmp))


def parse(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# What the kustomizations reach beyond kustomize/ (the overlays list ../../../istio).
KUSTOMIZE_TREES = ("kustomize", "istio", "observability")


def copy_tree(destination: Path) -> Path:
    """A copy of kustomize/ (and the trees beside it that it names) under `destination`, for
    tests that break a manifest. Returns the copy of kustomize/."""
    for tree in KUSTOMIZE_TREES:
        if (REPO_ROOT / tree).is_dir():
            shutil.copytree(REPO_ROOT / tree, destination / tree)
    return destination / "kustomize"


def break_copy(destination: Path, file: str, old: str, new: str) -> Path:
    """Copy kustomize/ and replace `old` (which must occur exactly once) in one of its files."""
    root = copy_tree(destination)
    path = root / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}, expected once"
    path.write_text(text.replace(old, new))
    return root


def broken_docs(destination: Path, name: str, file: str, old: str, new: str) -> list[Doc]:
    """The render `name` of a copy of kustomize/ (under `destination`) with `old` replaced by `new`
    in one of its files: what a cross-check's failing twin runs on."""
    return parse(render(name, break_copy(destination, file, old, new)))
