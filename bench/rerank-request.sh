# Sourced by the load benchmarks (bench/serve-load.sh, bench/serve-while-training.sh,
# bench/replicas.sh), with $work set: writes $work/post.lua, wrk's script for one Cohere v1
# rerank request of one CaseHOLD prompt and the 100 holdings of the first 20 test rows, and
# defines `ms`, which turns wrk's latencies (850us, 12.5ms, 1.2s) into milliseconds, `free_port`,
# and `wrk_row`, one timed wrk run as a row of the load tables. Installs Debian's wrk if it is
# missing.
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "bench: wrk is missing and only root can install it: run 'apt-get install wrk' as root" >&2
    exit 1
  fi
  echo "bench: installing Debian's wrk package" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
.venv/bin/python - "$work/body.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("../shared/data/casehold/test.jsonl")][:20]
docs = [r[f"holding_{i}"] for r in rows for i in range(5)]
json.dump({"model": "all-MiniLM-L6-v2", "query": rows[0]["citing_prompt"], "documents": docs, "top_n": 5},
          open(sys.argv[1], "w"))
PY
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json"); wrk.body = f:read("*a"); f:close()
LUA

ms() { awk -v v="$1" 'BEGIN { if (v ~ /ms$/) { sub(/ms$/, "", v); print v } else if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 } else { sub(/s$/, "", v); print v*1000 } }'; }

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wrk_row LABEL CONCURRENCY URL: $secs seconds of the request at CONCURRENCY, printed as the row
# "| LABEL | concurrency | requests/s | p50 ms | p99 ms | non-2xx or errors |".
wrk_row() {
  local label=$1 conc=$2 url=$3 out rps p50 p99 bad
  out=$(wrk -t1 -c"$conc" -d"${secs}s" --timeout 120s --latency -s "$work/post.lua" "$url")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {n+=1} END {print n+0}' <<<"$out")
  printf '| %s | %d | %s | %s | %s | %s |\n' "$label" "$conc" "$rps" "$(ms "$p50")" "$(ms "$p99")" "$bad"
}
