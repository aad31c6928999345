#!/usr/bin/env bash
# Instructions per call, the repeatable way (valgrind's callgrind counts
# instructions, which a shared, noisy machine does not change): each server
# runs under callgrind (all its threads), answers 200 warm-up calls, its
# counters are zeroed, then 2000 calls at concurrency 1 are counted and
# dumped. Run after `cargo xtask bench` built the release binaries:
#   bench/callgrind.sh "$CARGO_TARGET_DIR/release" [recommend|page]
# `recommend` (the default): one line per gRPC server, its instructions per
# Recommend call and the ratio to bare tonic. `page`: `GET /` over one
# kept-alive HTTP/1.1 connection (h2load, as `cargo xtask bench` sends it) to
# each chain, the front and the recommendations server behind it both under
# callgrind; one line per chain, its instructions per page (front + back) and
# the ratio to the bare chain (bare axum -> bare tonic).
# CALLGRIND_KEEP=DIR keeps the callgrind files there, for callgrind_annotate.
# CALLGRIND_CLIENTS=N sends the pages over N connections at once (default 1).
# CALLGRIND_CACHE_SIM=yes also simulates the caches (slower) and adds each
# page's first-level instruction- and data-cache misses to its line.
set -euo pipefail
bin=${1:?usage: bench/callgrind.sh RELEASE_DIR [recommend|page]}
mode=${2:-recommend}
work=${CALLGRIND_KEEP:-$(mktemp -d)}
mkdir -p "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; [ -n "${CALLGRIND_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
# Five ports from a random base below the ephemeral range: other runs on a
# shared machine may hold fixed ones.
base=$((20000 + RANDOM % 12000))
port=$base admin=$((base + 1)) sink=$((base + 2)) http=$((base + 3)) http_admin=$((base + 4))
"$bin/bench-tool" otlp-sink --port "$sink" >"$work/sink.log" &
calls=2000

rpcs() { "$bin/bench-tool" check --addr "http://127.0.0.1:$port" --calls "$1" >/dev/null; }
pages() {
  local out; out=$(h2load --h1 --requests "$1" --clients "${CALLGRIND_CLIENTS:-1}" "http://127.0.0.1:$http/" 2>&1)
  grep -q "$1 succeeded, 0 failed, 0 errored" <<<"$out" || { echo "$out" >&2; return 1; }
}

# start LABEL ENV... -- COMMAND...: runs one server under callgrind.
start() {
  local label=$1; shift
  local env=(); while [ "$1" != -- ]; do env+=("$1"); shift; done; shift
  env "${env[@]}" valgrind --tool=callgrind --cache-sim="${CALLGRIND_CACHE_SIM:-no}" --callgrind-out-file="$work/$label.out" \
    "$@" >"$work/$label.log" 2>&1 &
  pids+=($!)
}

# count LOAD N: warms the servers started (pids) up, zeroes their counters,
# sends N calls of LOAD, dumps, stops them; prints each one's total.
count() {
  local load=$1 n=$2
  for _ in $(seq 600); do "$load" 1 2>/dev/null && break; sleep 0.1; done
  "$load" 200
  for pid in "${pids[@]}"; do callgrind_control -z "$pid" >/dev/null 2>&1; done
  "$load" "$n"
  for pid in "${pids[@]}"; do callgrind_control -d "$pid" >/dev/null 2>&1; done
  for pid in "${pids[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
  pids=()
}

# total LABEL [FIELD]: an event of LABEL's dump after zeroing (`totals:`): 2 the
# instructions; with the cache simulation 5 I1 misses, 6 and 7 D1 read and write misses.
total() { grep -h '^totals:' "$work/$1.out".* | tail -1 | cut -d' ' -f"${2:-2}"; }

# misses CHAIN FIELD: a cache-miss event (see total) per page, front and back together.
misses() { echo $(( ($(total "$1_front" "$2") + $(total "$1_back" "$2")) / calls )); }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

service=(LOG_FORMAT=json SHUTDOWN_DELAY_SECONDS=0)
off=(RUST_LOG=warn OTEL_SDK_DISABLED=true)
prod=(RUST_LOG=info OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink"
  OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
pids=()

if [ "$mode" = recommend ]; then
  # The dump after zeroing holds the 2000 calls (with their 3 categories' checks).
  start bare_tonic -- "$bin/bare-tonic" --port "$port"; count rpcs "$calls"
  start tracing_off "${service[@]}" ADMIN_PORT=$admin GRPC_PORT=$port "${off[@]}" -- "$bin/recommendations"
  count rpcs "$calls"
  start prod "${service[@]}" ADMIN_PORT=$admin GRPC_PORT=$port "${prod[@]}" -- "$bin/recommendations"
  count rpcs "$calls"
  base=$(($(total bare_tonic) / calls))
  for label in bare_tonic tracing_off prod; do
    per_call=$(($(total "$label") / calls))
    printf '%-12s %7d instructions per call  %s× bare tonic\n' "$label" "$per_call" \
      "$(ratio "$per_call" "$base")"
  done
elif [ "$mode" = page ]; then
  # page LABEL ENV...: the marketplace -> recommendations chain with ENV.
  page() {
    local label=$1; shift
    start "${label}_back" "${service[@]}" ADMIN_PORT=$admin GRPC_PORT=$port "$@" -- "$bin/recommendations"
    # A deadline callgrind's pace cannot miss: a degraded page is cheaper, and fails.
    start "${label}_front" "${service[@]}" ADMIN_PORT=$http_admin HTTP_PORT=$http \
      RECOMMENDATIONS_HOST=127.0.0.1 RECOMMENDATIONS_PORT=$port RECOMMENDATIONS_TIMEOUT_MS=10000 \
      "$@" -- "$bin/marketplace"
    count pages "$calls"
    ! grep -q '"showing the page without recommendations"' "$work/${label}_front.log" ||
      { echo "$label: a page fell back; see $work/${label}_front.log" >&2; exit 1; }
  }
  start bare_back -- "$bin/bare-tonic" --port "$port"
  start bare_front -- "$bin/bare-axum" --port "$http" --upstream "http://127.0.0.1:$port"
  count pages "$calls"
  page tracing_off "${off[@]}"
  page prod "${prod[@]}"
  base=$((($(total bare_front) + $(total bare_back)) / calls))
  for label in bare tracing_off prod; do
    front=$(($(total "${label}_front") / calls)) back=$(($(total "${label}_back") / calls))
    printf '%-12s %7d instructions per page (front %d + back %d)  %s× the bare chain' \
      "$label" $((front + back)) "$front" "$back" "$(ratio $((front + back)) "$base")"
    if [ "${CALLGRIND_CACHE_SIM:-no}" = yes ]; then
      printf ', misses per page: I1 %d, D1 %d' "$(misses "$label" 5)" \
        $(($(misses "$label" 6) + $(misses "$label" 7)))
    fi
    echo
  done
else
  echo "unknown mode $mode: recommend or page" >&2; exit 2
fi
