"""Logits of a saved cross-encoder as transformers reads it, for the families' export test.

usage: hf_logits.py MODEL_DIR < ids.json > logits.json
ids.json: {"input_ids": [[...]], "attention_mask": [[...]]}, padded; float32, eval mode.
"""
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification

batch = json.load(sys.stdin)
model = AutoModelForSequenceClassification.from_pretrained(
    sys.argv[1], dtype=torch.float32
).eval()
with torch.no_grad():
    logits = model(
        input_ids=torch.tensor(batch["input_ids"]),
        attention_mask=torch.tensor(batch["attention_mask"]),
    ).logits[:, 0]
json.dump([float(x) for x in logits], sys.stdout)
