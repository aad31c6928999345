"""The renders that include istio/, and what the mesh tests do with one: render it from a copy
broken on purpose, and hold it as a cluster would (injected, with its pods and certificate
Secrets) for Istio's analyzers."""

from __future__ import annotations

from pathlib import Path

import yaml

import istio_tools
import render

# The renders that include istio/ (test_the_mesh_renders_are_the_ones_with_istio_objects keeps
# this list honest).
MESH_RENDERS = ["dev", "prod", "dev-faults"]


def as_in_the_cluster(istioctl: str, rendered_text: str, install: list[dict]) -> list[str]:
    """A render as the cluster would hold it: injected by the install's injector, plus a Pod per
    workload (the render's and the install's: the analyzers look at pods, not templates), and
    the certificate Secrets its Gateway names (the operator's, see istio_tools.certificate_secrets)."""
    injected = istio_tools.inject(istioctl, rendered_text, install)
    documents = istio_tools.parse(injected)
    return [injected, yaml.safe_dump_all(istio_tools.pods(documents + install) + istio_tools.certificate_secrets(documents))]


def analyze_render(istioctl: str, analyzer: str, name: str, rendered_text: str, install_text: str, install: list[dict],
             mesh_config: dict) -> list[dict]:
    return istio_tools.analyze(analyzer, as_in_the_cluster(istioctl, rendered_text, install) + [install_text], mesh_config,
                        istio_tools.suppressions_for(name))


def broken(tmp_path: Path, name: str, *edits: tuple[str, str, str]) -> str:
    """Render `name` from a copy where each (file under the copy's root, old, new) is applied;
    `old` must occur exactly once."""
    root = render.copy_tree(tmp_path)  # kustomize/ and istio/ (the overlays name ../../../istio)
    for file, old, new in edits:
        path = tmp_path / file
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}, expected once"
        path.write_text(text.replace(old, new))
    return render.render(name, root)
