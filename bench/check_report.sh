#!/usr/bin/env bash
# Documented check: an evaluation report opens in headless Chromium without console errors and with its images.
# usage: bash bench/check_report.sh REPORT_DIR   (needs Debian's chromium: apt-get install chromium)
set -euo pipefail
report=$(realpath "$1/report.html")
log=$(mktemp)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --enable-logging=stderr --v=0 \
  --window-size=1200,1800 --screenshot="$1/report.png" "file://$report" 2>"$log" || true
if grep -E "CONSOLE|Uncaught" "$log"; then echo "console errors in $report"; exit 1; fi
imgs=$(grep -o 'data:image/png;base64' "$report" | wc -l)
[ -s "$1/report.png" ] && [ "$imgs" -ge 2 ] || { echo "no screenshot or images missing"; exit 1; }
echo "ok: $report rendered ($imgs embedded images), screenshot $1/report.png"
