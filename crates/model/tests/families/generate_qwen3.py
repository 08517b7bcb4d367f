#!/usr/bin/env python
"""Generate the tiny random-weight Qwen3 reranker fixture in this folder.

Run from the repository root:

    .venv/bin/python crates/model/tests/families/generate_qwen3.py

It (re)writes qwen3-reranker/ next to this file: a Qwen3ForCausalLM as Qwen/Qwen3-Reranker-* ship it (2 layers,
grouped-query attention, q/k norms, untied lm_head), a byte-level BPE tokenizer trained here in Qwen2's pipeline,
and the scores transformers computes the way the Qwen3-Reranker model card does: each pair formatted with the
instruction, cut to fit, between the chat-template prefix and suffix, left-padded, and P("yes") from the last
token's "yes" and "no" logits. The corpus, pairs and weight draws come from generate.py.

Running it twice gives byte-identical files. Nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil

# First: generate.py sets the thread and offline environment before torch and tokenizers start.
import generate as common  # isort: skip

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

NAME = "qwen3-reranker"
FOLDER = common.HERE / NAME
# Small enough that the long pair's document is cut, large enough for the template and a short pair whole.
MAX_LENGTH = 160

# The Qwen3-Reranker model card's template, verbatim.
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
CUSTOM_INSTRUCTION = "Given a legal question, retrieve court holdings that answer it"


def format_instruction(instruction: str | None, query: str, doc: str) -> str:
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


# generate.py's six pairs with the card's default instruction (two groups of three, relevant first), then the first
# group's relevant pair again under a custom instruction, so the instruction is seen to change the score.
PAIRS = [(None, q, d) for q, d in common.PAIRS] + [(CUSTOM_INSTRUCTION, *common.PAIRS[0])]
GROUPS = [3, 3, 1]

# Qwen2's pre-tokenizer pattern, as in Qwen/Qwen3-Reranker-0.6B's tokenizer.json.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE in Qwen2's pipeline (NFC; the Qwen2 split pattern, then ByteLevel without prefix space; no
    post-processor specials), trained on generate.py's text plus the template, with Qwen's chat tokens added after
    the learned vocabulary as the real one has them: <|endoftext|>, <|im_start|>, <|im_end|> special (pad is
    <|endoftext|>), <think> and </think> plain added tokens. "yes" and "no" are written often enough into the
    training text to be learnt as single tokens, as they are in the real vocabulary."""
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=900,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    template = [PREFIX, SUFFIX, DEFAULT_INSTRUCTION, CUSTOM_INSTRUCTION, "<Instruct>: \n<Query>: \n<Document>: "]
    answers = ["yes no"] * 20
    tok.train_from_iterator(common.training_text() + template * 4 + answers, trainer)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    for word in ("yes", "no"):
        assert tok.token_to_id(word) is not None, f"{word!r} is not one token"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def card_inputs(tok, pairs: list[tuple[str | None, str, str]]) -> dict:
    """The model card's `process_inputs`: the formatted pairs cut to leave room for the template (no special
    tokens added: the tokenizer has none to add), the template around them, padded on the left."""
    prefix_tokens = tok.encode(PREFIX, add_special_tokens=False)
    suffix_tokens = tok.encode(SUFFIX, add_special_tokens=False)
    texts = [format_instruction(i, q, d) for i, q, d in pairs]
    inputs = tok(
        texts,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=MAX_LENGTH - len(prefix_tokens) - len(suffix_tokens),
    )
    inputs["input_ids"] = [prefix_tokens + ids + suffix_tokens for ids in inputs["input_ids"]]
    return tok.pad(inputs, padding=True, return_tensors="pt", max_length=MAX_LENGTH)


