"""Issue 16: an LLM reranker (Qwen3-Reranker's scheme) on CPU, finerank against sentence-transformers'
CrossEncoder for scoring and transformers + PEFT for LoRA fine-tuning, in one run.

The model is a seeded random Qwen3ForCausalLM of one small shape (SHAPE), built by transformers from
the Qwen3 test fixture's config with that fixture's byte-level BPE tokenizer
(crates/model/tests/families/qwen3-reranker). A chat template that renders the Qwen3-Reranker
model card's prompt is written beside it, so that `CrossEncoder` (a causal LM with LogitScore over
"yes" and "no") reads each pair exactly as finerank and the model card do. Both sides then, on this
machine with the same threads, max length and batch size:
  - score QUERIES CaseHOLD test queries x 5 holdings: `finerank bench` (its own timer, after a
    warm-up) against `CrossEncoder.predict`, best of REPEATS; the scores must agree to 1e-3 on the
    pairs that fit the window (past it, the two stacks cut differently);
  - LoRA-train STEPS steps of finerank's cross-encoder recipe (8 queries x 5 holdings a step,
    listwise softmax cross-entropy over the yes-minus-no logits, AdamW at 3e-4): `finerank bench
    --steps --lora-rank R` against the same step written with transformers and PEFT (rank R,
    alpha 2R, no dropout, adapters on every attention and feed-forward projection), each timing
    every step from the first.
Prints a table and writes runs/bench/llm-vs-st.json.

On a GPU (DEVICE=cuda, as `bench/gpu.sh run` calls it), SHAPE=0.6b or 4b gives Qwen3-Reranker-0.6B's
or -4B's shape (random weights, the real vocabulary size, tied embeddings); both stacks then run bf16
autocast over fp32 weights (BASE_DTYPE=bf16: the LoRA runs' frozen base in bf16 on both sides), and
each side's peak GPU memory (nvidia-smi's used memory while it runs,
less what was used before) is reported beside its pairs/s.

Usage: .venv/bin/python bench/llm-vs-st.py FINERANK_BINARY
(env: QUERIES=40 STEPS=4 MAXLEN=256 BATCH=16 THREADS=2 REPEATS=3 RANK=16 BASE_DTYPE=f32 DEVICE=cpu
SHAPE=small FINERANK_CASEHOLD=../shared/data/casehold OUT=runs/bench)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from sentence_transformers import CrossEncoder  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from timing import best_of  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "crates", "model", "tests", "families", "qwen3-reranker")
DATA = os.environ.get("FINERANK_CASEHOLD", os.path.join(ROOT, "..", "shared", "data", "casehold"))
OUT = os.environ.get("OUT", os.path.join(ROOT, "runs", "bench"))
QUERIES = int(os.environ.get("QUERIES", "40"))
STEPS = int(os.environ.get("STEPS", "4"))
MAXLEN = int(os.environ.get("MAXLEN", "256"))
BATCH = int(os.environ.get("BATCH", "16"))
THREADS = int(os.environ.get("THREADS", "2"))
REPEATS = int(os.environ.get("REPEATS", "3"))
RANK = int(os.environ.get("RANK", "16"))
# The LoRA runs' frozen base weights: f32 on both sides, or bf16 on both (finerank's --base-dtype
# bf16; the reference loads the base in bf16, PEFT keeping its adapters in fp32).
BASE_DTYPE = os.environ.get("BASE_DTYPE", "f32")
DEVICE = os.environ.get("DEVICE", "cpu")
# Qwen3-Reranker-0.6B's and -4B's config.json shapes (the 0.6B and 4B Qwen3 bases).
SHAPES = {
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 64, "intermediate_size": 768},
    "0.6b": {"hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
             "head_dim": 128, "intermediate_size": 3072, "vocab_size": 151669, "tie_word_embeddings": True},
    "4b": {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
           "head_dim": 128, "intermediate_size": 9728, "vocab_size": 151669, "tie_word_embeddings": True},
}
SHAPE = SHAPES[os.environ.get("SHAPE", "small")]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# bf16 on a GPU rounds each product to 8 bits of mantissa: there the check is a loose sanity bound.
TOLERANCE = 1e-3 if os.environ.get("DEVICE", "cpu") == "cpu" else 5e-2
QUERIES_PER_STEP, HOLDINGS = 8, 5
LEARNING_RATE = 3e-4  # finerank's LoRA default for a cross-encoder (ten times 3e-5)

# The Qwen3-Reranker model card's prompt.
PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def jinja_literal(text):
    return "{{- '" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "' -}}"


# sentence-transformers maps a pair to a "query" and a "document" message; this renders them as the card does.
CHAT_TEMPLATE = (
    jinja_literal(PREFIX)
    + "<Instruct>: {{ instruction | default('" + INSTRUCTION + "') }}\n"
    + "<Query>: {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}\n"
    + "<Document>: {{ messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first }}"
    + jinja_literal(SUFFIX)
)


def build(work):
    """A seeded random Qwen3 reranker of SHAPE with the fixture's tokenizer and the card's chat template."""
    config = AutoConfig.from_pretrained(FIXTURE)
    for key, value in SHAPE.items():
        setattr(config, key, value)
    config.max_position_embeddings = max(config.max_position_embeddings, 2 * MAXLEN)
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out = os.path.join(work, "qwen3")
    model.save_pretrained(out)
    for name in os.listdir(FIXTURE):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(os.path.join(FIXTURE, name), out)
    with open(os.path.join(out, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)
    return out


class PeakMemory:
    """A GPU's used memory, polled while a stack runs, less what was used before: the same measure for
    both stacks (each one's CUDA context, caching allocator and tensors). Zero on a CPU."""

    def __init__(self):
        self.peak, self.stop = 0, None

    @staticmethod
    def used():
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])

    def __enter__(self):
        if DEVICE == "cpu":
            return self
        import threading
        base, self.stop = self.used(), threading.Event()

        def poll():
            while not self.stop.wait(0.05):
                self.peak = max(self.peak, self.used() - base)

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_):
        if self.stop:
            self.stop.set()
            self.thread.join()


