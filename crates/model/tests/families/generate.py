#!/usr/bin/env python
"""Generate the tiny random-weight model-family fixtures in this folder.

Run from the repository root:

    .venv/bin/python crates/model/tests/families/generate.py

It (re)writes, next to this file:

* modernbert-cross-encoder/   ModernBertForSequenceClassification, byte-level BPE tokenizer
* deberta-v3-cross-encoder/   DebertaV2ForSequenceClassification (DeBERTa-v3 settings), Unigram tokenizer
* mpnet-cross-encoder/        MPNetForSequenceClassification, WordPiece tokenizer, RoBERTa-style pair template
* bert-cross-encoder/         BertForSequenceClassification, WordPiece tokenizer, [CLS] A [SEP] B [SEP] (type ids 0/1)
* xlm-roberta-cross-encoder/  XLMRobertaForSequenceClassification, Unigram tokenizer, <s> A </s></s> B </s>
* bert-cls-bi-encoder/        sentence-transformers: Transformer -> Pooling(cls) -> Normalize, bge-style prompts
* bert-dense-bi-encoder/      sentence-transformers: Transformer -> Pooling(mean) -> Dense(32->24, tanh) -> Normalize,
                              e5-style prompts

Every tokenizer is trained here, with the `tokenizers` library, on the small corpus below; every weight is drawn
from seeded generators. Running it twice gives byte-identical files (checked by the project when regenerating).
Nothing is downloaded.
"""

from __future__ import annotations

import os

# Keep CPU use modest and results deterministic: set before torch / tokenizers start their thread pools.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2Tokenizer,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    MPNetTokenizer,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizer,
)

import sentence_transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

HERE = Path(__file__).resolve().parent
MAX_LENGTH = 64
HIDDEN = 32
HEADS = 4
INTERMEDIATE = 37
NOTE = (
    f"logits from transformers {transformers.__version__} (float32, eval mode, CPU); "
    "written by crates/model/tests/families/generate.py"
)

# ---------------------------------------------------------------------------------------------------------------
# Text: a small corpus of generic English and legal prose, used to train every tokenizer.
# ---------------------------------------------------------------------------------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "The weather today is mild, with light rain expected in the evening and clear skies tomorrow.",
    "She walked to the market, bought bread and apples, and returned home before noon.",
    "Paris is the capital and largest city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "A library is a collection of books, records, and other materials made available for people to use.",
    "The committee met on Tuesday to discuss the budget for the coming year.",
    "Children learn to read by listening, speaking, and practicing every day.",
    "The train leaves the station at seven in the morning and arrives at ten.",
    "Please send the signed documents to our office by Friday.",
    "The court held that the contract was unenforceable because it lacked consideration.",
    "The district court granted summary judgment in favor of the defendant.",
    "We review the district court's grant of summary judgment de novo.",
    "The plaintiff appeals from the judgment entered after a jury trial.",
    "The defendant argues that the evidence was insufficient to support the conviction.",
    "We affirm the judgment of the court of appeals.",
    "The judgment is reversed and the case is remanded for further proceedings consistent with this opinion.",
    "holding that a bankruptcy estate includes insurance policies purchased by the debtor",
    "holding that the automatic stay does not bar a creditor from exercising a right of setoff",
    "holding that possession of a pipe bomb is a crime of violence",
    "holding that notice by publication satisfies due process only when the party's address is unknown",
    "holding that the statute of limitations is tolled during the pendency of a class action",
    "holding that a warrantless search of a vehicle is reasonable when there is probable cause",
    "The Fourth Amendment protects the right of the people to be secure against unreasonable searches.",
    "Due process requires notice reasonably calculated to apprise interested parties of the action.",
    "Under 11 U.S.C. § 362(a), the filing of a petition operates as a stay of collection actions.",
    "Under 18 U.S.C. § 924(e), a defendant with three prior violent felony convictions faces a mandatory minimum.",
    "The trial court abused its discretion by excluding the expert testimony.",
    "An agreement to arbitrate is valid, irrevocable, and enforceable, save upon grounds that exist at law.",
    "The employer is vicariously liable for the negligent acts of its employees within the scope of employment.",
    "The insurer has a duty to defend whenever the complaint alleges facts that could fall within coverage.",
    "A party seeking a preliminary injunction must show a likelihood of success on the merits.",
    "The appellate court lacks jurisdiction over an appeal from a non-final order.",
    "The jury was properly instructed on the elements of the offense.",
    "The debtor's mutual debts may be set off against each other only with leave of the bankruptcy court.",
    "Hearsay is a statement, other than one made by the declarant while testifying, offered to prove the truth.",
    "Contracts for the sale of land must be in writing to satisfy the statute of frauds.",
    "The landlord breached the implied warranty of habitability by failing to repair the heating system.",
    "A naïve café owner signed the résumé of terms — the “agreement” — without reading it.",
    "Section 1983 provides a remedy against persons who, under color of state law, deprive others of rights.",
    "The agency's interpretation of the statute is entitled to deference only if the statute is ambiguous.",
    "Qualified immunity shields officials unless they violated a clearly established constitutional right.",
    "The evidence, viewed in the light most favorable to the verdict, was sufficient.",
]

