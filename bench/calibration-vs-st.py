"""Checks `finerank calibrate` against an independent computation, and measures the mapping it
replaced: sentence-transformers' cosines of the same (query, passage) pairs, the expected
calibration error of (cosine + 1) / 2 (a bi-encoder's relevance score before calibration), and
a Platt fit (Newton's method, Platt's smoothed targets) of those cosines with its in-sample error.
The fit should match the scale and bias `finerank calibrate` prints for the same rows.

Usage: .venv/bin/python bench/calibration-vs-st.py ROWS_JSONL [MODEL_DIR]
ROWS_JSONL holds Cohere-format rows with hard negatives ({query, relevant_passages,
hard_negatives}); MODEL_DIR defaults to .venv/default-model.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINS = 10


def ece(probs, labels):
    """Expected calibration error over BINS equal-width bins, as finerank-eval computes it."""
    bins = np.minimum((probs * BINS).astype(int), BINS - 1)
    return sum(abs(labels[bins == b].sum() - probs[bins == b].sum()) for b in range(BINS)) / len(probs)


def platt(x, labels):
    """Newton's method on the logistic loss with Platt's smoothed targets."""
    pos, neg = labels.sum(), (~labels).sum()
    target = np.where(labels, (pos + 1) / (pos + 2), 1 / (neg + 2))
    a, b = 0.0, np.log((pos + 1) / (neg + 1))
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a * x + b)))
        grad = np.array([((p - target) * x).sum(), (p - target).sum()])
        if np.abs(grad).max() < 1e-5:
            break
        w = p * (1 - p)
        hess = np.array([[(w * x * x).sum(), (w * x).sum()], [(w * x).sum(), w.sum()]])
        a, b = np.array([a, b]) - np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
    return a, b


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    model = SentenceTransformer(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, ".venv", "default-model"),
                                device="cpu")
    docs, owner, labels = [], [], []
    for i, r in enumerate(rows):
        for relevant, passages in ((True, r["relevant_passages"]), (False, r.get("hard_negatives", []))):
            docs += passages
            owner += [i] * len(passages)
            labels += [relevant] * len(passages)
    q = model.encode([r["query"] for r in rows], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    d = model.encode(docs, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    cosine = np.einsum("ij,ij->i", q[owner], d).astype(np.float64)
    labels = np.array(labels)
    a, b = platt(cosine, labels)
    print(f"{len(labels)} pairs, {labels.sum()} relevant, {len(rows)} queries")
    print(f"(cosine + 1) / 2: ECE {ece((cosine + 1) / 2, labels):.4f}")
    print(f"Platt fit: sigmoid({a:.4f} x cosine {b:+.4f}): in-sample ECE {ece(1 / (1 + np.exp(-(a * cosine + b))), labels):.4f}")


if __name__ == "__main__":
    main()
