#!/usr/bin/env bash
# Property-based API conformance: runs schemathesis against a real `tollgate serve`
# (SQLite, the VOCA example catalog), using the server's own /openapi.json.
#
# Every generated request must get: no 5xx (not_a_server_error), a status the
# operation documents (status_code_conformance), the documented content type
# (content_type_conformance), and a body matching the documented schema
# (response_schema_conformance). Exits non-zero on any failure.
# .ci/schemathesis.toml makes generated ids hit the customers, features and plans
# that exist some of the time.
#
# Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 40)
#   SCHEMATHESIS_SEED          hypothesis seed (default 20261123: runs are repeatable)
#   TOLLGATE_BIN               a built `tollgate` binary (default: `cargo build`, debug —
#                              CI's `cargo test` has already compiled it, so this is free)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-40}"
SEED="${SCHEMATHESIS_SEED:-20261123}"
VENV="target/schemathesis-venv"

step() { printf '\n==> schemathesis: %s\n' "$*"; }

step "install schemathesis $SCHEMATHESIS_VERSION"
if [ ! -x "$VENV/bin/schemathesis" ] \
  || ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV"; then
    # Debian's python3 needs its venv module installed separately.
    rm -rf "$VENV"
    apt-get install -y -qq python3-venv >/dev/null || sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

step "build tollgate"
if [ -z "${TOLLGATE_BIN:-}" ]; then
  cargo build --quiet --bin tollgate
  TOLLGATE_BIN="target/debug/tollgate"
fi
TOLLGATE_BIN="$(realpath "$TOLLGATE_BIN")"
ROOT="$(pwd)"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free port: bind to 0 and read it back (the tiny window before the server
# binds is acceptable; the server fails loudly if it is taken meanwhile).
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT"

step "start tollgate serve on $BASE"
# Run from the work dir so no stray tollgate.toml is picked up; a generous
# per-key rate limit so the fuzzer's bursts are not all answered 429.
(
  cd "$WORK"
  TOLLGATE_RATE_LIMIT__PER_SECOND=100000 TOLLGATE_RATE_LIMIT__BURST=100000 \
    exec "$TOLLGATE_BIN" serve \
    --catalog "$ROOT/examples/catalogs/voca.toml" \
    --data-dir "$WORK/data" \
    --listen "127.0.0.1:$PORT"
) >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!

KEY=""
for _ in $(seq 1 100); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "tollgate serve exited early:" >&2
    cat "$WORK/stdout" "$WORK/stderr" >&2
    exit 1
  fi
  KEY="$(sed -n 's/^admin API key (shown once, store it now): //p' "$WORK/stdout" | head -n1)"
  if [ -n "$KEY" ] && curl -fsS "$BASE/readyz" >/dev/null 2>&1; then
    break
  fi
  sleep 0.2
done
if [ -z "$KEY" ] || ! curl -fsS "$BASE/readyz" >/dev/null; then
  echo "tollgate serve did not become ready (or printed no admin key):" >&2
  cat "$WORK/stdout" "$WORK/stderr" >&2
  exit 1
fi

step "seed customers"
# A few customers on plans, so operations on customer paths sometimes hit real
# data (schemathesis draws path parameters from the documented examples and at random).
api() {
  curl -sS -o "$WORK/resp" -w '%{http_code}' -X "$1" "$BASE$2" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' ${3:+-d "$3"}
}
for spec in "acme:pro" "globex:starter" "initech:enterprise" "umbrella:free"; do
  id="${spec%%:*}"
  plan="${spec##*:}"
  code="$(api POST /v1/customers "{\"id\":\"$id\",\"name\":\"$id\",\"plan\":\"$plan\",\"status\":\"active\"}")"
  if [ "$code" != 201 ]; then
    echo "creating customer $id answered $code: $(cat "$WORK/resp")" >&2
    exit 1
  fi
  code="$(api POST /v1/check "{\"customer\":\"$id\",\"feature\":\"queries_per_month\",\"quantity\":3,\"consume\":true}")"
  case "$code" in 200|429) ;; *)
    echo "a consume for $id answered $code: $(cat "$WORK/resp")" >&2
    exit 1 ;;
  esac
done

step "run ($MAX_EXAMPLES examples per operation, seed $SEED)"
status=0
# From the work dir: schemathesis keeps a .schemathesis/ cache in its working directory.
(cd "$WORK" && exec "$ROOT/$VENV/bin/schemathesis" --config-file "$ROOT/.ci/schemathesis.toml" run "$BASE/openapi.json" \
  --header "Authorization: Bearer $KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --generation-database none \
  --workers 2 \
  --request-timeout 10 \
  --no-color) \
  || status=$?

if grep -q "panicked" "$WORK/stderr"; then
  echo "the server panicked during the run:" >&2
  grep -A5 "panicked" "$WORK/stderr" >&2
  status=1
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "the server died during the run:" >&2
  tail -n 50 "$WORK/stderr" >&2
  status=1
fi
exit "$status"
