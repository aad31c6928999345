"""checkov finds nothing to fail in any render or Dockerfile; every skip carries its reason
beside it (a `checkov.io/skipN: ID=reason` annotation, or a `# checkov:skip=ID:reason` line)."""

from __future__ import annotations

import json

import pytest

import render
from outside_tools import REPO_ROOT, require_tool, run

# CKV2_K8S_6 asks for a NetworkPolicy on every pod: renders without the network-policies
# component lack one by choice (that component is how you get them).
WITHOUT_NETWORK_POLICIES = {"CKV2_K8S_6"}


@pytest.mark.parametrize("name", list(render.RENDERS))
def test_checkov_fails_no_check(name: str, checkov_results) -> None:
    results = checkov_results[name]["results"]
    _, components = render.RENDERS[name]
    allowed = set() if name in ("dev", "prod") or "network-policies" in components else WITHOUT_NETWORK_POLICIES
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"] if c["check_id"] not in allowed]
    assert failed == []
    assert results["passed_checks"], "checkov ran no check"


@pytest.mark.parametrize("name", list(render.RENDERS))
def test_every_checkov_skip_gives_its_reason(name: str, checkov_results) -> None:
    for skipped in checkov_results[name]["results"]["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert reason and reason != "No comment provided", skipped["check_id"]


def test_checkov_fails_no_check_on_the_dockerfile() -> None:
    checkov = require_tool("checkov")
    result = run([checkov, "--skip-download", "--framework", "dockerfile", "-o", "json",
                  "--file", "Dockerfile"])
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert [(c["check_id"], c["file_path"]) for c in report["results"]["failed_checks"]] == []
    for skipped in report["results"]["skipped_checks"]:
        assert skipped["check_result"].get("suppress_comment"), skipped["check_id"]
    assert report["results"]["passed_checks"]
    assert REPO_ROOT.joinpath(".dockerignore").is_file()
