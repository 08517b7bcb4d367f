#!/usr/bin/env bash
# CaseHOLD as retrieval, finerank against the reference recipe, in one run on this machine.
#   finerank: `finerank demo --retrieval` (dense retrieval with the base model, 7 negatives
#     from the top 50, no margin; fine-tune at its defaults; evaluation over BM25's
#     top 100 for the 200 test queries), with its mining cache emptied first so that it pays for
#     its index and embeddings as the reference does.
#   reference: bench/retrieval_reference.py on the same training queries and corpus:
#     sentence-transformers' mine_hard_negatives and MultipleNegativesRankingLoss.
# Both fine-tuned models are then re-ranking BM25's top 100 in one `finerank eval --beir`, which
# gives their paired difference with a CI and a randomization test.
# Usage: bench/retrieval-vs-st.sh   (about an hour on 2 cores; results in runs/bench/retrieval/)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build -q --release -p finerank
bin=$PWD/target/release/finerank
py=.venv/bin/python
out=runs/bench/retrieval
site=.cache/bench-site
mkdir -p "$out"
export FINERANK_HOME=$PWD/$out/home

# The reference's extra packages, beside .venv and never in it (see the requirements file).
want=$(sha256sum bench/requirements-reference.txt | cut -d' ' -f1)
if [ "$(cat "$site/.stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$site"
  .venv/bin/pip --disable-pip-version-check download -q --no-deps -d .cache/bench-wheels -r bench/requirements-reference.txt
  .venv/bin/pip --disable-pip-version-check install -q --no-deps --no-index --find-links .cache/bench-wheels \
    --target "$site" -r bench/requirements-reference.txt
  echo "$want" >"$site/.stamp"
fi

rm -rf "$out/finerank/casehold-beir/.finerank-cache"
/usr/bin/time -f '%e' -o "$out/finerank.seconds" \
  "$bin" --device cpu demo --retrieval --out "$out/finerank" 2>"$out/finerank.log"
id=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"]["id"])' "$out/finerank/report.json")

rm -rf "$out/reference"
PYTHONPATH=$site OMP_NUM_THREADS=2 "$py" bench/retrieval_reference.py \
  "$out/finerank/casehold-beir" "$out/finerank/data/train.jsonl" "$out/reference" 2>"$out/reference.log"

"$bin" --device cpu eval --beir "$out/finerank/casehold-beir" --split test --max-length 384 \
  --model "$id" --compare "$out/reference/model" --out "$out/eval.json" --csv "$out/eval.csv" \
  2>"$out/eval.log" | tee "$out/eval.md"

"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
demo = json.load(open(f"{out}/finerank/report.json"))
ref = json.load(open(f"{out}/reference/timing.json"))
ev = json.load(open(f"{out}/eval.json"))
ours_train = demo["model"]["metrics"]["train_seconds"]
print("| recipe | mining s | training s | mining + training s |")
print("| --- | --- | --- | --- |")
print(f"| finerank | {demo['mining_seconds']:.0f} | {ours_train:.0f} | {demo['mining_seconds'] + ours_train:.0f} |")
print(f"| reference | {ref['mining_seconds']:.0f} | {ref['training_seconds']:.0f} | {ref['mining_seconds'] + ref['training_seconds']:.0f} |")
PY