# Six pairs in two groups of three; the first pair of each group is the relevant one. Lengths vary: some pairs are
# cut at 64 tokens (longest_first), one is a handful of tokens, so padding and truncation are both exercised.
PAIRS = [
    (
        "Does the automatic stay under 11 U.S.C. § 362(a)(7) bar a creditor's setoff of mutual debts owed "
        "to and by the debtor before the petition was filed?",
        "holding that the automatic stay does not bar a creditor from exercising a right of setoff against mutual "
        "prepetition debts, but that the creditor must seek relief from the stay before applying the funds, and "
        "that a temporary administrative freeze of the debtor's account pending a motion for relief is not a "
        "setoff within the meaning of the statute",
    ),
    (
        "Does the automatic stay under 11 U.S.C. § 362(a)(7) bar a creditor's setoff of mutual debts owed "
        "to and by the debtor before the petition was filed?",
        "holding that a bankruptcy estate includes insurance policies purchased by the debtor",
    ),
    (
        "Does the automatic stay under 11 U.S.C. § 362(a)(7) bar a creditor's setoff of mutual debts owed "
        "to and by the debtor before the petition was filed?",
        "A naïve café owner signed the résumé of terms — the “agreement” — without reading it; the court held "
        "that the contract was unenforceable because it lacked consideration, and the judgment is reversed and "
        "the case is remanded for further proceedings consistent with this opinion.",
    ),
    (
        "due process notice",
        "holding that notice by publication satisfies due process only when the party's address is unknown",
    ),
    ("due process notice", "Reversed."),
    (
        "due process notice",
        "The landlord breached the implied warranty of habitability by failing to repair the heating system, "
        "and the tenant was entitled to withhold rent, to recover damages for the diminished value of the "
        "premises, and to an award of attorney's fees under the lease and the applicable statute of the state.",
    ),
]
GROUPS = [3, 3]

BI_QUERIES = [
    "what is the statute of frauds",
    "automatic stay setoff",
    "due process notice by publication",
    "Can an employer be liable for an employee's negligence within the scope of employment?",
]
BI_DOCUMENTS = [
    "Contracts for the sale of land must be in writing to satisfy the statute of frauds.",
    "holding that the automatic stay does not bar a creditor from exercising a right of setoff",
    "Due process requires notice reasonably calculated to apprise interested parties of the action, and "
    "notice by publication satisfies due process only when the party's address is unknown and cannot be "
    "found with reasonable diligence.",
    "Affirmed.",
]
BGE_PROMPTS = {"query": "Represent this sentence for searching relevant passages: ", "document": ""}
E5_PROMPTS = {"query": "query: ", "document": "passage: "}
BI_MAX_SEQ_LENGTH = 32


