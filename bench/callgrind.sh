#!/usr/bin/env bash
# Instructions per Recommend call, the repeatable way (valgrind's callgrind
# counts instructions, which a shared, noisy machine does not change): each
# server runs under callgrind (all its threads), answers 200 warm-up calls,
# its counters are zeroed, then 2000 calls at concurrency 1 are counted and
# dumped. Prints one line per server: its instructions per call and the ratio
# to bare tonic. Run after `cargo xtask bench` built the release binaries:
#   bench/callgrind.sh "$CARGO_TARGET_DIR/release"
set -euo pipefail
bin=${1:?usage: bench/callgrind.sh RELEASE_DIR}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=50071 admin=50072 sink=50073
"$bin/bench-tool" otlp-sink --port "$sink" >"$work/sink.log" &

calls() { "$bin/bench-tool" check --addr "http://127.0.0.1:$port" --calls "$1" >/dev/null; }

# measure LABEL ENV... -- COMMAND...: instructions per call of one server.
measure() {
  local label=$1; shift
  local env=(); while [ "$1" != -- ]; do env+=("$1"); shift; done; shift
  env "${env[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/$label.out" \
    "$@" >"$work/$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do calls 1 2>/dev/null && break; sleep 0.1; done
  calls 200
  callgrind_control -z "$pid" >/dev/null 2>&1
  calls 2000
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # The dump after zeroing holds the 2000 calls (with their 3 categories'
  # checks); `totals:` is its count of instructions.
  local total; total=$(grep -h '^totals:' "$work/$label.out".* | tail -1 | cut -d' ' -f2)
  echo "$label $((total / 2000))"
}

service=(GRPC_PORT=$port ADMIN_PORT=$admin LOG_FORMAT=json SHUTDOWN_DELAY_SECONDS=0)
bare=$(measure bare_tonic -- "$bin/bare-tonic" --port "$port")
off=$(measure tracing_off "${service[@]}" RUST_LOG=warn OTEL_SDK_DISABLED=true -- "$bin/recommendations")
prod=$(measure prod "${service[@]}" RUST_LOG=info OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink" \
  OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 -- "$bin/recommendations")
base=${bare#* }
for line in "$bare" "$off" "$prod"; do
  per_call=${line#* }
  printf '%-12s %7d instructions per call  %s× bare tonic\n' "${line% *}" "$per_call" \
    "$(awk -v a="$per_call" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
done
