#!/usr/bin/env python
"""Generate the tiny random-weight LLM reranker fixtures in this folder.

Run from the repository root:

    .venv/bin/python crates/model/tests/families/generate_llm.py

It (re)writes one folder per reranker in RERANKERS, each a causal LM as its real checkpoints ship it, with a
byte-level BPE tokenizer trained here in Qwen2's pipeline, and the scores transformers computes the way the reranker's
own code does:

- qwen3-reranker/: a Qwen3ForCausalLM as Qwen/Qwen3-Reranker-* (grouped-query attention, q/k norms, untied lm_head),
  scored as its model card does: each pair formatted with the instruction, cut to fit, between the chat-template
  prefix and suffix, left-padded, and P("yes") from the last token's "yes" and "no" logits;
- mxbai-rerank-v2/: a Qwen2ForCausalLM as mixedbread-ai/mxbai-rerank-*-v2 (biased q/k/v projections, embeddings tied
  to the output, config.json's "reranker": "mxbai-rerank-v2" that finerank reads it by), scored as the mxbai-rerank
  package's MxbaiRerankV2 (0.1.6) does (reproduced here, as the package needs transformers 4): query and document tokenized apart and cut, the chat template and task
  prompt around them, left-padded to a multiple of 8, and the "1" logit less the "0" logit at the last token.

The corpus, pairs and weight draws come from generate.py. Running it twice gives byte-identical files. Nothing is
downloaded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Callable

# First: generate.py sets the thread and offline environment before torch and tokenizers start.
import generate as common  # isort: skip

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# Qwen2's pre-tokenizer pattern, as in Qwen/Qwen3-Reranker-0.6B's and mxbai-rerank-v2's tokenizer.json.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CUSTOM_INSTRUCTION = "Given a legal question, retrieve court holdings that answer it"


@dataclass(frozen=True)
class Reranker:
    """One LLM reranker: its checkpoint's shape, its prompt and how its own code builds and scores a batch."""

    folder: str
    config: Callable[..., transformers.PretrainedConfig]
    model: Callable[..., torch.nn.Module]
    # Beyond the sizes all share.
    config_keys: dict
    # Set on the config after it is built: keys transformers keeps but no config class declares.
    marker: dict
    # Added after the learned vocabulary as plain (not special) tokens, as the real vocabulary has them.
    plain_tokens: tuple[str, ...]
    prefix: str
    suffix: str
    # The instruction a pair without one is scored with; None where the reranker has none.
    default_instruction: str | None
    # Text the tokenizer is trained on beside the corpus, so the template's words are tokens.
    template_text: tuple[str, ...]
    # The tokens whose logits make the score, [relevant, irrelevant].
    answers: tuple[str, str]
    # (tokenizer, pairs) -> the padded batch the reranker's code builds.
    inputs: Callable
    # tokenizer -> the longest input that code allows, template included: finerank's max_length for the same cut.
    max_length: Callable
    # The tokenizer's model_max_length.
    model_max_length: int
    seed: int
    # (relevant logits, irrelevant logits) -> the score the reranker's code gives, and what it is.
    score: Callable
    score_note: str


# The Qwen3-Reranker model card's template, verbatim.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
# Small enough that the long pair's document is cut, large enough for the template and a short pair whole.
QWEN3_MAX_LENGTH = 160


def qwen3_inputs(tok, pairs: list[tuple[str | None, str, str]]) -> dict:
    """The model card's `process_inputs`: the formatted pairs cut to leave room for the template (no special
    tokens added: the tokenizer has none to add), the template around them, padded on the left."""
    prefix_tokens = tok.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix_tokens = tok.encode(QWEN3_SUFFIX, add_special_tokens=False)
    texts = [
        f"<Instruct>: {QWEN3_INSTRUCTION if i is None else i}\n<Query>: {q}\n<Document>: {d}" for i, q, d in pairs
    ]
    inputs = tok(
        texts,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=QWEN3_MAX_LENGTH - len(prefix_tokens) - len(suffix_tokens),
    )
    inputs["input_ids"] = [prefix_tokens + ids + suffix_tokens for ids in inputs["input_ids"]]
    return tok.pad(inputs, padding=True, return_tensors="pt", max_length=QWEN3_MAX_LENGTH)


# mxbai-rerank 0.1.6's MxbaiRerankV2 (mxbai_rerank/mxbai_rerank_v2.py), verbatim.
MXBAI_SEP = "\n"
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
MXBAI_CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
# The package's max_length: the query, separator and document together, without the template. Small enough that
# the long pair's document is cut.
MXBAI_BODY_LENGTH = 100


def mxbai_pieces(tok) -> dict[str, list[int]]:
    """The template's parts, tokenized each alone as the package's `prepare_predefined_inputs` does."""

    def ids(text: str) -> list[int]:
        return tok(text, return_tensors=None, add_special_tokens=False)["input_ids"]

    return {
        "prefix": ids(MXBAI_PREFIX),
        "sep": ids(MXBAI_SEP),
        "task": ids(MXBAI_TASK),
        "suffix": ids(MXBAI_CHAT_SUFFIX),
    }