def finerank(binary, model, steps, scores_path):
    lora = ["--lora-rank", str(RANK), "--lora-alpha", str(2 * RANK), "--lora-dropout", "0",
            "--base-dtype", BASE_DTYPE] if steps else []
    precision = "f32" if DEVICE == "cpu" else "bf16"
    out = subprocess.run(
        [binary, "--device", DEVICE, "--precision", precision, "--threads", str(THREADS), "bench",
         "--model", model, "--data", DATA, "--queries", str(QUERIES), "--steps", str(steps),
         "--max-length", str(MAXLEN), "--batch-size", str(BATCH), "--scores", scores_path, *lora],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def card_batch(tok, pairs):
    """The model card's inputs: each pair's body cut to leave room for the prompt, the prompt around it,
    padded on the left."""
    prefix = tok.encode(PREFIX, add_special_tokens=False)
    suffix = tok.encode(SUFFIX, add_special_tokens=False)
    bodies = [f"<Instruct>: {INSTRUCTION}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    enc = tok(bodies, padding=False, truncation="longest_first", return_attention_mask=False,
              max_length=MAXLEN - len(prefix) - len(suffix))
    enc["input_ids"] = [prefix + ids + suffix for ids in enc["input_ids"]]
    return tok.pad(enc, padding=True, return_tensors="pt")


def reference_training(model_dir, rows):
    """STEPS LoRA steps of finerank's recipe with transformers and PEFT; pairs per second."""
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    torch.manual_seed(0)
    dtype = torch.bfloat16 if BASE_DTYPE == "bf16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(DEVICE)
    model = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0,
                                            target_modules=TARGETS)).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE,
                            weight_decay=0.01)

    def step(batch):
        pairs = [(r["citing_prompt"], r[f"holding_{i}"]) for r in batch
                 for i in [r["label"]] + [j for j in range(HOLDINGS) if j != r["label"]]]
        enc = card_batch(tok, pairs).to(DEVICE)
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE != "cpu"):
            last = model(**enc, logits_to_keep=1).logits[:, -1, :].float()
        logits = (last[:, yes] - last[:, no]).view(len(batch), HOLDINGS)
        loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()

    batches = [rows[i:i + QUERIES_PER_STEP] for i in range(0, len(rows), QUERIES_PER_STEP)]
    t = time.perf_counter()
    for b in batches[:STEPS]:
        step(b)
    if DEVICE != "cpu":
        torch.cuda.synchronize()
    return STEPS * QUERIES_PER_STEP * HOLDINGS / (time.perf_counter() - t)


