#!/usr/bin/env bash
# Takes a screenshot of a perch bench HTML report with headless Chromium, to check that its
# plots render offline: bench/screenshot.sh DIR/report.html OUT.png [WIDTHxHEIGHT]
# Needs Debian's chromium (apt-get install -y chromium); PERCH_CHROMIUM names another binary.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi
report=$1 out=$2 size=${3:-1280x2400}
browser=${PERCH_CHROMIUM:-}
if [ -z "$browser" ]; then
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
  done
fi
if [ -z "$browser" ]; then
  echo "$0: no chromium (apt-get install -y chromium)" >&2
  exit 3
fi
abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# No network: the report must be self-contained. --no-sandbox: Chromium refuses to run as
# root with its sandbox.
timeout 60 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$profile" --no-first-run --hide-scrollbars \
  --proxy-server=127.0.0.1:9 --proxy-bypass-list='<-loopback>' \
  --window-size="${size/x/,}" --screenshot="$out" "file://$abs" >/dev/null 2>&1
test -s "$out"
echo "$out"
