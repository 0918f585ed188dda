#!/usr/bin/env bash
# HTTP load benchmark: (a) the ceiling, a minimal axum JSON endpoint
# (bench/http/src/main.rs), and (b) Tollgate's `POST /v1/check` consuming
# `queries_per_month` for customers on the unlimited `enterprise` plan of the
# VOCA catalog (SQLite store), both driven by wrk with the same Lua script.
#
# Usage: bench/http/run.sh            (needs wrk: apt-get install wrk)
# Environment: DURATION (default 15s), CONNECTIONS (64), THREADS (2),
#   BENCH_CUSTOMERS (1000), BENCH_CONSUME (true; false = dry-run checks, no
#   write, to separate the HTTP and engine cost from the commit), and any TOLLGATE_* setting for the server,
#   e.g. TOLLGATE_ENGINE__GROUP_COMMIT_MAX_WAIT_MS=1; SQLITE_SYNCHRONOUS=normal runs
#   the server on sqlite://…?synchronous=normal (process-crash durability, no fsync
#   per commit) instead of the default FULL. CPU_LATENCY_US=0 holds a CPU
#   wake-up latency request (/dev/cpu_dma_latency, root) for the whole run,
#   ceiling and Tollgate alike: idle CPUs poll instead of halting, as
#   `tuned-adm profile latency-performance` does (bench/README.md, session 9).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"

DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
export BENCH_CUSTOMERS="${BENCH_CUSTOMERS:-1000}"

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet --bin tollgate -p tollgate
cargo build --release --quiet --bin bench-ceiling -p tollgate-bench-http
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

run_wrk() { # name url
  echo
  echo "== $1: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/http/check.lua $2"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/http/check.lua "$2" | tee "$WORK/$1.txt"
}

if [ -n "${CPU_LATENCY_US:-}" ]; then
  # The request lasts while the descriptor is open (until this script exits).
  exec 9>/dev/cpu_dma_latency || { echo "CPU_LATENCY_US needs root (/dev/cpu_dma_latency)" >&2; exit 1; }
  printf '%x' "$CPU_LATENCY_US" >&9
  echo "holding a CPU wake-up latency request of $CPU_LATENCY_US µs for this run"
fi

# (a) the ceiling
PORT="$(free_port)"
"$TARGET/release/bench-ceiling" "127.0.0.1:$PORT" 2>"$WORK/ceiling.log" &
PIDS+=($!)
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/check" -H 'Content-Type: application/json' \
    -d '{"customer":"x","feature":"f","quantity":1,"consume":true}' 2>/dev/null && break
  sleep 0.1
done
TOLLGATE_KEY="" run_wrk ceiling "http://127.0.0.1:$PORT"
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

# (b) Tollgate
start_tollgate

# Warm up (first consumes open each customer's meter).
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s bench/http/check.lua "$BASE" >/dev/null
TG_PID="${PIDS[${#PIDS[@]}-1]}"
read -r b0 w0 c0 < <(commit_figures)
cpu0="$(cpu_micros "$TG_PID")"
run_wrk tollgate "$BASE"
cpu1="$(cpu_micros "$TG_PID")"
read -r b1 w1 c1 < <(commit_figures)

summary() { # name
  local f="$WORK/$1.txt"
  printf '%-10s %12s req/s   p50 %-10s p99 %-10s %s\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' "$f")" \
    "$(awk '$1=="50%" {print $2}' "$f")" \
    "$(awk '$1=="99%" {print $2}' "$f")" \
    "$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$f" || echo 'all 2xx')"
}
echo
echo "== summary ($THREADS threads, $CONNECTIONS connections, $DURATION, $(nproc) cores)"
summary ceiling
summary tollgate
c="$(awk '/Requests\/sec/ {print $2}' "$WORK/ceiling.txt")"
t="$(awk '/Requests\/sec/ {print $2}' "$WORK/tollgate.txt")"
python3 -c "print(f'tollgate / ceiling throughput: {float($t)/float($c):.2f}')"
n="$(awk '/requests in/ {print $1}' "$WORK/tollgate.txt")"
echo "tollgate server CPU (user + system) per request: $(((cpu1 - cpu0) / n)) µs"
echo "group commits during the run: $((b1 - b0)), ledger writes: $((w1 - w0))" \
  "(mean batch $(python3 -c "print(round(($w1-$w0)/max(1,$b1-$b0),1))")," \
  "mean time in append_batch $(python3 -c "print(round(($c1-$c0)/max(1,$b1-$b0)/1000,2))") ms)"
