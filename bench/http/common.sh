# Shared by run.sh and profile.sh (sourced, not run): building, starting
# `tollgate serve` on a fresh SQLite store with the VOCA catalog, and creating
# a `server` key and BENCH_CUSTOMERS customers on `enterprise`.
# Expects ROOT, WORK, TARGET set and a PIDS array; sets PORT, BASE, TOLLGATE_KEY.
# TOLLGATE_BIN: another `tollgate` binary than the release build's (e.g. a copy
# kept to compare before/after).

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_tollgate [WRAPPER...]: starts the server (under WRAPPER, e.g. valgrind,
# when given) and waits until it answers; its pid is appended to PIDS.
start_tollgate() {
  PORT="$(free_port)"
  BASE="http://127.0.0.1:$PORT"
  (
    cd "$WORK"
    RUST_LOG="${RUST_LOG:-warn}" \
    TOLLGATE_RATE_LIMIT__PER_SECOND="${TOLLGATE_RATE_LIMIT__PER_SECOND:-1000000}" \
    TOLLGATE_RATE_LIMIT__BURST="${TOLLGATE_RATE_LIMIT__BURST:-1000000}" \
      exec "$@" "${TOLLGATE_BIN:-$TARGET/release/tollgate}" serve --catalog "$ROOT/examples/catalogs/voca.toml" \
      --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" \
      --storage-url "sqlite://$WORK/data/tollgate.db?synchronous=${SQLITE_SYNCHRONOUS:-full}"
  ) >"$WORK/stdout" 2>"$WORK/stderr" &
  PIDS+=($!)
  local admin=""
  for _ in $(seq 1 600); do
    admin="$(sed -n 's/^admin API key (shown once, store it now): //p' "$WORK/stdout" | head -n1)"
    [ -n "$admin" ] && curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null && break
    sleep 0.1
  done
  [ -n "$admin" ] || { echo "tollgate did not start:" >&2; cat "$WORK/stderr" >&2; exit 1; }

  export TOLLGATE_KEY
  TOLLGATE_KEY="$(curl -fsS -X POST "$BASE/v1/keys" -H "Authorization: Bearer $admin" \
    -H 'Content-Type: application/json' -d '{"name":"bench","scope":"server"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"

  echo "creating $BENCH_CUSTOMERS customers on enterprise (queries_per_month unlimited)"
  seq 0 $((BENCH_CUSTOMERS - 1)) | xargs -P 8 -I{} curl -fsS -o /dev/null -X POST "$BASE/v1/customers" \
    -H "Authorization: Bearer $TOLLGATE_KEY" -H 'Content-Type: application/json' \
    -d '{"id":"bench-{}","plan":"enterprise","status":"active"}'
}

# The group-commit figures from /metrics: "batches writes commit-microseconds".
commit_figures() {
  curl -fsS "$BASE/metrics" | awk '
    /^tollgate_group_commit_batches_total/ {b=$2}
    /^tollgate_group_commit_writes_total/ {w=$2}
    /^tollgate_group_commit_seconds_total/ {s=$2}
    END {printf "%d %d %d\n", b, w, s * 1000000}'
}

# CPU time (user + system) a process has used so far, in microseconds.
cpu_micros() { # pid
  awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000000 / hz)}' "/proc/$1/stat"
}
