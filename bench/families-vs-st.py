"""Issue 15: scoring and fine-tuning throughput of each encoder family on CPU, finerank against
sentence-transformers' CrossEncoder and a plain PyTorch training step, in one run.

Each family gets a random-weight cross-encoder at one small shape (SHAPE: hidden 256, 4 layers,
4 heads, intermediate 1024), built by transformers from the family's test fixture config
(crates/model/tests/families/) with that fixture's tokenizer, so every family reads the same
CaseHOLD text with the same kind of tokenizer it ships with. Both sides then, on this machine
with the same threads, max length and batch size:
  - score QUERIES test queries x 5 holdings: `finerank bench` (its own timer, after a warm-up)
    against `CrossEncoder.predict`, best of REPEATS; the scores must agree to 1e-3 on the
    pairs that fit the window (past it, the two stacks cut differently);
  - train STEPS steps of finerank's recipe (8 queries x 5 holdings a step, listwise softmax
    cross-entropy, AdamW at 3e-5, dropout on): `finerank bench --steps` against the same loop
    in PyTorch, each timing every step from the first (as finerank's own report does).
Prints a table and writes runs/bench/families-vs-st.json.

Usage: .venv/bin/python bench/families-vs-st.py FINERANK_BINARY
(env: QUERIES=40 STEPS=4 MAXLEN=256 BATCH=32 THREADS=2 REPEATS=3 FAMILIES=bert,...
FINERANK_CASEHOLD=../shared/data/casehold OUT=runs/bench)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import CrossEncoder  # noqa: E402
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from timing import best_of  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "model", "tests", "families")
SHARED = os.path.join(ROOT, "..", "shared", "fixtures")
DATA = os.environ.get("FINERANK_CASEHOLD", os.path.join(ROOT, "..", "shared", "data", "casehold"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "runs", "bench"))
QUERIES = int(os.environ.get("QUERIES", "40"))
STEPS = int(os.environ.get("STEPS", "4"))
MAXLEN = int(os.environ.get("MAXLEN", "256"))
BATCH = int(os.environ.get("BATCH", "32"))
THREADS = int(os.environ.get("THREADS", "2"))
REPEATS = int(os.environ.get("REPEATS", "3"))
SHAPE = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
# Family -> the fixture whose config and tokenizer it starts from.
SOURCES = {
    "bert": os.path.join(SHARED, "tiny-bert-cross-encoder"),
    "xlm-roberta": os.path.join(SHARED, "tiny-xlmr-cross-encoder"),
    "modernbert": os.path.join(FIXTURES, "modernbert-cross-encoder"),
    "deberta-v3": os.path.join(FIXTURES, "deberta-v3-cross-encoder"),
    "mpnet": os.path.join(FIXTURES, "mpnet-cross-encoder"),
}
FAMILIES = os.environ.get("FAMILIES", ",".join(SOURCES)).split(",")
TOLERANCE = 1e-3
QUERIES_PER_STEP, HOLDINGS = 8, 5


def build(family, work):
    """A seeded random cross-encoder of SHAPE in the family's layout, with its tokenizer."""
    src = SOURCES[family]
    config = AutoConfig.from_pretrained(src)
    for key, value in SHAPE.items():
        setattr(config, key, value)
    # Room for MAXLEN tokens in every family's position scheme (XLM-R and MPNet count from 2).
    config.max_position_embeddings = max(config.max_position_embeddings, 514)
    if family == "xlm-roberta":
        # The fixture borrows BERT's tokenizer, whose second segment has type id 1.
        config.type_vocab_size = 2
    if family == "deberta-v3":
        config.pooler_hidden_size = SHAPE["hidden_size"]
        config.position_buckets = 256
    if family == "modernbert":
        config.local_attention = 128
        config.layer_types = ["full_attention" if i % 2 == 0 else "sliding_attention"
                              for i in range(SHAPE["num_hidden_layers"])]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    out = os.path.join(work, family)
    model.save_pretrained(out)
    for name in os.listdir(src):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(os.path.join(src, name), out)
    return out


