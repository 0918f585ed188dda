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
#   per commit) instead of the default FULL.
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

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

run_wrk() { # name url
  echo
  echo "== $1: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/http/check.lua $2"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/http/check.lua "$2" | tee "$WORK/$1.txt"
}

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
PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
(
  cd "$WORK"
  RUST_LOG="${RUST_LOG:-warn}" \
  TOLLGATE_RATE_LIMIT__PER_SECOND="${TOLLGATE_RATE_LIMIT__PER_SECOND:-1000000}" \
  TOLLGATE_RATE_LIMIT__BURST="${TOLLGATE_RATE_LIMIT__BURST:-1000000}" \
    exec "$TARGET/release/tollgate" serve --catalog "$ROOT/examples/catalogs/voca.toml" \
    --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" \
    --storage-url "sqlite://$WORK/data/tollgate.db?synchronous=${SQLITE_SYNCHRONOUS:-full}"
) >"$WORK/stdout" 2>"$WORK/stderr" &
PIDS+=($!)
ADMIN=""
for _ in $(seq 1 100); do
  ADMIN="$(sed -n 's/^admin API key (shown once, store it now): //p' "$WORK/stdout" | head -n1)"
  [ -n "$ADMIN" ] && curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null && break
  sleep 0.1
done
[ -n "$ADMIN" ] || { echo "tollgate did not start:" >&2; cat "$WORK/stderr" >&2; exit 1; }

export TOLLGATE_KEY
TOLLGATE_KEY="$(curl -fsS -X POST "$BASE/v1/keys" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' -d '{"name":"bench","scope":"server"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"

echo "creating $BENCH_CUSTOMERS customers on enterprise (queries_per_month unlimited)"
seq 0 $((BENCH_CUSTOMERS - 1)) | xargs -P 8 -I{} curl -fsS -o /dev/null -X POST "$BASE/v1/customers" \
  -H "Authorization: Bearer $TOLLGATE_KEY" -H 'Content-Type: application/json' \
  -d '{"id":"bench-{}","plan":"enterprise","status":"active"}'

# Warm up (first consumes open each customer's meter).
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s bench/http/check.lua "$BASE" >/dev/null
run_wrk tollgate "$BASE"

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