def mxbai_max_length(tok) -> int:
    return MXBAI_BODY_LENGTH + sum(len(p) for p in mxbai_pieces(tok).values())


def mxbai_inputs(tok, pairs: list[tuple[str | None, str, str]]) -> dict:
    """The package's `prepare_inputs` with max_length MXBAI_BODY_LENGTH, the model's max_position_embeddings its
    `model_max_length`."""
    parts = mxbai_pieces(tok)
    predefined = sum(len(p) for p in parts.values())
    model_max_length = MXBAI.config_keys["max_position_embeddings"]
    assert MXBAI_BODY_LENGTH + predefined <= model_max_length
    inputs = []
    for instruction, query, document in pairs:
        query_prompt = f"query: {query}"
        if instruction:
            query_prompt = f"instruction: {instruction}{MXBAI_SEP}{query_prompt}"
        query_ids = tok(
            query_prompt,
            return_tensors=None,
            add_special_tokens=False,
            max_length=MXBAI_BODY_LENGTH * 3 // 4,
            truncation=True,
        )["input_ids"]
        doc_maxlen = min(model_max_length - len(query_ids) - predefined, MXBAI_BODY_LENGTH)
        doc_ids = tok(
            f"document: {document}",
            return_tensors=None,
            add_special_tokens=False,
            max_length=doc_maxlen,
            truncation=True,
        )["input_ids"]
        # The package's `prepare_for_model(query, sep + document, truncation="only_second", max_length, no special
        # tokens)`, which transformers 5's tokenizers no longer have: the second sequence loses its last tokens until
        # the two fit (transformers 4 left both whole when the second alone could not make room; no pair here needs
        # that).
        second = parts["sep"] + doc_ids
        excess = len(query_ids) + len(second) - MXBAI_BODY_LENGTH
        assert excess < len(second), "the query leaves the document no room"
        if excess > 0:
            second = second[:-excess]
        ids = parts["prefix"] + query_ids + second + parts["sep"] + parts["task"] + parts["suffix"]
        inputs.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    return tok.pad(inputs, padding="longest", pad_to_multiple_of=8, return_tensors="pt")


SIZES = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    use_sliding_window=False,
    attention_dropout=0.0,
)

QWEN3 = Reranker(
    folder="qwen3-reranker",
    config=Qwen3Config,
    model=Qwen3ForCausalLM,
    config_keys=dict(SIZES, head_dim=16, tie_word_embeddings=False, attention_bias=False),
    marker={},
    plain_tokens=("<think>", "</think>"),
    prefix=QWEN3_PREFIX,
    suffix=QWEN3_SUFFIX,
    default_instruction=QWEN3_INSTRUCTION,
    template_text=(
        QWEN3_PREFIX,
        QWEN3_SUFFIX,
        QWEN3_INSTRUCTION,
        CUSTOM_INSTRUCTION,
        "<Instruct>: \n<Query>: \n<Document>: ",
    ),
    answers=("yes", "no"),
    inputs=qwen3_inputs,
    max_length=lambda tok: QWEN3_MAX_LENGTH,
    model_max_length=QWEN3_MAX_LENGTH,
    seed=16,
    # The card's score, verbatim: log_softmax over [no, yes], P("yes") its exp.
    score=lambda yes, no: torch.nn.functional.log_softmax(torch.stack([no, yes], dim=1), dim=1)[:, 1].exp(),
    score_note="P(yes) as the Qwen3-Reranker model card computes it",
)

# Tied embeddings and a sliding window configured but off, as mxbai-rerank-base-v2's config.json has them (Qwen2.5's
# layout); transformers writes the window as null when it is off.
MXBAI = Reranker(
    folder="mxbai-rerank-v2",
    config=Qwen2Config,
    model=Qwen2ForCausalLM,
    config_keys=dict(SIZES, tie_word_embeddings=True, sliding_window=32768, max_window_layers=2),
    # What finerank reads a Qwen2 checkpoint as mxbai-rerank-v2 by.
    marker={"reranker": "mxbai-rerank-v2"},
    plain_tokens=(),
    prefix=MXBAI_PREFIX,
    suffix=MXBAI_SEP + MXBAI_TASK + MXBAI_CHAT_SUFFIX,
    default_instruction=None,
    template_text=(MXBAI_PREFIX, MXBAI_TASK, MXBAI_CHAT_SUFFIX, CUSTOM_INSTRUCTION, "instruction: \nquery: \ndocument: "),
    answers=("1", "0"),
    inputs=mxbai_inputs,
    max_length=mxbai_max_length,
    model_max_length=SIZES["max_position_embeddings"],
    seed=17,
    score=lambda one, zero: one - zero,
    score_note='the "1" logit less the "0" logit, as mxbai-rerank\'s MxbaiRerankV2.predict computes it',
)

RERANKERS = [QWEN3, MXBAI]


