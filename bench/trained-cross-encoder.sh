#!/usr/bin/env bash
# A MiniLM cross-encoder trained on CaseHOLD, for the quality rows of bench/rerank-vs-st.py: the
# default model fine-tuned as a cross-encoder, fp32 on the CPU, for one epoch over the first
# 1,846 training rows with the next 154 for validation (`finerank demo --full`'s split), at 128
# tokens, seed 0.
# Made once into .cache/bench-cross-encoder (about 13 minutes on 2 cores); prints the model's
# directory.
# Usage: bench/trained-cross-encoder.sh [FINERANK_BINARY, default target/release/finerank]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/finerank}
dest=.cache/bench-cross-encoder
if [ ! -f "$dest/model/config.json" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  data=${FINERANK_CASEHOLD:-../shared/data/casehold}
  "$bin" prepare --input "$data/train.jsonl" --out "$work/data" --train 1846 --valid 154 --test 0 >&2
  FINERANK_HOME="$work/home" "$bin" --device cpu --precision f32 finetune --seed 0 \
    --train "$work/data/train.jsonl" --valid "$work/data/valid.jsonl" \
    --kind cross-encoder --train-epochs 1 --max-length 128 >&2
  rm -rf "$dest"
  mkdir -p "$dest"
  mv "$work"/home/models/*-ft "$dest/model"
fi
echo "$PWD/$dest/model"
