#!/usr/bin/env bash
# Benchmark 3 of issue 5: fine-tuning throughput, finerank against the plain PyTorch +
# transformers loop that produced the issues' reference figures (../shared/reference/
# peer_finetune.py), in one run on this machine. Both train the default MiniLM as a bi-encoder
# on the same rows with the same loss, batch, max length (384), epochs and seed, each at its own
# default learning rate (finerank 4e-5, the peer 2e-5);
# both are then measured on the 200 CaseHOLD test rows.
#   256: the tutorial's split, 256 training rows (4 epochs); finerank validates on its 154 rows.
#   2000: `demo --full`'s split, the first 1,846 rows (2 epochs); finerank validates on the last 154.
# finerank's pairs/s counts optimizer steps only, as the peer's does; its wall time includes its
# validation runs, and "to best" is when the kept checkpoint was taken.
# finerank runs in fp32 as the peer does on a CPU; FINERANK_PRECISION=bf16 runs it under bf16
# autocast instead (the peer stays fp32), and the results then go to *-bf16.json.
# Usage: bench/finetune-vs-peer.sh [256] [2000]   (default: both; the 2000 run takes ~40 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(256 2000)
scripts/bootstrap.sh
cargo build -q --release -p finerank
bin=$PWD/target/release/finerank
data=${FINERANK_CASEHOLD:-../shared/data/casehold}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=runs/bench
mkdir -p "$out"
py=.venv/bin/python
export FINERANK_HOME=$work/home

echo "finerank trains in ${FINERANK_PRECISION:-f32} (and is evaluated in f32); the peer in f32"
printf '| rows | finerank pairs/s | peer pairs/s | ratio | finerank to best / total s | peer total s | finerank acc@1 | peer acc@1 |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for n in "${sizes[@]}"; do
  case $n in
    256) split=(--train 256 --valid 154 --test 0) ;;
    2000) split=(--train 1846 --valid 154 --test 0) ;;
    *) echo "bench: sizes are 256 and 2000" >&2; exit 2 ;;
  esac
  "$bin" prepare --input "$data/train.jsonl" --out "$work/$n" "${split[@]}" >/dev/null
  rows=$(wc -l <"$work/$n/train.jsonl")
  # The peer reads raw CaseHOLD and trains on the first NTRAIN rows: the same rows as finerank.
  mkdir -p "$work/peer-$n"
  head -n "$rows" "$data/train.jsonl" >"$work/peer-$n/train.jsonl"
  cp "$data/test.jsonl" "$work/peer-$n/test.jsonl"

  "$bin" --device cpu finetune --train "$work/$n/train.jsonl" --valid "$work/$n/valid.jsonl" --seed 0 \
    >"$work/ft-$n.json" 2>"$work/ft-$n.log"
  id=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/ft-$n.json")
  "$bin" --device cpu --precision f32 eval --model "$id" --test "$data/test.jsonl" --max-length 384 --bootstrap 0 --json >"$work/eval-$n.json"
  MODEL=.venv/default-model DATA="$work/peer-$n" NTRAIN="$rows" SEEDS=0 MODES=bi MAXLEN=384 \
    "$py" ../shared/reference/peer_finetune.py >"$work/peer-$n.jsonl"

  "$py" - "$n" "$work/ft-$n.json" "$work/eval-$n.json" "$work/peer-$n.jsonl" "$out/finetune-vs-peer-$n${FINERANK_PRECISION:+-$FINERANK_PRECISION}.json" <<'PY'
import json, sys
n, ft, ev, peer, dest = sys.argv[1:]
ours = json.load(open(ft))["metrics"]
acc = json.load(open(ev))["metrics"]["accuracy_at_1"]["mean"]
ref = next(json.loads(l) for l in open(peer) if '"ft_bi"' in l)
row = {"rows": n, "finerank_pairs_per_second": ours["train_pairs_per_second"],
       "peer_pairs_per_second": ref["pairs_per_s"], "ratio": ours["train_pairs_per_second"] / ref["pairs_per_s"],
       "finerank_seconds_to_best": ours["best_seconds"], "finerank_seconds": ours["train_seconds"],
       "finerank_best_step": ours["best_step"], "finerank_steps": ours["steps"],
       "peer_seconds": ref["train_secs"], "finerank_accuracy_at_1": acc, "peer_accuracy_at_1": ref["test"]}
json.dump(row, open(dest, "w"), indent=2)
print(f"| {n} | {row['finerank_pairs_per_second']:.1f} | {row['peer_pairs_per_second']:.1f} | {row['ratio']:.2f}x | "
      f"{row['finerank_seconds_to_best']:.0f} / {row['finerank_seconds']:.0f} | {row['peer_seconds']:.0f} | "
      f"{acc:.3f} | {row['peer_accuracy_at_1']:.3f} |")
PY
done
