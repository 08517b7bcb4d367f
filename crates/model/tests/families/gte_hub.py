"""Reads a GTE checkpoint in the Hub's "new" layout with transformers' native `gte` classes.

Alibaba-NLP's GTE checkpoints (gte-multilingual-reranker-base and kin) say `"model_type": "new"` and name remote
code (`auto_map` -> Alibaba-NLP/new-impl) that cannot be fetched offline. transformers 5.24 ships the same
architecture as model type `gte`, and its loader converts the Hub's weight names (conversion_mapping.py, "gte":
prefix `new.` dropped, `encoder.layer` -> `layers`, `attention.qkv_proj` chunked into q/k/v, `mlp.up_gate_proj`
chunked into up/gate, `attn_ln` / `mlp_ln` renamed). It has no mapping for NewConfig's keys, so this module maps
the config: the keys GteConfig shares, NewConfig's own defaults where a key is absent (they differ from GteConfig's:
rope_theta 10000, not 160000), and an error for every value GteConfig cannot express.

NTK-scaled RoPE (`rope_scaling: {"type": "ntk", "factor": f}`, which gte-multilingual uses with f = 8) has no
transformers rope type. The remote code's NTKScalingRotaryEmbedding builds its cache for
max_position_embeddings * f positions, which is past max_position_embeddings whenever f > 1, and so always uses
    inv_freq = 1 / (rope_theta * f) ** (arange(0, d, 2) / d) / f ** (2 / d)
(text-embeddings-inference's gte.rs computes the same). `load` sets those frequencies on the model.

Used by generate_gte.py (to prove the fixture's layout is the one transformers reads) and by hf_logits.py (to read
finerank's export back).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import GteConfig, GteForSequenceClassification

# NewConfig's defaults (Alibaba-NLP/new-impl configuration.py) for the keys that change the arithmetic.
NEW_DEFAULTS = {
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.0,
    "type_vocab_size": 1,
    "layer_norm_type": "layer_norm",
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "rope",
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "classifier_dropout": None,
    "pack_qkv": True,
    "logn_attention_scale": False,
}

# Keys copied as they are: GteConfig gives them the same meaning.
SHARED = [
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "classifier_dropout",
    "id2label",
    "label2id",
]


def new_value(new: dict, key: str):
    return new.get(key, NEW_DEFAULTS.get(key))


def gte_config(new: dict) -> GteConfig:
    """GteConfig for a NewConfig dict; raises on a value transformers' gte cannot reproduce."""
    if new.get("model_type") != "new":
        raise ValueError(f"model_type {new.get('model_type')!r}: not a GTE 'new' checkpoint")
    required = {
        "position_embedding_type": "rope",  # "absolute" adds a position table GteModel does not have
        "layer_norm_type": "layer_norm",  # "rms_norm": GteModel's norms are LayerNorm
        "pack_qkv": True,  # unpacked q_proj/k_proj/v_proj are names the conversion does not read
        "logn_attention_scale": False,  # scales queries by log(len); GteAttention does not
    }
    for key, want in required.items():
        if new_value(new, key) != want:
            raise ValueError(f"{key} {new_value(new, key)!r}: transformers' gte reads {want!r} only")
    ntk_factor(new)  # refuses a scaling it cannot reproduce
    kwargs = {k: new[k] for k in SHARED if k in new}
    for k in SHARED:
        if k not in new and k in NEW_DEFAULTS:
            kwargs[k] = NEW_DEFAULTS[k]
    kwargs["num_labels"] = len(new["id2label"]) if "id2label" in new else new.get("num_labels", 2)
    kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": float(new_value(new, "rope_theta"))}
    return GteConfig(**kwargs)


def ntk_factor(new: dict) -> float | None:
    """The NTK factor the remote code applies, None for plain RoPE."""
    scaling = new_value(new, "rope_scaling")
    if scaling is None:
        return None
    kind = scaling.get("type", scaling.get("rope_type"))
    if kind != "ntk" or scaling.get("mixed_b") is not None:
        raise ValueError(f"rope_scaling {scaling!r}: only fixed NTK scaling (type 'ntk', no mixed_b) is mapped")
    factor = float(scaling["factor"])
    # The remote code rescales only when its cache, max_position_embeddings * factor, outgrows the table.
    return factor if factor > 1 else None


def ntk_inv_freq(head_dim: int, theta: float, factor: float) -> torch.Tensor:
    """NTKScalingRotaryEmbedding's frequencies, in its own arithmetic (float32 tensors, float64 scalars)."""
    base = theta * factor
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    return inv_freq / factor ** (2 / head_dim)


def set_rope(model: GteForSequenceClassification, new: dict) -> None:
    """Gives the model the remote code's rotary frequencies (only NTK scaling differs from transformers' own)."""
    factor = ntk_factor(new)
    if factor is None:
        return
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    inv_freq = ntk_inv_freq(head_dim, float(new_value(new, "rope_theta")), factor)
    rotary = model.gte.rotary_emb
    with torch.no_grad():
        rotary.inv_freq.copy_(inv_freq)
        rotary.original_inv_freq.copy_(inv_freq)


def load(folder: str | Path, **kwargs) -> GteForSequenceClassification:
    """GteForSequenceClassification from a "new"-layout folder, float32, eval mode. Weight names are converted by
    transformers itself (from_pretrained applies its "gte" conversion mapping)."""
    new = json.loads((Path(folder) / "config.json").read_text())
    model, info = GteForSequenceClassification.from_pretrained(
        folder, config=gte_config(new), dtype=torch.float32, output_loading_info=True, **kwargs
    )
    # A name the conversion missed would leave a weight at its random initialisation: refuse instead.
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ValueError(f"{folder}: transformers did not read the checkpoint whole: {problems}")
    set_rope(model, new)
    return model.eval()
