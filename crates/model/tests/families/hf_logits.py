"""Logits of a saved cross-encoder as transformers reads it, for the families' export test.

usage: hf_logits.py MODEL_DIR < ids.json > logits.json
ids.json: {"input_ids": [[...]], "attention_mask": [[...]]}, padded; float32, eval mode.
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

batch = json.load(sys.stdin)
config = json.loads((Path(sys.argv[1]) / "config.json").read_text())
if config.get("model_type") == "new":
    # GTE's Hub layout names remote code that cannot be fetched here; transformers' native gte
    # classes read it (gte_hub.py says how, and refuses what they cannot reproduce).
    import gte_hub

    model = gte_hub.load(sys.argv[1])
else:
    model = AutoModelForSequenceClassification.from_pretrained(
        sys.argv[1], dtype=torch.float32
    ).eval()
with torch.no_grad():
    logits = model(
        input_ids=torch.tensor(batch["input_ids"]),
        attention_mask=torch.tensor(batch["attention_mask"]),
    ).logits[:, 0]
json.dump([float(x) for x in logits], sys.stdout)
