#!/usr/bin/env bash
# Benchmark 5 of issue 5: benchmarks 1 (rerank pairs/s) and 3 (fine-tuning pairs/s) on an
# H100/H200 that the `device` tool lends, finerank beside the reference loop on the same card.
# CI never runs it. Two steps:
#   here:        bench/gpu.sh pack      # stripped release binary, default model, CaseHOLD and the
#                                       # reference loop into .cache/gpu (the machine is offline)
#   GPU machine: bench/gpu.sh run       # with the device tool's carry [".cache/gpu"]
# The device tool carries at most 64 MiB, and the model alone is 91 MB in fp32. So the pack holds
# its weights rounded to fp16 (finerank and transformers both load them back into fp32; the run
# is bf16 anyway) and the binary gzipped: about 55 MB in all.
# The results, with the card's name, go to $OUT (the device tool brings them back) or runs/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
pack=.cache/gpu
case ${1:-} in
pack)
  scripts/bootstrap.sh
  cargo build -q --release -p finerank
  rm -rf "$pack" && mkdir -p "$pack/casehold"
  strip -o "$pack/finerank" target/release/finerank
  gzip -9 "$pack/finerank"
  cp -rL .venv/default-model "$pack/model"
  .venv/bin/python - "$pack/model/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
path = sys.argv[1]
save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}, path,
          metadata={"format": "pt"})
PY
  cp "${FINERANK_CASEHOLD:-../shared/data/casehold}"/{train,test}.jsonl "$pack/casehold/"
  cp ../shared/reference/peer_finetune.py "$pack/"
  size=$(du -sb "$pack" | cut -f1)
  echo "gpu: packed $size bytes into $pack"
  [ "$size" -le $((64 << 20)) ] || { echo "gpu: the pack is over the device tool's 64 MiB" >&2; exit 1; }
  ;;
run)
  # libtorch comes from the GPU machine's own torch wheel.
  LD_LIBRARY_PATH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
  export LD_LIBRARY_PATH
  [ -x "$pack/finerank" ] || gunzip -k "$pack/finerank.gz"
  out=${OUT:-runs/bench}
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu-card.txt"
  for kind in bi-encoder cross-encoder; do
    "$pack/finerank" --device cuda bench --model "$pack/model" --kind "$kind" --data "$pack/casehold" \
      --queries 200 --steps 40 --max-length 384 | tee "$out/gpu-finerank-$kind.json"
  done
  if python3 -c "import transformers" 2>/dev/null; then
    MODEL=$pack/model DATA=$pack/casehold NTRAIN=2000 SEEDS=0 MODES=bi,ce BF16=1 \
      python3 "$pack/peer_finetune.py" | tee "$out/gpu-peer.jsonl"
  else
    echo "gpu: transformers is not installed here; the reference loop was skipped" | tee "$out/gpu-peer.jsonl"
  fi
  ;;
*)
  echo "usage: bench/gpu.sh pack|run" >&2
  exit 2
  ;;
esac