def finerank(binary, model, steps, scores_path):
    out = subprocess.run(
        [binary, "--device", "cpu", "--precision", "f32", "--threads", str(THREADS), "bench",
         "--model", model, "--data", DATA, "--queries", str(QUERIES), "--steps", str(steps),
         "--max-length", str(MAXLEN), "--batch-size", str(BATCH), "--scores", scores_path],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def reference_training(model_dir, rows):
    """STEPS steps of finerank's cross-encoder recipe in plain PyTorch; pairs per second."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)

    def step(batch):
        queries = [r["citing_prompt"] for r in batch for _ in range(HOLDINGS)]
        # The relevant holding first in each group, as finerank orders a group.
        holdings = [r[f"holding_{i}"] for r in batch
                    for i in [r["label"]] + [j for j in range(HOLDINGS) if j != r["label"]]]
        enc = tok(queries, holdings, padding=True, truncation="longest_first", max_length=MAXLEN,
                  return_tensors="pt")
        logits = model(**enc).logits.view(len(batch), HOLDINGS)
        loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    batches = [rows[i:i + QUERIES_PER_STEP] for i in range(0, len(rows), QUERIES_PER_STEP)]
    t = time.perf_counter()
    for b in batches[:STEPS]:
        step(b)
    return STEPS * QUERIES_PER_STEP * HOLDINGS / (time.perf_counter() - t)


def main():
    binary = sys.argv[1]
    torch.set_num_threads(THREADS)
    test = [json.loads(line) for line in open(os.path.join(DATA, "test.jsonl"))][:QUERIES]
    train = [json.loads(line) for line in open(os.path.join(DATA, "train.jsonl"))]
    pairs = [(r["citing_prompt"], r[f"holding_{i}"]) for r in test for i in range(HOLDINGS)]
    report = []
    with tempfile.TemporaryDirectory() as work:
        scores_path = os.path.join(work, "scores.json")
        for family in FAMILIES:
            print(f"{family}...", file=sys.stderr)
            model_dir = build(family, work)
            ce = CrossEncoder(model_dir, max_length=MAXLEN, device="cpu")
            ref_secs, ref = best_of(lambda: ce.predict(pairs, batch_size=BATCH), REPEATS)
            runs = [finerank(binary, model_dir, 0, scores_path) for _ in range(REPEATS)]
            ours_secs = min(r["rerank"]["seconds"] for r in runs)
            ours = np.array(json.load(open(scores_path)), dtype=np.float64).reshape(-1)
            # Whole lengths: a tokenizer.json may carry its own truncation, which would hide them.
            lengths = ce.tokenizer([q for q, _ in pairs], [h for _, h in pairs],
                                   truncation=False)["input_ids"]
            fits = np.array([len(ids) <= MAXLEN for ids in lengths])
            diff = float(np.abs(ours - np.asarray(ref).reshape(-1))[fits].max())
            trained = finerank(binary, model_dir, STEPS, scores_path)["train"]
            report.append({
                "family": family, "pairs": len(pairs), "fit": int(fits.sum()),
                "score_finerank": len(pairs) / ours_secs, "score_reference": len(pairs) / ref_secs,
                "max_abs_score_diff": diff,
                "train_finerank": trained["pairs_per_second"],
                "train_reference": reference_training(model_dir, train),
            })
    print(f"{len(pairs)} CaseHOLD pairs, shape {SHAPE}, max length {MAXLEN}, batch {BATCH}, "
          f"{THREADS} threads, fp32; training {STEPS} steps of {QUERIES_PER_STEP}x{HOLDINGS} pairs")
    print("| family | score: finerank pairs/s | CrossEncoder.predict | ratio | max score diff "
          "| train: finerank pairs/s | PyTorch loop | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in report:
        print(f"| {r['family']} | {r['score_finerank']:.1f} | {r['score_reference']:.1f} | "
              f"{r['score_finerank'] / r['score_reference']:.2f}x | {r['max_abs_score_diff']:.1e} | "
              f"{r['train_finerank']:.1f} | {r['train_reference']:.1f} | "
              f"{r['train_finerank'] / r['train_reference']:.2f}x |")
    os.makedirs(OUT, exist_ok=True)
    json.dump({"shape": SHAPE, "max_length": MAXLEN, "batch_size": BATCH, "threads": THREADS,
               "results": report}, open(os.path.join(OUT, "families-vs-st.json"), "w"), indent=2)
    bad = [r["family"] for r in report if r["max_abs_score_diff"] > TOLERANCE]
    if bad:
        sys.exit(f"scores disagree by more than {TOLERANCE}: {bad}")


if __name__ == "__main__":
    main()
