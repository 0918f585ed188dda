#!/usr/bin/env bash
# Renders the example invoice (crates/billing/tests/sample), its credit note and
# an invoice closed by a real run (crates/server/tests/invoices.rs) as HTML and PDF and
# turns both into PNGs under target/invoice-images/, to look at:
#   invoice.pdf -> invoice-pdf-1.png (pdftoppm), invoice.html -> invoice-html.png
#   (headless Chromium). Needs poppler-utils and chromium (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/invoice-images"
mkdir -p "$out"

if ! command -v pdftoppm >/dev/null || ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils chromium
fi

TOLLGATE_RENDER_DIR="$out" cargo test -q -p tollgate-billing --test render
# An invoice made by a real invoice run (graduated usage from the ledger).
TOLLGATE_RENDER_DIR="$out" TOLLGATE_TEST_POSTGRES_URL= \
  cargo test -q -p tollgate-server --test invoices a_closed_period_is_explained_from_the_ledger

for pdf in "$out"/*.pdf; do
  pdftoppm -png -r 80 "$pdf" "${pdf%.pdf}-pdf"
done
for page in "$out"/*.html; do
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --no-first-run --hide-scrollbars --window-size=900,1300 \
    --screenshot="${page%.html}-html.png" "file://$page" 2>/dev/null
done
ls -1 "$out"/*.png
