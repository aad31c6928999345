"""`cargo xtask cluster`: the local cluster up until Ctrl-C (or SIGTERM), then torn down; and
`cargo xtask cluster apply OVERLAY`: the README's command run against it, from its network
namespace."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import cluster  # noqa: E402
import netns  # noqa: E402
from controlplane import Client  # noqa: E402

# The interactive cluster's namespace: one at a time, so `apply` finds it by name.
NAMESPACE = "bookshop-cluster"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", type=Path, required=True, help="the built Go tools")
    parser.add_argument("--folder", type=Path, required=True, help="keys, kubeconfig, logs")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster and keep it until Ctrl-C")
    up.add_argument("--kwok-module", type=Path, required=True, help="sigs.k8s.io/kwok's source (its stages)")
    apply = sub.add_parser("apply", help="apply an overlay to the running cluster")
    apply.add_argument("overlay", choices=(*cluster.OVERLAYS, cluster.GATEWAY_API_OVERLAY))
    args = parser.parse_args()
    if args.command == "up":
        return up_until_stopped(args)
    return apply_to_running(args)


def up_until_stopped(args) -> int:
    # Ctrl-C (even when started with SIGINT ignored, as a shell's background job is), SIGTERM
    # and a closed terminal (SIGHUP) all tear down.
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.default_int_handler)
    progress = lambda line: print(f"cluster: {line}", flush=True)  # noqa: E731
    try:
        with cluster.running(args.folder, args.bin_dir, args.kwok_module, NAMESPACE, progress) as running:
            progress(f"ready. In another terminal: cargo xtask cluster apply dev; or "
                     f"ip netns exec {NAMESPACE} env KUBECONFIG={running.kubeconfig} "
                     f"{args.bin_dir / 'kubectl'} get nodes. Ctrl-C stops it.")
            signal.pause()
    except KeyboardInterrupt:
        pass
    return 0


def apply_to_running(args) -> int:
    if not Path(f"/run/netns/{NAMESPACE}").exists():
        print(f"cluster: no cluster is running (no network namespace {NAMESPACE}): "
              "start one with `cargo xtask cluster`", file=sys.stderr)
        return 1
    netns.enter(NAMESPACE)
    client = Client(args.folder, args.bin_dir, lambda line: print(f"cluster: {line}", flush=True))
    applied = cluster.apply(client, args.overlay)
    print(applied.stdout + applied.stderr, end="")
    for failure in applied.rollout_failures:
        print(f"cluster: not rolled out: {failure}", file=sys.stderr)
    return 1 if applied.returncode or applied.rollout_failures else 0


if __name__ == "__main__":
    sys.exit(main())
