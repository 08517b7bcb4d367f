#!/usr/bin/env bash
# A dataset without negatives (issue 13): does fine-tuning on queries and their relevant documents
# alone beat the base model? One run, one machine:
#   1. `finerank demo --retrieval`: CaseHOLD as retrieval; mines 7 negatives per training query
#      from the corpus, fine-tunes on them, and evaluates over BM25's top 100 for the 200 test
#      queries.
#   2. The same training and validation queries with their negatives removed, fine-tuned at the
#      same defaults (the bi-encoder then contrasts each query with the batch's other relevant
#      documents, and validation ranks each query against other queries' relevant documents).
#   3. `finerank eval --beir` of that model against the base and against the mined-negatives model.
# Usage: bench/no-negatives.sh [FINERANK] [BASE]   (DEVICE=cuda on a GPU; results in $OUT or
# runs/bench/no-negatives). BASE defaults to the embedded default model. FROM=DIR skips step 1 and
# reuses the `demo --retrieval` run that bench/retrieval-vs-st.sh left in DIR (its data, corpus and
# fine-tuned model, DIR/finerank and DIR/home), so the comparison costs one fine-tune.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/finerank}
base=${2:-all-MiniLM-L6-v2}
device=${DEVICE:-cpu}
out=${OUT:-runs/bench/no-negatives}
data=${FINERANK_CASEHOLD:-../shared/data/casehold}
mkdir -p "$out"
work=${WORK:-$out/work}
rm -rf "$work" && mkdir -p "$work/none"
export FINERANK_HOME=$work/home
py=$(command -v python3)
[ -x .venv/bin/python ] && py=.venv/bin/python

if [ -n "${FROM:-}" ]; then
  demo=$FROM/finerank
else
  demo=$work/mined
  "$bin" --device "$device" demo --retrieval --data "$data" --base "$base" --out "$demo" \
    2>"$out/mined.log"
fi
cp "$demo/report.md" "$out/mined-report.md"
mined=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"]["id"])' \
  "$demo/report.json")
[ -n "${FROM:-}" ] && mined=$FROM/home/models/$mined

for split in train valid; do
  "$py" - "$demo/data/$split.jsonl" "$work/none/$split.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
    for line in src:
        row = json.loads(line)
        row["hard_negatives"] = []
        dst.write(json.dumps(row) + "\n")
PY
done
"$bin" --device "$device" finetune --base "$base" --train "$work/none/train.jsonl" \
  --valid "$work/none/valid.jsonl" --max-length 384 --name no-negatives \
  >"$out/none-record.json" 2>"$out/none.log"
none=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$out/none-record.json")

beir=$demo/casehold-beir
"$bin" --device "$device" eval --beir "$beir" --split test --max-length 384 --model "$none" \
  --compare "$base" --out "$out/eval-vs-base.json" 2>>"$out/eval.log" | tee "$out/eval-vs-base.md"
"$bin" --device "$device" eval --beir "$beir" --split test --max-length 384 --model "$none" \
  --compare "$mined" --out "$out/eval-vs-mined.json" 2>>"$out/eval.log" | tee "$out/eval-vs-mined.md"