def main() -> None:
    torch.manual_seed(0)
    tok = qwen_tokenizer()
    config = Qwen3Config(
        vocab_size=common.round_up(len(tok), 64),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        hidden_act="silu",
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    common.randomize(model, seed=16)
    model.eval()

    if FOLDER.exists():
        shutil.rmtree(FOLDER)
    FOLDER.mkdir(parents=True)
    model.save_pretrained(FOLDER, safe_serialization=True)
    tok.save_pretrained(FOLDER)

    # Everything below uses the files as written, the way a user of the checkpoint would.
    tok = AutoTokenizer.from_pretrained(FOLDER, padding_side="left")
    reloaded = AutoModelForCausalLM.from_pretrained(FOLDER, attn_implementation="eager", dtype=torch.float32).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    batch = card_inputs(tok, PAIRS)
    mask = batch["attention_mask"]
    lengths = [int(m.sum()) for m in mask]
    assert max(lengths) == MAX_LENGTH and min(lengths) < MAX_LENGTH * 3 // 4, lengths
    # The card's unpadded ids, which finerank's template must reproduce.
    ids = [row[-n:].tolist() for row, n in zip(batch["input_ids"], lengths)]

    def yes_minus_no(m, inputs) -> torch.Tensor:
        last = m(**inputs).logits[:, -1, :]
        return last[:, yes] - last[:, no]

    with torch.no_grad():
        last = reloaded(**batch).logits[:, -1, :]
        # The card's score, verbatim: log_softmax over [no, yes], P("yes") its exp.
        scores = torch.nn.functional.log_softmax(torch.stack([last[:, no], last[:, yes]], dim=1), dim=1)[:, 1].exp()
        logits = last[:, yes] - last[:, no]
        assert torch.allclose(torch.sigmoid(logits), scores, atol=1e-6)
        # Sanity: each pair alone (no padding) scores the same, and so does SDPA attention.
        for i, row in enumerate(ids):
            alone = yes_minus_no(reloaded, {"input_ids": torch.tensor([row])})[0]
            assert abs(float(alone) - float(logits[i])) < 1e-5, (i, float(alone), float(logits[i]))
        sdpa = AutoModelForCausalLM.from_pretrained(FOLDER, attn_implementation="sdpa", dtype=torch.float32).eval()
        assert torch.allclose(yes_minus_no(sdpa, batch), logits, atol=1e-5)
    # Not degenerate: the pairs score apart, and the custom instruction moves its pair's score.
    assert float(scores.max() - scores.min()) > 0.05, scores
    assert abs(float(logits[-1] - logits[0])) > 1e-2, logits

    # Training-step reference: finerank's listwise loss over the yes-minus-no logits, every parameter's gradient.
    reloaded.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = yes_minus_no(reloaded, batch)
        losses = [-torch.log_softmax(g, dim=0)[0] for g in torch.split(out, GROUPS)]
        loss = torch.stack(losses).mean()
        loss.backward()
    grads = {n: p.grad.detach().contiguous() for n, p in reloaded.named_parameters()}
    save_file(grads, str(FOLDER / "grads.safetensors"), metadata={"format": "pt"})
    with safe_open(str(FOLDER / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(grads), sorted(set(f.keys()) ^ set(grads))

    expected = {
        "note": (
            f"P(yes) from transformers {transformers.__version__} (float32, eval mode, CPU, attn_implementation "
            "eager; sdpa agrees within 1e-5) as the Qwen3-Reranker model card computes it; written by "
            "crates/model/tests/families/generate_qwen3.py"
        ),
        "max_length": MAX_LENGTH,
        "prefix": PREFIX,
        "suffix": SUFFIX,
        "default_instruction": DEFAULT_INSTRUCTION,
        "pad_token_id": tok.pad_token_id,
        "yes_token_id": yes,
        "no_token_id": no,
        "pairs": [{"instruction": i, "query": q, "document": d} for i, q, d in PAIRS],
        "input_ids": ids,
        "logits": [float(x) for x in logits],
        "scores": [float(x) for x in scores],
        "groups": GROUPS,
        "loss": float(loss.detach()),
    }
    (FOLDER / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=True) + "\n")
    print(json.dumps({"name": NAME, "lengths": lengths, "scores": expected["scores"], "loss": expected["loss"]}))


if __name__ == "__main__":
    main()
