#!/usr/bin/env bash
# Benchmark 5 of issue 5: benchmarks 1 (rerank pairs/s) and 3 (fine-tuning pairs/s, accuracy) on
# an H100/H200 that the `device` tool lends, finerank beside the reference stacks on the same card;
# and issue 13's check that a dataset without negatives trains a better model (bench/no-negatives.sh).
# CI never runs it. Two steps:
#   here:        bench/gpu.sh pack      # stripped release binary, default model, CaseHOLD and the
#                                       # reference loop into .cache/gpu (the machine is offline)
#   GPU machine: bench/gpu.sh run       # with the device tool's carry [".cache/gpu"]
#                bench/gpu.sh run-llm   # issue 16's LLM rerankers (bench/llm-vs-st.py), same carry
# The device tool carries at most 64 MiB, and the model alone is 91 MB in fp32. So the pack holds
# its weights rounded to fp16, which `run` widens back to fp32 before either stack loads them (both
# then train and score from the same rounded weights), and the binary gzipped: about 55 MB in all.
# The results, with the card's name, go to $OUT (the device tool brings them back) or runs/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
pack=.cache/gpu

# recast PYTHON FILE DTYPE: rewrites a safetensors file's floating-point tensors in DTYPE.
recast() {
  "$1" - "$2" "$3" <<'PY'
import sys
import torch
from safetensors.torch import load_file, save_file
path, dtype = sys.argv[1], getattr(torch, sys.argv[2])
save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(path).items()}, path,
          metadata={"format": "pt"})
PY
}

case ${1:-} in
pack)
  scripts/bootstrap.sh
  cargo build -q --release -p finerank
  rm -rf "$pack" && mkdir -p "$pack/casehold"
  strip -o "$pack/finerank" target/release/finerank
  gzip -9 "$pack/finerank"
  cp -rL .venv/default-model "$pack/model"
  recast .venv/bin/python "$pack/model/model.safetensors" float16
  cp "${FINERANK_CASEHOLD:-../shared/data/casehold}"/{train,test}.jsonl "$pack/casehold/"
  cp ../shared/reference/peer_finetune.py "$pack/"
  # PEFT for run-llm's reference, in case the GPU machine's Python lacks it (pure-Python wheels).
  .venv/bin/pip download -q --no-deps -d "$pack/wheels" peft==0.21.2 accelerate==1.15.0
  size=$(du -sb "$pack" | cut -f1)
  echo "gpu: packed $size bytes into $pack"
  [ "$size" -le $((64 << 20)) ] || { echo "gpu: the pack is over the device tool's 64 MiB" >&2; exit 1; }
  ;;
run)
  # libtorch comes from the GPU machine's own torch wheel, and so does the reference's Python.
  LD_LIBRARY_PATH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
  export LD_LIBRARY_PATH
  [ -x "$pack/finerank" ] || gunzip -k "$pack/finerank.gz"
  out=${OUT:-runs/bench}
  mkdir -p "$out"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # Back to fp32 before anything loads the model: transformers 5 keeps a checkpoint's own dtype
  # unless told otherwise, which would run the reference in fp16.
  cp -r "$pack/model" "$work/model"
  recast python3 "$work/model/model.safetensors" float32
  model=$work/model
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu-card.txt"
  # Each step has its own time limit, so one that hangs leaves the others their share of the lease.
  # Benchmark 3's throughput: the same 40 timed steps as on the CPU, bf16 autocast.
  for kind in bi-encoder cross-encoder; do
    timeout 90 "$pack/finerank" --device cuda bench --model "$model" --kind "$kind" --data "$pack/casehold" \
      --queries 200 --steps 40 --max-length 384 | tee "$out/gpu-finerank-$kind.json" || true
  done
  # The reference loop on the same card: 2,000 rows, 2 epochs, bf16 autocast, each kind.
  MODEL=$model DATA=$pack/casehold NTRAIN=2000 SEEDS=0 MODES=bi,ce BF16=1 PYTHONUNBUFFERED=1 \
    timeout 200 python3 "$pack/peer_finetune.py" | tee "$out/gpu-peer.jsonl" || true
  # Benchmark 3's accuracy and time to the kept checkpoint: the whole flow, as `make demo-full` runs it.
  timeout 200 "$pack/finerank" --device cuda demo --full --data "$pack/casehold" --base "$model" \
    --out "$work/demo" --home "$work/home" | tail -n 40 || true
  cp "$work/demo/report.md" "$out/gpu-demo-full.md" 2>/dev/null || echo "gpu: demo --full wrote no report"
  # Issue 13: CaseHOLD as retrieval with mined negatives and with none, fp32 like the CPU figures.
  mkdir -p "$out/no-negatives"
  DEVICE=cuda FINERANK_PRECISION=f32 WORK=$work/no-negatives OUT=$out/no-negatives \
    FINERANK_CASEHOLD=$pack/casehold timeout 300 bench/no-negatives.sh "$pack/finerank" "$model" || true
  # Benchmark 1: rerank pairs/s against sentence-transformers (fp32) on the card.
  DEVICE=cuda PRECISIONS=f32,bf16 PEERS= MODEL=$model FINERANK_CASEHOLD=$pack/casehold OUT=$out PYTHONUNBUFFERED=1 \
    timeout 120 python3 bench/rerank-vs-st.py "$pack/finerank" || true
  # The profile behind keeping attention off cuDNN's kernel (crates/model/src/attention.rs).
  timeout 60 python3 bench/sdpa-shapes.py || true
  ;;
run-llm)
  # Issue 16: Qwen3-Reranker-0.6B- and 4B-shaped rerankers (random weights, built on the card by
  # transformers, so nothing large travels) against sentence-transformers' CrossEncoder (scoring)
  # and transformers + PEFT (LoRA fine-tuning): pairs/s and peak GPU memory, bf16 autocast both.
  LD_LIBRARY_PATH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
  export LD_LIBRARY_PATH
  [ -x "$pack/finerank" ] || gunzip -k "$pack/finerank.gz"
  python3 -c "import peft" 2>/dev/null || pip install -q --no-deps "$pack"/wheels/*.whl
  out=${OUT:-runs/bench}
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu-card.txt"
  # Each shape with fp32 base weights on both sides, then 4B's with bf16 base weights on both
  # (finerank's default for LoRA on a GPU), for the memory they save.
  for run in 0.6b/f32 4b/f32 4b/bf16; do
    shape=${run%/*} base=${run#*/}
    DEVICE=cuda SHAPE=$shape BASE_DTYPE=$base FINERANK_CASEHOLD=$pack/casehold OUT=$out QUERIES=100 \
      STEPS=8 MAXLEN=512 BATCH=32 PYTHONUNBUFFERED=1 timeout 240 python3 bench/llm-vs-st.py "$pack/finerank" \
      | tee "$out/gpu-llm-$shape-$base.md" || true
  done
  ;;
*)
  echo "usage: bench/gpu.sh pack|run|run-llm" >&2
  exit 2
  ;;
esac
