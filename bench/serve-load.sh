#!/usr/bin/env bash
# Load benchmark of `finerank serve` (issue 3): requests/s and p50/p99 latency of /v1/rerank with
# 100 CaseHOLD holdings a request, at concurrency 1, 8 and 32, with cross-request batching on
# (the default) and off (--max-batch-requests 1). The load comes from wrk (Debian's package),
# not from finerank. Usage: bench/serve-load.sh [seconds per run, default 20]
# (env: PRECISION=auto, the server's --precision, e.g. int8; MODES="on off", the batching modes
# to run; FINERANK_BIN, a finerank binary to serve with instead of the tests' build)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
scripts/bootstrap.sh
bin=${FINERANK_BIN:-$(tests/test-binary.sh)}
precision=${PRECISION:-auto}
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

. bench/rerank-request.sh

echo "precision $precision, load average $(cut -d' ' -f1-3 /proc/loadavg)"

printf '| batching | concurrency | requests/s | p50 ms | p99 ms | non-2xx or errors |\n| --- | --- | --- | --- | --- | --- |\n'
for mode in ${MODES:-on off}; do
  extra=(); [ "$mode" = off ] && extra=(--max-batch-requests 1)
  port=$(free_port)
  "$bin" --device cpu --precision "$precision" serve --data-dir "$work/data-$mode" --port "$port" --queue-capacity 256 "${extra[@]}" \
    > "$work/server-$mode.log" 2>&1 &
  server=$!
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.5; done
  url="http://127.0.0.1:$port/v1/rerank"
  wrk -t1 -c1 -d3s -s "$work/post.lua" "$url" >/dev/null   # warm-up
  for c in 1 8 32; do
    wrk_row "$mode" "$c" "$url"
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
