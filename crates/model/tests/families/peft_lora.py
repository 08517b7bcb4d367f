"""A finerank LoRA adapter as PEFT reads it, for the LoRA parity test (`../lora.rs`).

usage: peft_lora.py BASE_DIR ADAPTER_DIR [GRADS_OUT] < batch.json > result.json
batch.json: {"input_ids", "token_type_ids", "attention_mask"}, each [[...]] padded, and with
GRADS_OUT, "groups": the sizes of the listwise loss's groups (relevant passage first).
Loads the base with transformers (a causal LM for a CAUSAL_LM adapter, an LLM reranker's, whose
logit is its answer tokens' difference as llm_reranker.py reads it) and the adapter with
`PeftModel.from_pretrained`, float32, eval mode (no dropout, in the base or the adapters), CPU. Prints {"logits": [...]} and, with GRADS_OUT,
"loss": the listwise loss finerank trains with, whose gradients of every trainable tensor (the
adapters and the head's `modules_to_save`) it writes to GRADS_OUT, keyed as PEFT saves those
tensors in adapter_model.safetensors.
"""
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from llm_reranker import relevant_minus_irrelevant

base_dir, adapter_dir = sys.argv[1], sys.argv[2]
grads_out = sys.argv[3] if len(sys.argv) > 3 else None
batch = json.load(sys.stdin)
# An LLM reranker's adapter (CAUSAL_LM) goes over the causal LM, scored as hf_logits.py scores one.
causal = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
auto = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
base = auto.from_pretrained(base_dir, dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=grads_out is not None).eval()
if causal:
    logits = relevant_minus_irrelevant(model, base_dir, batch)
else:
    inputs = {
        k: torch.tensor(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")
    }
    logits = model(**inputs).logits[:, 0]
result = {"logits": [float(x) for x in logits.detach()]}
if grads_out:
    groups = logits.split(batch["groups"])
    loss = torch.stack([-torch.log_softmax(g, 0)[0] for g in groups]).mean()
    loss.backward()
    result["loss"] = float(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    # PEFT's own renaming from parameter names to the keys it saves.
    save_file(
        {k: v.contiguous() for k, v in get_peft_model_state_dict(model, grads).items()},
        grads_out,
    )
json.dump(result, sys.stdout)
