#!/usr/bin/env bash
# The standard perch bench suite (make bench): starts perch dev (three edges, embedded NATS,
# SQLite on a fresh directory), runs each scenario with its baselines, stops perch dev, checks
# the write ledgers against its database, and prints every summary.
#
#   bench/suite.sh [PERCH_BINARY] [OUT_DIR]        (default bin/perch, bench/results)
#
# Environment: PERCH_BENCH_PORT (first edge's port, default 18181), PERCH_BENCH_DB (a
# PostgreSQL DSN: adds the postgres baseline to write-burst), PERCH_BENCH_DURATION (each
# run, default 10s), PERCH_BENCH_NGINX (nginx binary; default nginx on PATH or /usr/sbin/nginx).
set -euo pipefail
bin=${1:-bin/perch}
out=${2:-bench/results}
port=${PERCH_BENCH_PORT:-18181}
dur=${PERCH_BENCH_DURATION:-10s}
mkdir -p "$out"
data=$(mktemp -d)
e1=http://127.0.0.1:$port e2=http://127.0.0.1:$((port + 1)) e3=http://127.0.0.1:$((port + 2))

# The ratelimit scenario needs an edge with a rate limit by API key, where perch dev has one.
limit=()
if "$bin" dev -h 2>&1 | grep -q -- '-rate-limit'; then
  limit=(--rate-limit key:100/s)
fi
"$bin" dev --data "$data" --port-base "$port" --log-level warn "${limit[@]}" >"$out/dev.log" 2>&1 &
dev=$!
stop_dev() {
  if kill -0 "$dev" 2>/dev/null; then
    kill -TERM "$dev"
    wait "$dev" || true
  fi
}
trap 'stop_dev; rm -rf "$data"' EXIT
for _ in $(seq 200); do
  if curl -fs "$e1/readyz" >/dev/null 2>&1 && curl -fs "$e3/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$dev" 2>/dev/null; then echo "perch dev exited:" >&2; cat "$out/dev.log" >&2; exit 1; fi
  sleep 0.1
done

status=0
runs=()
bench() {
  local name=$1
  shift
  echo "== $name: perch bench $*" >&2
  runs+=("$name")
  if ! "$bin" bench --out "$out/$name" --duration "$dur" --quiet "$@" >/dev/null; then
    echo "== $name: FAILED (see $out/$name/summary.txt)" >&2
    status=1
  fi
}

pg=()
if [ -n "${PERCH_BENCH_DB:-}" ]; then pg=(--baseline postgres --db "$PERCH_BENCH_DB"); fi
if [ -n "${PERCH_BENCH_NGINX:-}" ]; then export PERCH_NGINX=$PERCH_BENCH_NGINX; fi

bench read-hot --target "$e1,$e2,$e3" --scenario read-hot --rate 2000/s --baseline ceiling,nginx \
  --threshold 'p99<50ms' --threshold 'errors<0.1%'
bench feed --target "$e1,$e2,$e3" --scenario feed --rate 1000/s --baseline ceiling,nginx \
  --threshold 'p99<100ms' --threshold 'errors<0.1%'
bench write-burst --target "$e1" --scenario write-burst --rate 400/s --baseline ceiling "${pg[@]}" \
  --threshold 'p99<500ms' --threshold 'errors<0.1%'
bench sync --target "$e1,$e2,$e3" --scenario sync --rate 500/s --baseline ceiling \
  --threshold 'p99<100ms' --threshold 'errors<0.1%'
if [ ${#limit[@]} -gt 0 ]; then
  bench ratelimit --target "$e1" --scenario ratelimit --rate 300/s --threshold 'errors<0.1%'
fi
bench read-hot-capacity --target "$e1,$e2,$e3" --scenario read-hot --search --rate 2000/s \
  --search-steps 6 --baseline ceiling --threshold 'p99<20ms' --threshold 'errors<0.1%' --duration 5s

stop_dev
for name in "${runs[@]}"; do
  if [ -s "$out/$name/ledger.jsonl" ]; then
    echo "== $name: perch bench verify" >&2
    if ! "$bin" bench verify --db "sqlite:$data/perch.db" --ledger "$out/$name/ledger.jsonl" >"$out/$name/verify.txt"; then
      status=1
    fi
  fi
done
for name in "${runs[@]}"; do
  echo
  cat "$out/$name/summary.txt" 2>/dev/null || echo "$name: no report"
  if [ -f "$out/$name/verify.txt" ]; then echo "  verify     $(head -n 1 "$out/$name/verify.txt")"; fi
done
echo
echo "reports: $out/<scenario>/report.html"
exit $status
