"""Scores (query, document) pairs with Hugging Face's own stacks, for the parity test.

usage: hf_score.py MODEL_DIR cross-encoder|bi-encoder  < pairs.json  > scores.json
Raw scores, before any calibration: cross-encoders load with transformers (the logit);
bi-encoders with sentence-transformers (the cosine), exactly as finerank reads them.
"""
import json
import sys

import torch

model_dir, kind = sys.argv[1], sys.argv[2]
pairs = json.load(sys.stdin)
queries = [p["query"] for p in pairs]
docs = [p["document"] for p in pairs]

if kind == "cross-encoder":
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = tok(queries, docs, padding=True, truncation="only_second", return_tensors="pt")
    with torch.no_grad():
        scores = model(**batch).logits[:, 0]
else:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    q = model.encode(queries, convert_to_tensor=True, normalize_embeddings=True)
    d = model.encode(docs, convert_to_tensor=True, normalize_embeddings=True)
    scores = (q * d).sum(-1)
json.dump([float(s) for s in scores], sys.stdout)
