"""The istio/ policies enforced by real Envoys on Istio's own translation of the manifests, with
real traffic on loopback (cases.py says what is sent and what must come back). Each case runs
under the manifests as rendered and, as its twin, under a flip of one policy that changes the
outcome."""

from __future__ import annotations

import pytest

from cases import CASES, Case, check
from inputs import BASE
from loopback_mesh import LoopbackMesh


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(mesh: LoopbackMesh, case: Case) -> None:
    check(case, mesh)


def test_every_case_has_a_twin_with_another_outcome() -> None:
    as_rendered = {case.name: case.expected for case in CASES if case.flip == BASE}
    twins = [case for case in CASES if case.flip != BASE]
    assert {case.name for case in twins} == as_rendered.keys()
    assert [case.id for case in twins if case.expected == as_rendered[case.name]] == []
