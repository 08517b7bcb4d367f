"""How the test scripts score with an LLM reranker (a causal LM): its logit is that of "yes" less
that of "no" at each row's last real token. The rows are padded on the right, which a causal
model's real tokens never see."""
import torch
from transformers import AutoTokenizer


def yes_minus_no(model, model_dir, batch):
    """`batch`: {"input_ids", "attention_mask"}, each [[...]]; the tokenizer in `model_dir` names
    the "yes" and "no" tokens."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    mask = torch.tensor(batch["attention_mask"])
    out = model(input_ids=torch.tensor(batch["input_ids"]), attention_mask=mask).logits
    last = out[torch.arange(len(out)), mask.sum(1) - 1]
    return last[:, yes] - last[:, no]