def training_text() -> list[str]:
    texts = list(CORPUS)
    for q, d in PAIRS:
        texts += [q, d]
    return texts + BI_QUERIES + BI_DOCUMENTS + list(BGE_PROMPTS.values()) + list(E5_PROMPTS.values())


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------------------


def modernbert_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE as ModernBERT's (GPT-NeoX style): NFC, ByteLevel pre-tokenizer without prefix space,
    its special tokens added after the learned vocabulary (so [PAD] is not id 0, as in the real one)."""
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        min_frequency=2,
        show_progress=False,
        special_tokens=["|||IP_ADDRESS|||", "<|padding|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_text(), trainer)
    tok.add_special_tokens(
        [
            AddedToken("[UNK]", special=True, normalized=False),
            AddedToken("[CLS]", special=True, normalized=False),
            AddedToken("[SEP]", special=True, normalized=False),
            AddedToken("[PAD]", special=True, normalized=False),
            AddedToken("[MASK]", special=True, normalized=False, lstrip=True),
        ]
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[CLS]",
        eos_token="[SEP]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=8192,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=True,
    )


def unigram_vocab(special_tokens: list[str], unk_token: str) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary (piece, score), trained with the Metaspace pre-tokenizer, the
    special tokens first (scores 0) in the order given, made deterministic as explained below."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(), normalizers.Strip(left=False, right=True)]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=700,
        show_progress=False,
        special_tokens=special_tokens,
        unk_token=unk_token,
        shrinking_factor=0.75,
        max_piece_length=16,
        n_sub_iterations=2,
    )
    tok.train_from_iterator(training_text(), trainer)
    learned = json.loads(tok.to_str())["model"]["vocab"]
    # Two sources of run-to-run change in UnigramTrainer, removed here. (1) Characters the EM dropped are put back
    # with scores min_score + k * 0.0001, k counting in hash-set order: give them k in code-point order instead.
    # (2) The EM sums in hash-map order, so scores wobble in the last bits: round them. Then order the pieces as
    # sentencepiece does (by score, best first; ties by piece) after the special tokens.
    n = len(special_tokens)
    assert [p for p, _ in learned[:n]] == special_tokens, learned[: n + 1]
    scores = {p: float(s) for p, s in learned[n:]}
    floor = min(scores.values())
    steps = {p: (s - floor) / 1e-4 for p, s in scores.items() if len(p) == 1}
    restored = sorted(p for p, k in steps.items() if abs(k - round(k)) < 1e-6 and round(k) < len(steps))
    assert sorted(round(steps[p]) for p in restored) == list(range(len(restored))), restored
    for k, p in enumerate(restored):
        scores[p] = floor + k * 1e-4
    pieces = sorted(((p, round(s, 6)) for p, s in scores.items()), key=lambda ps: (-ps[1], ps[0]))
    return [(p, 0.0) for p, _ in learned[:n]] + pieces


def deberta_v3_tokenizer() -> DebertaV2Tokenizer:
    """SentencePiece-style Unigram as DeBERTa-v3's spm.model, handed to transformers' DebertaV2Tokenizer, which
    builds the same normalizer / Metaspace / [CLS] A [SEP] B [SEP] pipeline as it does for the real checkpoint.
    Ids: [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3, [MASK] last, as the real."""
    vocab = unigram_vocab(["[PAD]", "[CLS]", "[SEP]", "[UNK]"], "[UNK]")
    vocab.append(("[MASK]", 0.0))
    return DebertaV2Tokenizer(
        vocab=vocab,
        do_lower_case=False,
        split_by_punct=False,
        add_prefix_space=True,
        model_max_length=512,
    )


def xlm_roberta_tokenizer() -> XLMRobertaTokenizer:
    """SentencePiece-style Unigram (same training as DeBERTa-v3's) with XLM-R's ids: <s>=0 <pad>=1 </s>=2 <unk>=3,
    <mask> last; transformers' XLMRobertaTokenizer builds the pipeline (WhitespaceSplit + Metaspace "▁" prepend
    always, no normalizer without a precompiled charsmap) and the pair template <s> A </s></s> B </s>."""
    vocab = unigram_vocab(["<s>", "<pad>", "</s>", "<unk>"], "<unk>")
    vocab.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=vocab, model_max_length=512)


CONTINUATION = 0xF0000  # Supplementary Private Use Area-A: stand-ins for word-internal characters


def wordpiece_vocab(special_tokens: list[str], size: int) -> dict[str, int]:
    """A WordPiece vocabulary learned as tokenizers' WordPieceTrainer learns it (BPE merges over words whose
    non-initial characters carry the ## prefix), made deterministic: WordPieceTrainer gives the "##c" symbols ids in
    hash-map order, so equal-count merges are broken differently from run to run. Here each word-internal character
    is first mapped to a private-use stand-in, so that the BPE trainer sees "##c" as a plain character (its alphabet
    is sorted, its merge ties broken by id), and the stand-ins are mapped back to "##..." afterwards."""
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = []
    for text in training_text():
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            words.append(word[0] + "".join(chr(CONTINUATION + ord(c)) for c in word[1:]))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=size, show_progress=False, special_tokens=special_tokens)
    bpe.train_from_iterator(words, trainer)

    def unmap(piece: str) -> str:
        if piece in special_tokens:
            return piece
        plain = "".join(chr(ord(c) - CONTINUATION) if ord(c) >= CONTINUATION else c for c in piece)
        return "##" + plain if ord(piece[0]) >= CONTINUATION else plain

    by_id = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])
    vocab = {unmap(piece): i for piece, i in by_id}
    assert len(vocab) == len(by_id) and list(vocab.values()) == list(range(len(vocab)))
    for i, s in enumerate(special_tokens):
        assert vocab[s] == i, (s, vocab[s])
    return vocab


def mpnet_tokenizer() -> MPNetTokenizer:
    """WordPiece (lower-cased BERT normalizer) with MPNet's special tokens at MPNet's ids (<s>=0 <pad>=1 </s>=2
    <unk>=3; WordPiece's own unknown token is [UNK], as in microsoft/mpnet-base; <mask> last), and the pair
    template <s> A </s></s> B </s> that transformers' MPNetTokenizer installs (RobertaProcessing)."""
    vocab = wordpiece_vocab(["<s>", "<pad>", "</s>", "<unk>", "[UNK]"], 700)
    vocab["<mask>"] = len(vocab)
    return MPNetTokenizer(vocab=vocab, do_lower_case=True, unk_token="[UNK]", model_max_length=512)


def bert_tokenizer() -> BertTokenizer:
    vocab = wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], 600)
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)


