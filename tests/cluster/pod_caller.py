"""One of tests/mesh's gRPC calls (clients.Callers), made from inside a pod by pod_callers.py:
`pod_caller.py STUBS_DIR METHOD TARGET [AUTHORITY]` prints the answer as one JSON line (the
response message serialized, base64). It runs as its own process because gRPC's own threads
would not follow a thread into the pod's network namespace."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "support"), str(HERE.parent / "mesh")]

from clients import Callers  # noqa: E402


def main(stubs: str, method: str, target: str, *authority: str) -> None:
    answer = getattr(Callers(Path(stubs)), method)(target, *authority)
    body = None if answer.body is None else base64.b64encode(answer.body.SerializeToString()).decode()
    print(json.dumps({"code": answer.code, "detail": answer.detail, "body": body}))


if __name__ == "__main__":
    main(*sys.argv[1:])
