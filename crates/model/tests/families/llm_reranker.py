"""How the test scripts score with an LLM reranker (a causal LM): its logit is that of its
"relevant" answer token less that of its "irrelevant" one at each row's last real token: "yes"
and "no" for Qwen3-Reranker, "1" and "0" for mxbai-rerank-v2 (config.json's "reranker" key says
which). The rows are padded on the right, which a causal model's real tokens never see."""
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

ANSWERS = {"mxbai-rerank-v2": ("1", "0")}


def relevant_minus_irrelevant(model, model_dir, batch):
    """`batch`: {"input_ids", "attention_mask"}, each [[...]]; the tokenizer in `model_dir` names
    the answer tokens."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(model_dir)
    answers = ANSWERS.get(config.get("reranker"), ("yes", "no"))
    relevant, irrelevant = tok.convert_tokens_to_ids(list(answers))
    mask = torch.tensor(batch["attention_mask"])
    out = model(input_ids=torch.tensor(batch["input_ids"]), attention_mask=mask).logits
    last = out[torch.arange(len(out)), mask.sum(1) - 1]
    return last[:, relevant] - last[:, irrelevant]
