"""Why benchmark 6's BERT scores differ from CrossEncoder's by 4e-4 where the other families' agree
to 6e-8: transformers disagrees with itself as much on that random BERT cross-encoder.

Builds benchmark 6's BERT model (bench/families-vs-st.py) and scores the pair where finerank and
CrossEncoder.predict differed most (test query 35, holding 4: 207 tokens) with transformers'
eager attention, its SDPA attention, and SDPA in a padded batch beside a longer pair.

Usage: .venv/bin/python bench/bert-attention-spread.py
"""
import importlib.util
import json
import os
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("families", os.path.join(HERE, "families-vs-st.py"))
families = importlib.util.module_from_spec(spec)
spec.loader.exec_module(families)

with tempfile.TemporaryDirectory() as work:
    model_dir = families.build("bert", work)
    test = [json.loads(line) for line in open(os.path.join(families.DATA, "test.jsonl"))][:40]
    pairs = [(r["citing_prompt"], r[f"holding_{i}"]) for r in test for i in range(5)]
    tok = AutoTokenizer.from_pretrained(model_dir)
    (q, h), (q2, h2) = pairs[179], pairs[31]
    alone = tok(q, h, return_tensors="pt")
    batch = tok([q, q2], [h, h2], padding=True, truncation="longest_first", max_length=256,
                return_tensors="pt")
    print(f"pair 179: {alone['input_ids'].shape[1]} tokens; logits:")
    for impl in ["eager", "sdpa"]:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, attn_implementation=impl).eval()
        with torch.no_grad():
            print(f"  {impl}, alone: {model(**alone).logits.item():.6f}")
    with torch.no_grad():
        print(f"  sdpa, in a padded batch: {model(**batch).logits[0].item():.6f}")
