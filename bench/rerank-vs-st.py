"""Benchmark 1 of issue 5: in-process rerank throughput, finerank against sentence-transformers.

Both score the same CaseHOLD (query, holding) pairs in this one run, on this machine, with the same
max length, the same batch size and the same number of threads:
  - a cross-encoder of MiniLM-L6's shape (the default model's encoder under a seeded fresh
    one-logit head, saved once with transformers), against `CrossEncoder.predict`;
  - the default MiniLM as a bi-encoder, against `SentenceTransformer.encode` of the queries and the
    holdings followed by the cosine, mapped to a relevance score by the calibration finerank
    reports (sigmoid(scale x cosine + bias)), as finerank maps it.
finerank runs once per precision in PRECISIONS: fp32, as the reference does, and bf16 autocast,
which oneDNN runs on AMX or AVX-512 bf16 units where the CPU has them (the reference stays fp32).
Each side is timed REPEATS times after a warm-up and keeps its best time. The scores must agree to
within 1e-3. Prints a table and writes runs/bench/rerank-vs-st.json.

Usage: .venv/bin/python bench/rerank-vs-st.py FINERANK_BINARY   (env: QUERIES=200 MAXLEN=384 BATCH=32 THREADS=2
REPEATS=3 PRECISIONS=f32,bf16 DEVICE=cpu MODEL=.venv/default-model OUT=runs/bench
FINERANK_CASEHOLD=../shared/data/casehold; bench/gpu.sh sets DEVICE=cuda, where the reference stays fp32)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

# Loading reports and progress bars would bury the table.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import CrossEncoder, SentenceTransformer  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402
from timing import best_of  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("FINERANK_CASEHOLD", os.path.join(ROOT, "..", "shared", "data", "casehold"))
BASE = os.environ.get("MODEL", os.path.join(ROOT, ".venv", "default-model"))
DEVICE = os.environ.get("DEVICE", "cpu")
OUT = os.environ.get("OUT", os.path.join(ROOT, "runs", "bench"))
QUERIES = int(os.environ.get("QUERIES", "200"))
MAXLEN = int(os.environ.get("MAXLEN", "384"))
BATCH = int(os.environ.get("BATCH", "32"))
THREADS = int(os.environ.get("THREADS", "2"))
REPEATS = int(os.environ.get("REPEATS", "3"))
PRECISIONS = os.environ.get("PRECISIONS", "f32,bf16").split(",")
TOLERANCE = 1e-3


def finerank(binary, model, kind, precision, scores_path):
    def run():
        out = subprocess.run(
            [binary, "--device", DEVICE, "--precision", precision, "--threads", str(THREADS),
             "bench", "--model", model,
             "--kind", kind, "--data", DATA, "--queries", str(QUERIES), "--steps", "0",
             "--max-length", str(MAXLEN), "--batch-size", str(BATCH), "--scores", scores_path],
            check=True, capture_output=True, text=True).stdout
        return json.loads(out)
    # finerank times its own scoring (after its own warm-up), leaving out process start and load.
    runs = [run() for _ in range(REPEATS)]
    secs = min(r["rerank"]["seconds"] for r in runs)
    return secs, np.array(json.load(open(scores_path)), dtype=np.float64), runs[-1]["calibration"]


def cross_encoder_dir(work):
    """MiniLM-L6's encoder under a fresh, seeded one-logit head, in Hugging Face layout."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=1)
    out = os.path.join(work, "minilm-cross-encoder")
    model.save_pretrained(out)
    for name in os.listdir(BASE):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(os.path.join(BASE, name), out)
    return out


def main():
    binary = sys.argv[1]
    torch.set_num_threads(THREADS)
    rows = [json.loads(line) for line in open(os.path.join(DATA, "test.jsonl"))][:QUERIES]
    queries = [r["citing_prompt"] for r in rows]
    holdings = [r[f"holding_{i}"] for r in rows for i in range(5)]
    pairs = list(zip([q for q in queries for _ in range(5)], holdings))
    results = []
    with tempfile.TemporaryDirectory() as work:
        scores_path = os.path.join(work, "scores.json")

        ce_dir = cross_encoder_dir(work)
        ce = CrossEncoder(ce_dir, max_length=MAXLEN, device=DEVICE)
        ref_secs, ref = best_of(lambda: ce.predict(pairs, batch_size=BATCH), REPEATS)
        # A pair that fits the window is read whole by both stacks. Past the window, transformers
        # cuts the longer text first, while finerank keeps half the window for the query and
        # splits the document into windows, so those pairs (if any) are left out of the comparison.
        pair_len = ce.tokenizer([q for q, _ in pairs], [h for _, h in pairs])["input_ids"]
        fits = np.array([len(ids) <= MAXLEN for ids in pair_len])
        print(f"{fits.sum()} of {len(pairs)} cross-encoder pairs fit in {MAXLEN} tokens; "
              "scores are compared on those")
        for precision in PRECISIONS:
            # The fresh checkpoint has no calibration.json: finerank's score is sigmoid(logit), as
            # CrossEncoder.predict's is.
            ours_secs, ours, _ = finerank(binary, ce_dir, "cross-encoder", precision, scores_path)
            diff = np.abs(ours.reshape(-1) - np.asarray(ref).reshape(-1))[fits].max()
            results.append((f"cross-encoder (MiniLM-L6 shape), finerank {precision}", "CrossEncoder.predict",
                            ours_secs, ref_secs, diff))

        st = SentenceTransformer(BASE, device=DEVICE)
        st.max_seq_length = MAXLEN

        def encode():
            q = st.encode(queries, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
            h = st.encode(holdings, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
            return np.einsum("qd,qkd->qk", q, h.reshape(len(queries), 5, -1))
        ref_secs, cosine = best_of(encode, REPEATS)
        for precision in PRECISIONS:
            ours_secs, ours, cal = finerank(binary, BASE, "bi-encoder", precision, scores_path)
            ref = 1 / (1 + np.exp(-(cal["scale"] * cosine + cal["bias"])))
            results.append((f"bi-encoder (all-MiniLM-L6-v2), finerank {precision}", "SentenceTransformer.encode",
                            ours_secs, ref_secs, np.abs(ours - ref).max()))

    n = len(pairs)
    print(f"{n} CaseHOLD pairs ({len(rows)} queries x 5 holdings), max length {MAXLEN}, "
          f"batch {BATCH}, {THREADS} threads, best of {REPEATS}")
    print("| model | reference | finerank pairs/s | reference pairs/s | ratio | max score diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    report = []
    for model, ref_name, ours_secs, ref_secs, diff in results:
        print(f"| {model} | {ref_name} | {n / ours_secs:.1f} | {n / ref_secs:.1f} | "
              f"{ref_secs / ours_secs:.2f}x | {diff:.1e} |")
        report.append({"model": model, "reference": ref_name, "pairs": n,
                       "finerank_pairs_per_second": n / ours_secs, "reference_pairs_per_second": n / ref_secs,
                       "ratio": ref_secs / ours_secs, "max_abs_score_diff": float(diff)})
    os.makedirs(OUT, exist_ok=True)
    json.dump({"device": DEVICE, "max_length": MAXLEN, "batch_size": BATCH, "threads": THREADS, "results": report},
              open(os.path.join(OUT, "rerank-vs-st.json"), "w"), indent=2)
    bad = [r for r in report if r["max_abs_score_diff"] > TOLERANCE]
    if bad:
        sys.exit(f"scores disagree by more than {TOLERANCE}: {[r['model'] for r in bad]}")


if __name__ == "__main__":
    main()
