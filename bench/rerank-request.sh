# Sourced by the load benchmarks (bench/serve-load.sh, bench/serve-while-training.sh), with
# $work set: writes $work/post.lua, wrk's script for one Cohere v1 rerank request of one CaseHOLD
# prompt and the 100 holdings of the first 20 test rows, and defines `ms`, which turns wrk's
# latencies (850us, 12.5ms, 1.2s) into milliseconds. Installs Debian's wrk if it is missing.
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