def main():
    binary = sys.argv[1]
    torch.set_num_threads(THREADS)
    test = [json.loads(line) for line in open(os.path.join(DATA, "test.jsonl"))][:QUERIES]
    train = [json.loads(line) for line in open(os.path.join(DATA, "train.jsonl"))]
    pairs = [(r["citing_prompt"], r[f"holding_{i}"]) for r in test for i in range(HOLDINGS)]
    with tempfile.TemporaryDirectory() as work:
        scores_path = os.path.join(work, "scores.json")
        model_dir = build(work)
        # On a GPU the reference reads bf16 weights, as finerank computes under bf16 autocast.
        dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16
        with PeakMemory() as ref_score_mem:
            ce = CrossEncoder(model_dir, max_length=MAXLEN, device=DEVICE, model_kwargs={"dtype": dtype})
            ref_secs, ref = best_of(lambda: ce.predict(pairs, batch_size=BATCH,
                                                       activation_fn=torch.nn.Identity()), REPEATS)
        del ce
        with PeakMemory() as ours_score_mem:
            runs = [finerank(binary, model_dir, 0, scores_path) for _ in range(REPEATS)]
        ours_secs = min(r["rerank"]["seconds"] for r in runs)
        ours = np.array(json.load(open(scores_path)), dtype=np.float64).reshape(-1)
        # finerank's bench writes relevance scores, P("yes"): compare on the same scale.
        ref_p = 1.0 / (1.0 + np.exp(-np.asarray(ref, dtype=np.float64).reshape(-1)))
        tok = AutoTokenizer.from_pretrained(model_dir)
        whole = [len(tok.encode(PREFIX + f"<Instruct>: {INSTRUCTION}\n<Query>: {q}\n<Document>: {d}" + SUFFIX,
                                add_special_tokens=False)) for q, d in pairs]
        fits = np.array([n <= MAXLEN for n in whole])
        diff = float(np.abs(ours - ref_p)[fits].max()) if fits.any() else float("nan")
        with PeakMemory() as ours_train_mem:
            trained = finerank(binary, model_dir, STEPS, scores_path)["train"]
        with PeakMemory() as ref_train_mem:
            ref_train = reference_training(model_dir, train)
        report = {
            "shape": SHAPE, "max_length": MAXLEN, "batch_size": BATCH, "threads": THREADS, "lora_rank": RANK,
            "base_dtype": BASE_DTYPE,
            "pairs": len(pairs), "fit": int(fits.sum()),
            "score_finerank": len(pairs) / ours_secs, "score_reference": len(pairs) / ref_secs,
            "max_abs_score_diff": diff,
            "train_finerank": trained["pairs_per_second"],
            "train_reference": ref_train,
            "device": DEVICE,
            "peak_mib": {"score_finerank": ours_score_mem.peak, "score_reference": ref_score_mem.peak,
                         "train_finerank": ours_train_mem.peak, "train_reference": ref_train_mem.peak},
        }
    r = report
    print(f"{r['pairs']} CaseHOLD pairs ({r['fit']} fit), Qwen3 shape {SHAPE}, max length {MAXLEN}, batch {BATCH}, "
          f"{DEVICE} ({THREADS} threads), {'fp32' if DEVICE == 'cpu' else 'bf16'}; LoRA rank {RANK}, {BASE_DTYPE} base weights, "
          f"{STEPS} steps of {QUERIES_PER_STEP}x{HOLDINGS} pairs; peak GPU MiB {r['peak_mib']}")
    print("| | finerank pairs/s | reference pairs/s | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| scoring (CrossEncoder.predict; max score diff {r['max_abs_score_diff']:.1e}) | "
          f"{r['score_finerank']:.1f} | {r['score_reference']:.1f} | {r['score_finerank'] / r['score_reference']:.2f}x |")
    print(f"| LoRA training (transformers + PEFT) | {r['train_finerank']:.1f} | {r['train_reference']:.1f} | "
          f"{r['train_finerank'] / r['train_reference']:.2f}x |")
    os.makedirs(OUT, exist_ok=True)
    name = "llm-vs-st" if DEVICE == "cpu" else f"llm-vs-st-{os.environ.get('SHAPE', 'small')}"
    name += "-bf16-base" if BASE_DTYPE == "bf16" else ""
    json.dump(report, open(os.path.join(OUT, f"{name}.json"), "w"), indent=2)
    if not r["max_abs_score_diff"] <= TOLERANCE:
        sys.exit(f"scores disagree by more than {TOLERANCE}: {r['max_abs_score_diff']}")


if __name__ == "__main__":
    main()
