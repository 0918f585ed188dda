#!/usr/bin/env bash
# Instructions per request of `tollgate serve` (release build) for
# `POST /v1/check` consumes, counted by callgrind: repeatable whatever else
# runs on the machine, unlike wall-clock figures.
#
# The server runs under valgrind with instrumentation off; after the setup
# (customers) and a warm-up, instrumentation is switched on for one wrk run of
# DURATION and switched off again. Instructions counted ÷ responses =
# instructions per request (every thread of the server: HTTP, engine,
# group-commit writer, SQLite; the few requests in flight at the end are the
# error margin).
#
# Usage: bench/http/profile.sh            (needs valgrind and wrk)
# Environment: DURATION (default 20s; valgrind makes the server ~50x slower),
#   CONNECTIONS (64),
#   THREADS (2), BENCH_CUSTOMERS (100), BENCH_CONSUME (true), OUT (where to
#   keep the callgrind file, default /tmp/tollgate.callgrind), TOLLGATE_BIN (a
#   copy of a `tollgate` binary to profile instead of building one).
# Read the profile: callgrind_annotate --inclusive=yes "$OUT" | head -80
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"

DURATION="${DURATION:-20s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
export BENCH_CUSTOMERS="${BENCH_CUSTOMERS:-100}"
OUT="${OUT:-/tmp/tollgate.callgrind}"

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }

[ -n "${TOLLGATE_BIN:-}" ] || cargo build --release --quiet --bin tollgate -p tollgate
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/http/common.sh
. "$ROOT/bench/http/common.sh"

start_tollgate valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT"
VG="${PIDS[0]}"

# Warm up (opens every customer's meter), then count.
wrk -t"$THREADS" -c"$CONNECTIONS" -d5s -s bench/http/check.lua "$BASE" >/dev/null
read -r b0 w0 c0 < <(commit_figures)
callgrind_control -i on "$VG" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s bench/http/check.lua "$BASE" | tee "$WORK/wrk.txt"
callgrind_control -i off "$VG" >/dev/null
read -r b1 w1 c1 < <(commit_figures)
# Stop the server: callgrind writes its counts on exit.
kill -TERM "$VG"; wait "$VG" 2>/dev/null || true

responses="$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")"
ir="$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
echo
echo "== $responses responses, $((w1 - w0)) ledger writes in $((b1 - b0)) commits" \
  "(mean batch $(python3 -c "print(round(($w1-$w0)/max(1,$b1-$b0),1))"))"
echo "instructions per request: $(python3 -c "print(round($ir/$responses))") ($ir in all)"
echo "profile: $OUT (callgrind_annotate --inclusive=yes $OUT | head -80)"