def qwen_tokenizer(spec: Reranker) -> PreTrainedTokenizerFast:
    """Byte-level BPE in Qwen2's pipeline (NFC; the Qwen2 split pattern, then ByteLevel without prefix space; no
    post-processor specials), trained on generate.py's text plus the template, with Qwen's chat tokens added after
    the learned vocabulary as the real one has them: <|endoftext|>, <|im_start|>, <|im_end|> special (pad is
    <|endoftext|>), then the reranker's plain added tokens. The answer tokens are written often enough into the
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
    answers = [" ".join(spec.answers)] * 20
    tok.train_from_iterator(common.training_text() + list(spec.template_text) * 4 + answers, trainer)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    )
    if spec.plain_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.plain_tokens])
    for word in spec.answers:
        assert tok.token_to_id(word) is not None, f"{word!r} is not one token"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=spec.model_max_length,
        clean_up_tokenization_spaces=False,
    )


def write(spec: Reranker) -> None:
    folder = common.HERE / spec.folder
    # generate.py's six pairs with the default instruction (two groups of three, relevant first), then the first
    # group's relevant pair again under a custom instruction, so the instruction is seen to change the score.
    pairs = [(None, q, d) for q, d in common.PAIRS] + [(CUSTOM_INSTRUCTION, *common.PAIRS[0])]
    groups = [3, 3, 1]
    torch.manual_seed(0)
    tok = qwen_tokenizer(spec)
    config = spec.config(
        vocab_size=common.round_up(len(tok), 64),
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        **spec.config_keys,
    )
    for key, value in spec.marker.items():
        setattr(config, key, value)
    model = spec.model(config)
    common.randomize(model, seed=spec.seed)
    model.eval()

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)

    # Everything below uses the files as written, the way a user of the checkpoint would.
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    reloaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    relevant, irrelevant = (tok.convert_tokens_to_ids(a) for a in spec.answers)
    batch = spec.inputs(tok, pairs)
    max_length = spec.max_length(tok)
    mask = batch["attention_mask"]
    lengths = [int(m.sum()) for m in mask]
    assert max(lengths) == max_length and min(lengths) < max_length * 3 // 4, (lengths, max_length)
    # The unpadded ids, which finerank's template must reproduce.
    ids = [row[-n:].tolist() for row, n in zip(batch["input_ids"], lengths)]

    def relevant_minus_irrelevant(m, inputs) -> torch.Tensor:
        last = m(**inputs).logits[:, -1, :]
        return last[:, relevant] - last[:, irrelevant]

    with torch.no_grad():
        last = reloaded(**batch).logits[:, -1, :]
        logits = last[:, relevant] - last[:, irrelevant]
        scores = spec.score(last[:, relevant], last[:, irrelevant])
        # Sanity: each pair alone (no padding) scores the same, and so does SDPA attention.
        for i, row in enumerate(ids):
            alone = relevant_minus_irrelevant(reloaded, {"input_ids": torch.tensor([row])})[0]
            assert abs(float(alone) - float(logits[i])) < 1e-5, (i, float(alone), float(logits[i]))
        sdpa = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32).eval()
        assert torch.allclose(relevant_minus_irrelevant(sdpa, batch), logits, atol=1e-5)
    # Not degenerate: the pairs score apart, and the custom instruction moves its pair's score.
    assert float(scores.max() - scores.min()) > 0.05, scores
    assert abs(float(logits[-1] - logits[0])) > 1e-2, logits

    # Training-step reference: finerank's listwise loss over the answer logits' difference, every parameter's
    # gradient.
    reloaded.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = relevant_minus_irrelevant(reloaded, batch)
        losses = [-torch.log_softmax(g, dim=0)[0] for g in torch.split(out, groups)]
        loss = torch.stack(losses).mean()
        loss.backward()
    grads = {n: p.grad.detach().contiguous() for n, p in reloaded.named_parameters()}
    save_file(grads, str(folder / "grads.safetensors"), metadata={"format": "pt"})
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(grads), sorted(set(f.keys()) ^ set(grads))

    expected = {
        "note": (
            f"scores: {spec.score_note}, from transformers {transformers.__version__} (float32, eval mode, CPU, "
            "attn_implementation eager; sdpa agrees within 1e-5); logits: the answer tokens' logit difference; "
            "written by crates/model/tests/families/generate_llm.py"
        ),
        "max_length": max_length,
        "prefix": spec.prefix,
        "suffix": spec.suffix,
        "default_instruction": spec.default_instruction or "",
        "pad_token_id": tok.pad_token_id,
        "answer_token_ids": [relevant, irrelevant],
        "pairs": [{"instruction": i, "query": q, "document": d} for i, q, d in pairs],
        "input_ids": ids,
        "logits": [float(x) for x in logits],
        "scores": [float(x) for x in scores],
        "groups": groups,
        "loss": float(loss.detach()),
    }
    (folder / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=True) + "\n")
    print(json.dumps({"name": spec.folder, "lengths": lengths, "scores": expected["scores"], "loss": expected["loss"]}))


def main() -> None:
    for spec in RERANKERS:
        write(spec)


if __name__ == "__main__":
    main()