# ---------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------


def randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
    """Overwrite every parameter from a seeded generator, so that nothing is left at a neutral value a port could
    get away with ignoring: matrices ~ N(0, std), norm weights ~ 1 + N(0, 0.1), biases ~ N(0, 0.1). Embedding rows
    at padding_idx are random too (real checkpoints do not keep them at zero either)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "relative_attention_bias" in name:
                p.copy_(noise)  # MPNet's per-head bucket bias: make it matter against the content scores
            elif p.dim() >= 2:
                p.copy_(noise * std)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


# ---------------------------------------------------------------------------------------------------------------
# Cross-encoders
# ---------------------------------------------------------------------------------------------------------------


def check_tokenizer_json(folder: Path, encoded: dict) -> None:
    """The ids transformers produced must be what tokenizer.json alone produces (the Rust side reads only that)."""
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    raw.enable_truncation(max_length=MAX_LENGTH, strategy="longest_first")
    for i, (q, d) in enumerate(PAIRS):
        n = int(sum(encoded["attention_mask"][i]))
        enc = raw.encode(q, d)
        assert enc.ids == encoded["input_ids"][i][:n], (folder.name, i, enc.ids, encoded["input_ids"][i][:n])
        assert enc.type_ids == encoded["token_type_ids"][i][:n], (folder.name, i)


def write_cross_encoder(name: str, model: torch.nn.Module, tokenizer, config_extra: dict | None = None) -> dict:
    folder = HERE / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if config_extra:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(config_extra)
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    # Everything below uses the files as written, the way a user of the checkpoint would.
    tok = AutoTokenizer.from_pretrained(folder)
    queries = [q for q, _ in PAIRS]
    docs = [d for _, d in PAIRS]
    batch = tok(
        queries,
        docs,
        padding="longest",
        truncation="longest_first",
        max_length=MAX_LENGTH,
        return_token_type_ids=True,
        return_tensors="pt",
    )
    encoded = {k: batch[k].tolist() for k in ("input_ids", "attention_mask", "token_type_ids")}
    check_tokenizer_json(folder, encoded)
    pad_id = tok.pad_token_id
    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"]):
        assert all(i == pad_id for i, m in zip(ids, mask) if m == 0)
    lengths = [sum(m) for m in encoded["attention_mask"]]
    assert max(lengths) == MAX_LENGTH and min(lengths) < MAX_LENGTH // 3, lengths

    model_inputs = {k: batch[k] for k in tok.model_input_names if k in batch}
    if "token_type_ids" not in tok.model_input_names and isinstance(model, DebertaV2ForSequenceClassification):
        model_inputs["token_type_ids"] = batch["token_type_ids"]

    def load(attn: str):
        m = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=attn, dtype=torch.float32)
        return m.eval()

    reloaded = load("eager")
    assert reloaded.config.pad_token_id == pad_id, (reloaded.config.pad_token_id, pad_id)
    with torch.no_grad():
        logits = reloaded(**model_inputs).logits.squeeze(-1)
    # Sanity: one pair at a time (no padding) gives the same logits, and so does SDPA attention.
    with torch.no_grad():
        for i in range(len(PAIRS)):
            n = lengths[i]
            alone = reloaded(**{k: v[i : i + 1, :n] for k, v in model_inputs.items()}).logits[0, 0]
            assert abs(float(alone) - float(logits[i])) < 1e-5, (name, i, float(alone), float(logits[i]))
        try:
            sdpa_model = load("sdpa")
        except ValueError:  # DeBERTa-v2 has only the eager implementation
            sdpa_model = None
        if sdpa_model is not None:
            sdpa = sdpa_model(**model_inputs).logits.squeeze(-1)
            assert torch.allclose(sdpa, logits, atol=1e-5), (name, sdpa, logits)

    # Training-step reference: the listwise loss on one padded batch, gradients of every parameter.
    reloaded.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = reloaded(**model_inputs).logits.squeeze(-1)
        losses = [-torch.log_softmax(g, dim=0)[0] for g in torch.split(out, GROUPS)]
        loss = torch.stack(losses).mean()
        loss.backward()
    loss = loss.detach()
    grads = {}
    for pname, p in reloaded.named_parameters():
        grads[pname] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().contiguous()
    save_file(grads, str(folder / "grads.safetensors"), metadata={"format": "pt"})
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    if saved != set(grads):
        raise SystemExit(
            f"{name}: grads/model names differ: only in model {sorted(saved - set(grads))}, "
            f"only in grads {sorted(set(grads) - saved)}"
        )

    expected = {
        "note": NOTE + "; attn_implementation eager" + ("" if sdpa_model is None else " (sdpa agrees within 1e-5)"),
        "max_length": MAX_LENGTH,
        "truncation": "longest_first",
        "pad_token_id": pad_id,
        "pairs": [{"query": q, "document": d} for q, d in PAIRS],
        **encoded,
        "logits": [float(x) for x in logits],
        "sigmoid": [float(x) for x in torch.sigmoid(logits)],
        "groups": GROUPS,
        "loss": float(loss),
    }
    (folder / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=True) + "\n")
    return {"name": name, "lengths": lengths, "logits": expected["logits"], "loss": expected["loss"]}


def modernbert() -> dict:
    tok = modernbert_tokenizer()
    config = ModernBertConfig(
        vocab_size=round_up(len(tok), 64),  # the real vocab_size (50368) also exceeds the tokenizer's size
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=3,
        num_attention_heads=HEADS,
        hidden_activation="gelu",
        max_position_embeddings=512,
        norm_eps=1e-5,
        norm_bias=False,
        global_attn_every_n_layers=2,  # layer 0 and 2 global (full), layer 1 local (sliding)
        local_attention=8,  # window: |i - j| <= 4
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        classifier_pooling="mean",
        classifier_activation="gelu",
        classifier_bias=False,
        num_labels=1,
        reference_compile=False,
    )
    assert config.layer_types == ["full_attention", "sliding_attention", "full_attention"], config.layer_types
    torch.manual_seed(1)
    model = ModernBertForSequenceClassification(config)
    randomize(model, seed=101)
    # transformers 5 writes layer_types / rope_parameters and drops these legacy keys; Hub checkpoints
    # (answerdotai/ModernBERT-*) carry them instead, so the fixture has both (transformers reads layer_types first).
    legacy = {
        "global_attn_every_n_layers": 2,
        "global_rope_theta": 160000.0,
        "local_rope_theta": 10000.0,
        "reference_compile": False,
    }
    return write_cross_encoder("modernbert-cross-encoder", model, tok, legacy)


def deberta_v3() -> dict:
    tok = deberta_v3_tokenizer()
    config = DebertaV2Config(
        vocab_size=round_up(len(tok), 64),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=0,
        initializer_range=0.02,
        layer_norm_eps=1e-7,
        relative_attention=True,
        max_relative_positions=-1,
        position_buckets=16,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        pad_token_id=tok.pad_token_id,
        pooler_hidden_size=HIDDEN,
        pooler_hidden_act="gelu",
        pooler_dropout=0,
        num_labels=1,
    )
    torch.manual_seed(2)
    model = DebertaV2ForSequenceClassification(config)
    randomize(model, seed=202)
    return write_cross_encoder("deberta-v3-cross-encoder", model, tok)


def mpnet() -> dict:
    tok = mpnet_tokenizer()
    assert tok.pad_token_id == 1 and tok.cls_token_id == 0 and tok.sep_token_id == 2
    config = MPNetConfig(
        vocab_size=round_up(len(tok), 64),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        max_position_embeddings=130,
        layer_norm_eps=1e-5,
        relative_attention_num_buckets=32,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(3)
    model = MPNetForSequenceClassification(config)
    randomize(model, seed=303)
    return write_cross_encoder("mpnet-cross-encoder", model, tok)


def bert() -> dict:
    tok = bert_tokenizer()
    assert tok.pad_token_id == 0
    config = BertConfig(
        vocab_size=round_up(len(tok), 64),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
    )
    torch.manual_seed(6)
    model = BertForSequenceClassification(config)
    randomize(model, seed=606)
    return write_cross_encoder("bert-cross-encoder", model, tok)


def xlm_roberta() -> dict:
    tok = xlm_roberta_tokenizer()
    assert tok.pad_token_id == 1 and tok.cls_token_id == 0 and tok.sep_token_id == 2 and tok.unk_token_id == 3
    config = XLMRobertaConfig(
        vocab_size=round_up(len(tok), 64),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        max_position_embeddings=130,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(7)
    model = XLMRobertaForSequenceClassification(config)
    randomize(model, seed=707)
    return write_cross_encoder("xlm-roberta-cross-encoder", model, tok)


# ---------------------------------------------------------------------------------------------------------------
# Bi-encoders (sentence-transformers layout)
# ---------------------------------------------------------------------------------------------------------------


def write_bi_encoder(name: str, seed: int, pooling_mode: str, dense: bool, prompts: dict) -> dict:
    folder = HERE / name
    if folder.exists():
        shutil.rmtree(folder)
    tok = bert_tokenizer()
    config = BertConfig(
        vocab_size=round_up(len(tok), 64),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    bert = BertModel(config)
    randomize(bert, seed=seed * 101)
    with tempfile.TemporaryDirectory() as tmp:
        bert.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        modules = [Transformer(tmp, max_seq_length=BI_MAX_SEQ_LENGTH), Pooling(HIDDEN, pooling_mode=pooling_mode)]
        if dense:
            torch.manual_seed(seed + 1)
            layer = Dense(HIDDEN, 24, bias=True, activation_function=torch.nn.Tanh())
            randomize(layer, seed=seed * 101 + 1, std=0.3)
            modules.append(layer)
        modules.append(Normalize())
        st = SentenceTransformer(
            modules=modules,
            device="cpu",
            prompts=prompts,
            default_prompt_name=None,
            similarity_fn_name="cosine",
        )
        st.save(str(folder))

    # Outputs from the saved folder, loaded back the ordinary way.
    st = SentenceTransformer(str(folder), device="cpu")
    st.eval()
    assert st.prompts == prompts, st.prompts
    q = st.encode(BI_QUERIES, prompt_name="query", convert_to_tensor=True, batch_size=32)
    d = st.encode(BI_DOCUMENTS, prompt_name="document", convert_to_tensor=True, batch_size=32)
    tok = AutoTokenizer.from_pretrained(folder)

    def ids(texts: list[str], prompt: str) -> list[list[int]]:
        return [
            tok(prompt + t, truncation="longest_first", max_length=st.max_seq_length)["input_ids"] for t in texts
        ]

    query_ids, doc_ids = ids(BI_QUERIES, prompts["query"]), ids(BI_DOCUMENTS, prompts["document"])
    # The ids are what sentence-transformers fed the model.
    for texts, prompt, want in ((BI_QUERIES, prompts["query"], query_ids), (BI_DOCUMENTS, prompts["document"], doc_ids)):
        feats = st.preprocess([prompt + t for t in texts])
        for i, row in enumerate(want):
            n = int(feats["attention_mask"][i].sum())
            assert feats["input_ids"][i][:n].tolist() == row, (name, i)
    assert max(len(r) for r in query_ids + doc_ids) == st.max_seq_length  # truncation happens
    expected = {
        "note": f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__} "
        "(float32, CPU, encode(..., prompt_name=...)); written by crates/model/tests/families/generate.py",
        "max_seq_length": st.max_seq_length,
        "prompts": prompts,
        "queries": BI_QUERIES,
        "documents": BI_DOCUMENTS,
        "query_input_ids": query_ids,
        "document_input_ids": doc_ids,
        "query_embeddings": [[float(x) for x in row] for row in q.float()],
        "document_embeddings": [[float(x) for x in row] for row in d.float()],
    }
    (folder / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=True) + "\n")
    return {"name": name, "dim": q.shape[-1], "query_lengths": [len(r) for r in query_ids], "doc_lengths": [len(r) for r in doc_ids]}


def main() -> None:
    results = [
        modernbert(),
        deberta_v3(),
        mpnet(),
        bert(),
        xlm_roberta(),
        write_bi_encoder("bert-cls-bi-encoder", seed=4, pooling_mode="cls", dense=False, prompts=BGE_PROMPTS),
        write_bi_encoder("bert-dense-bi-encoder", seed=5, pooling_mode="mean", dense=True, prompts=E5_PROMPTS),
    ]
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
