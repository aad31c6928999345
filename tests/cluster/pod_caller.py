"""tests/mesh's gRPC calls (clients.Callers), made from inside a pod by pod_callers.py. It runs
as its own process because gRPC's own threads would not follow a thread into the pod's network
namespace.

`pod_caller.py STUBS_DIR METHOD TARGET [AUTHORITY]` prints the answer as one JSON line (the
response message serialized, base64).

`pod_caller.py STUBS_DIR hold TARGET` holds a Recommend call open (Callers.recommend_held_open)
and prints `holding`; then reads a count from stdin, makes that many calls at once
(Callers.recommend_all_at_once), prints their codes as one JSON line, and then lets the held call go.
The shedding case's burst must start within the route's per-try timeout of the held call's
arrival, sooner than a new process could start and import gRPC: so this one is already running
when the count comes."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "support"), str(HERE.parent / "mesh")]

from clients import Callers  # noqa: E402

HOLD = "hold"


def hold_then_burst(callers: Callers, target: str) -> None:
    with callers.recommend_held_open(target):
        print("holding", flush=True)
        count = int(sys.stdin.readline() or 0)
        codes = callers.recommend_all_at_once(target, count) if count else []
        print(json.dumps(codes), flush=True)


def main(stubs: str, method: str, target: str, *authority: str) -> None:
    callers = Callers(Path(stubs))
    if method == HOLD:
        hold_then_burst(callers, target)
        return
    answer = getattr(callers, method)(target, *authority)
    body = None if answer.body is None else base64.b64encode(answer.body.SerializeToString()).decode()
    print(json.dumps({"code": answer.code, "detail": answer.detail, "body": body}))


if __name__ == "__main__":
    main(*sys.argv[1:])
