#!/usr/bin/env bash
# Rerank latency while the server fine-tunes (issue 14, item 11). wrk drives /v1/rerank at
# concurrency 1 with one CaseHOLD prompt and 100 holdings a request (as bench/serve-load.sh),
# first with the server idle, then while it fine-tunes the default model on 256 CaseHOLD queries,
# under two splits of the cores:
#   shared:  --serving-threads N --training-threads N --training-nice 0 (N = the cores: what the
#            server did before the split, every thread at the same priority);
#   halves:  --serving-threads N/2 --training-threads N/2 --training-nice 0 (each side its own
#            cores);
#   default: the server's defaults (training on half the cores, at nice 10).
# Each row gives the requests' p50 and p99 and the training's pace over the same seconds (steps
# of the job's loss log over the window).
# A last row gives the training's pace with no requests, under the defaults.
# Usage: bench/serve-while-training.sh [seconds per run, default 60]   (results in runs/bench/)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
scripts/bootstrap.sh
cargo build -q --release -p finerank
bin=$PWD/target/release/finerank
py=.venv/bin/python
cores=$(nproc)
out=runs/bench/serve-while-training
mkdir -p "$out"
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

"$bin" prepare --input ../shared/data/casehold/train.jsonl --out "$work/data" >/dev/null 2>&1
. bench/rerank-request.sh

# Starts a server with the given flags on a fresh data dir; sets $server and $api.
start() {
  local name=$1; shift
  local port
  port=$(free_port)
  "$bin" --device cpu serve --data-dir "$work/$name" --port "$port" "$@" >"$out/$name.log" 2>&1 &
  server=$!
  api="http://127.0.0.1:$port"
  until curl -sf "$api/health" >/dev/null; do sleep 0.5; done
}

stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

# Uploads the prepared data, waits for its validation, queues a long fine-tune and waits for its
# first step; prints the job's id.
train() {
  local dataset job
  dataset=$(curl -sf "$api/v1/datasets?name=casehold&type=reranker-finetune-input" \
    -F data=@"$work/data/train.jsonl" -F eval_data=@"$work/data/valid.jsonl" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  until curl -sf "$api/v1/datasets/$dataset" | grep -q '"validation_status":"validated"'; do sleep 1; done
  job=$(curl -sf "$api/v1/finetuning/finetuned-models" -H 'Content-Type: application/json' \
    -d "{\"name\":\"load\",\"settings\":{\"base_model\":{\"base_type\":\"BASE_TYPE_RERANK\"},\"dataset_id\":\"$dataset\",\"hyperparameters\":{\"train_epochs\":20}}}" \
    | "$py" -c 'import json,sys; print(json.load(sys.stdin)["finetuned_model"]["id"])')
  until [ "$(curl -sf "$api/v1/finetuning/finetuned-models/$job/training-losses" | "$py" -c 'import json,sys; print(len(json.load(sys.stdin)["losses"]))')" -ge 1 ]; do sleep 1; done
  echo "$job"
}

steps() { curl -sf "$api/v1/finetuning/finetuned-models/$1/training-losses" | "$py" -c 'import json,sys; print(len(json.load(sys.stdin)["losses"]))'; }

# One wrk run; prints "p50 p99 requests/s".
load() {
  local r
  r=$(wrk -t1 -c1 -d"${secs}s" --timeout 120s --latency -s "$work/post.lua" "$api/v1/rerank")
  echo "$(ms "$(awk '$1=="50%" {print $2}' <<<"$r")") $(ms "$(awk '$1=="99%" {print $2}' <<<"$r")") $(awk '/Requests\/sec/ {print $2}' <<<"$r")"
}

{
printf '| server | training | rerank p50 ms | rerank p99 ms | requests/s | training steps/min |\n| --- | --- | --- | --- | --- | --- |\n'
start idle
wrk -t1 -c1 -d3s -s "$work/post.lua" "$api/v1/rerank" >/dev/null
read -r p50 p99 rps <<<"$(load)"
printf '| default flags | none | %s | %s | %s | |\n' "$p50" "$p99" "$rps"
stop
half=$(( cores / 2 > 0 ? cores / 2 : 1 ))
for split in shared halves default; do
  flags=()
  [ "$split" = shared ] && flags=(--serving-threads "$cores" --training-threads "$cores" --training-nice 0)
  [ "$split" = halves ] && flags=(--serving-threads "$half" --training-threads "$half" --training-nice 0)
  start "$split" "${flags[@]}"
  wrk -t1 -c1 -d3s -s "$work/post.lua" "$api/v1/rerank" >/dev/null
  job=$(train)
  before=$(steps "$job"); t0=$(date +%s.%N)
  read -r p50 p99 rps <<<"$(load)"
  after=$(steps "$job"); t1=$(date +%s.%N)
  pace=$(awk -v a="$before" -v b="$after" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", (b - a) * 60 / (t1 - t0) }')
  label="${flags[*]:-default flags}"
  printf '| %s | fine-tuning | %s | %s | %s | %s |\n' "$label" "$p50" "$p99" "$rps" "$pace"
  if [ "$split" = default ]; then
    before=$(steps "$job"); t0=$(date +%s.%N)
    sleep "$secs"
    after=$(steps "$job"); t1=$(date +%s.%N)
    pace=$(awk -v a="$before" -v b="$after" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", (b - a) * 60 / (t1 - t0) }')
    printf '| default flags | fine-tuning, no requests | | | | %s |\n' "$pace"
  fi
  stop
done
} | tee "$out/table.md"
