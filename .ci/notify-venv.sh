#!/usr/bin/env bash
# Installs the Python tools the alert-delivery tests (crates/notify/tests) run as
# third-party peers into a venv under target/:
#   - aiosmtpd: a real SMTP server that receives the alert e-mails;
#   - standardwebhooks: the reference verifier of Standard Webhooks signatures.
# Idempotent and quick when already installed (the tests call it themselves;
# .ci/run calls it before `cargo test` so the download happens once, up front).
# Prints the venv's python path.
#
# Environment: TOLLGATE_NOTIFY_VENV  the venv directory (default target/notify-venv)
set -euo pipefail
cd "$(dirname "$0")/.."

AIOSMTPD_VERSION="1.4.6"
STANDARDWEBHOOKS_VERSION="1.1.0"
VENV="${TOLLGATE_NOTIFY_VENV:-target/notify-venv}"

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

installed() {
  "$VENV/bin/python" - "$AIOSMTPD_VERSION" "$STANDARDWEBHOOKS_VERSION" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
ok = m.version("aiosmtpd") == sys.argv[1] and m.version("standardwebhooks") == sys.argv[2]
sys.exit(0 if ok else 1)
PY
}

if ! installed; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >&2; then
    # Debian's python3 needs its venv module installed separately.
    rm -rf "$VENV"
    apt-get install -y -qq python3-venv >/dev/null || sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV" >&2
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "aiosmtpd==$AIOSMTPD_VERSION" "standardwebhooks==$STANDARDWEBHOOKS_VERSION" >&2
fi
echo "$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")/bin/python"
