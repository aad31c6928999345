"""yamllint on the repository's own YAML (renders are linted in test_kustomize.py)."""

from __future__ import annotations

from outside_tools import require_tool, run

PATHS = ["compose.yaml", "observability", "kustomize", ".yamllint.yaml", ".hadolint.yaml"]


def test_yamllint_finds_nothing() -> None:
    yamllint = require_tool("yamllint")
    result = run([yamllint, "--strict", "--config-file", ".yamllint.yaml", *PATHS])
    assert result.returncode == 0, result.stdout
