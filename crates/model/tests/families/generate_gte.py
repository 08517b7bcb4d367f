#!/usr/bin/env python
"""Generate the tiny random-weight GTE ("new") cross-encoder fixture in this folder.

Run from the repository root:

    .venv/bin/python crates/model/tests/families/generate_gte.py

It (re)writes gte-cross-encoder/ next to this file: a GteForSequenceClassification built in transformers, saved in
the layout of Alibaba-NLP's Hub checkpoints (gte-multilingual-reranker-base): config.json with NewConfig's keys and
`"model_type": "new"`, weights named as NewForSequenceClassification names them (`new.` prefix, fused
`attention.qkv_proj` and `mlp.up_gate_proj`, `attn_ln`, `mlp_ln`, `new.pooler.dense`, `classifier`). The script
then reads that folder back through transformers' own weight conversion (gte_hub.load) and checks every weight comes
back bit-equal (and the logits within 1e-6), so the layout written is the one transformers reads. The shared pieces (corpus, pairs,
weight draws, the tokenizer.json check) come from generate.py; the format of expected.json is the same as there.

Running it twice gives byte-identical files. Nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import shutil

# First: generate.py sets the thread and offline environment before torch and tokenizers start.
import generate as common  # isort: skip

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import gte_hub
import transformers
from transformers import AutoTokenizer, GteForSequenceClassification

NAME = "gte-cross-encoder"
FOLDER = common.HERE / NAME

# ---------------------------------------------------------------------------------------------------------------
# The Hub's layout
# ---------------------------------------------------------------------------------------------------------------


def new_config(vocab_size: int, pad_token_id: int) -> dict:
    """config.json as gte-multilingual-reranker-base has it (NewConfig's keys, its remote-code auto_map), at the
    fixture's sizes. RoPE as the real one: theta 20000 with fixed NTK scaling, factor 8."""
    impl = "Alibaba-NLP/new-impl--"
    return {
        "architectures": ["NewForSequenceClassification"],
        "auto_map": {
            "AutoConfig": impl + "configuration.NewConfig",
            "AutoModel": impl + "modeling.NewModel",
            "AutoModelForSequenceClassification": impl + "modeling.NewForSequenceClassification",
        },
        "model_type": "new",
        "vocab_size": vocab_size,
        "hidden_size": common.HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": common.HEADS,
        "intermediate_size": common.INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": 0.0,
        "max_position_embeddings": 8192,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_type": "layer_norm",
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "rope",
        "rope_theta": 20000,
        "rope_scaling": {"factor": 8.0, "type": "ntk"},
        "pack_qkv": True,
        "unpad_inputs": False,
        "use_memory_efficient_attention": False,
        "logn_attention_scale": False,
        "logn_attention_clip1": False,
        "pad_token_id": pad_token_id,
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
        "torch_dtype": "float32",
    }


LAYER = re.compile(r"gte\.layers\.(\d+)\.(.+)")
# transformers' names inside a layer -> the Hub's, for the tensors that are only renamed.
RENAMED = {
    "self_attn.o_proj": "attention.o_proj",
    "post_attention_layernorm": "attn_ln",
    "post_mlp_layernorm": "mlp_ln",
    "mlp.down_proj": "mlp.down_proj",
}
# The Hub's fused tensors and the transformers tensors they hold, in order (transformers' conversion chunks them
# along dim 0 in this order).
FUSED = {
    "attention.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    "mlp.up_gate_proj": ["mlp.up_proj", "mlp.gate_proj"],
}


def to_hub(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' GteForSequenceClassification names -> NewForSequenceClassification's, fusing q/k/v and
    up/gate. Used for the weights and, the same way, for their gradients."""
    out, used = {}, set()
    layers = sorted({int(m.group(1)) for n in tensors if (m := LAYER.fullmatch(n))})
    for i in layers:
        src, dst = f"gte.layers.{i}.", f"new.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for theirs, ours in RENAMED.items():
                if (name := f"{src}{theirs}.{kind}") in tensors:
                    out[f"{dst}{ours}.{kind}"] = tensors[name]
                    used.add(name)
            for ours, parts in FUSED.items():
                names = [f"{src}{p}.{kind}" for p in parts]
                if all(n in tensors for n in names):
                    out[f"{dst}{ours}.{kind}"] = torch.cat([tensors[n] for n in names], dim=0).contiguous()
                    used.update(names)
    for name, t in tensors.items():
        if name.startswith(("gte.embeddings.", "gte.pooler.")):
            out["new." + name.removeprefix("gte.")] = t
            used.add(name)
        elif name.startswith("classifier."):
            out[name] = t
            used.add(name)
    left = sorted(set(tensors) - used)
    assert not left, f"tensors with no Hub name: {left}"
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------------------------
# The fixture
# ---------------------------------------------------------------------------------------------------------------


def logits_of(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.squeeze(-1)


def gte() -> dict:
    # XLM-R's kind, as gte-multilingual ships, with its 8192-token window.
    tok = common.xlm_roberta_tokenizer()
    tok.model_max_length = 8192
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    config = new_config(common.round_up(len(tok), 64), tok.pad_token_id)
    torch.manual_seed(6)
    built = GteForSequenceClassification(gte_hub.gte_config(config))
    gte_hub.set_rope(built, config)
    common.randomize(built, seed=606)
    built.set_attn_implementation("eager")
    built.eval()

    if FOLDER.exists():
        shutil.rmtree(FOLDER)
    FOLDER.mkdir(parents=True)
    (FOLDER / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    weights = to_hub({n: p.detach() for n, p in built.named_parameters()})
    save_file(weights, str(FOLDER / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(FOLDER)

    # Everything below uses the files as written, read the way transformers reads them.
    # As a user of the real checkpoint would: without running its remote code (config.json's auto_map), which
    # AutoTokenizer would otherwise prompt for.
    tok = AutoTokenizer.from_pretrained(FOLDER, trust_remote_code=False)
    batch = tok(
        [q for q, _ in common.PAIRS],
        [d for _, d in common.PAIRS],
        padding="longest",
        truncation="longest_first",
        max_length=common.MAX_LENGTH,
        return_token_type_ids=True,
        return_tensors="pt",
    )
    encoded = {k: batch[k].tolist() for k in ("input_ids", "attention_mask", "token_type_ids")}
    common.check_tokenizer_json(FOLDER, encoded)
    pad_id = tok.pad_token_id
    assert all(t == 0 for row in encoded["token_type_ids"] for t in row), "XLM-R's template gives type ids 0"
    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"]):
        assert all(i == pad_id for i, m in zip(ids, mask) if m == 0)
    lengths = [sum(m) for m in encoded["attention_mask"]]
    assert max(lengths) == common.MAX_LENGTH and min(lengths) < common.MAX_LENGTH // 3, lengths
    # As for XLM-R, the tokenizer gives the model no token_type_ids (GteModel then uses zeros).
    assert tok.model_input_names == ["input_ids", "attention_mask"], tok.model_input_names
    inputs = {k: batch[k] for k in tok.model_input_names}

    reloaded = gte_hub.load(FOLDER, attn_implementation="eager")
    assert reloaded.config.pad_token_id == pad_id
    # The Hub layout round-trips through transformers' conversion: every weight exactly.
    theirs = dict(reloaded.named_parameters())
    assert set(theirs) == {n for n, _ in built.named_parameters()}
    for n, p in built.named_parameters():
        assert torch.equal(theirs[n], p), n
    assert torch.equal(reloaded.gte.rotary_emb.inv_freq, built.gte.rotary_emb.inv_freq)
    logits = logits_of(reloaded, inputs)
    # The weights are bit-equal; the logits may differ in the last bit, as transformers keeps q/k/v and up/gate as
    # views into the fused tensors it read, and matrix products over other memory may round differently.
    assert (logits - logits_of(built, inputs)).abs().max() <= 1e-6

    # Sanity: one pair at a time (no padding) gives the same logits, and so does SDPA attention.
    for i, n in enumerate(lengths):
        alone = logits_of(reloaded, {k: v[i : i + 1, :n] for k, v in inputs.items()})[0]
        assert abs(float(alone) - float(logits[i])) < 1e-5, (i, float(alone), float(logits[i]))
    sdpa = logits_of(gte_hub.load(FOLDER, attn_implementation="sdpa"), inputs)
    assert torch.allclose(sdpa, logits, atol=1e-5), (sdpa, logits)
    # The scaling is visible: the same weights with plain RoPE (rope_scaling ignored) score differently.
    plain = GteForSequenceClassification.from_pretrained(
        FOLDER, config=gte_hub.gte_config(config), dtype=torch.float32
    ).eval()
    assert (logits_of(plain, inputs) - logits).abs().max() > 1e-3

    # Training-step reference: the listwise loss on one padded batch (eval mode: dropout off), every gradient,
    # keyed and fused as the Hub names the weights.
    reloaded.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = reloaded(**inputs).logits.squeeze(-1)
        loss = torch.stack([-torch.log_softmax(g, dim=0)[0] for g in torch.split(out, common.GROUPS)]).mean()
        loss.backward()
    grads = to_hub({n: p.grad.detach() for n, p in reloaded.named_parameters()})
    save_file(grads, str(FOLDER / "grads.safetensors"), metadata={"format": "pt"})
    with safe_open(str(FOLDER / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(grads), sorted(set(f.keys()) ^ set(grads))

    expected = {
        "note": f"logits from transformers {transformers.__version__} (float32, eval mode, CPU); "
        "GteForSequenceClassification reading the Hub layout through gte_hub.py, attn_implementation eager "
        "(sdpa agrees within 1e-5); "
        "written by crates/model/tests/families/generate_gte.py",
        "max_length": common.MAX_LENGTH,
        "truncation": "longest_first",
        "pad_token_id": pad_id,
        "pairs": [{"query": q, "document": d} for q, d in common.PAIRS],
        **encoded,
        "logits": [float(x) for x in logits],
        "sigmoid": [float(x) for x in torch.sigmoid(logits)],
        "groups": common.GROUPS,
        "loss": float(loss.detach()),
    }
    (FOLDER / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=True) + "\n")
    return {"name": NAME, "lengths": lengths, "logits": expected["logits"], "loss": expected["loss"]}


if __name__ == "__main__":
    assert transformers.__version__ == "5.24.0", transformers.__version__
    print(json.dumps(gte()))
