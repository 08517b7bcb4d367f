"""Logits of a saved cross-encoder as transformers reads it, for the families' export test.

usage: hf_logits.py MODEL_DIR < ids.json > logits.json
ids.json: {"input_ids", "token_type_ids", "attention_mask"}, each [[...]] padded; float32,
eval mode. The type ids go to the families whose models take them. A causal LM is an LLM
reranker: its logit is its answer tokens' difference at each row's last real token (the rows
are padded on the right, which a causal model's real tokens never see).
"""
import inspect
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

batch = json.load(sys.stdin)
config = json.loads((Path(sys.argv[1]) / "config.json").read_text())
if config.get("model_type") == "new":
    # GTE's Hub layout names remote code that cannot be fetched here; transformers' native gte
    # classes read it (gte_hub.py says how, and refuses what they cannot reproduce).
    import gte_hub

    model = gte_hub.load(sys.argv[1])
elif any(a.endswith("ForCausalLM") for a in config.get("architectures", [])):
    from llm_reranker import relevant_minus_irrelevant

    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
    with torch.no_grad():
        logits = relevant_minus_irrelevant(model, sys.argv[1], batch)
    json.dump([float(x) for x in logits], sys.stdout)
    sys.exit()
else:
    model = AutoModelForSequenceClassification.from_pretrained(
        sys.argv[1], dtype=torch.float32
    ).eval()
takes = inspect.signature(model.forward).parameters
inputs = {k: torch.tensor(v) for k, v in batch.items() if k in takes}
with torch.no_grad():
    logits = model(**inputs).logits[:, 0]
json.dump([float(x) for x in logits], sys.stdout)
