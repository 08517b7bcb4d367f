"""Benchmark 1: in-process rerank throughput on a CPU, finerank against the CPU stacks a user could
pick instead, in one run, on the same rows, at the same max length, batch and thread count.

Two models:
  - a cross-encoder of MiniLM-L6's shape, scored by `CrossEncoder.predict`: CROSS_ENCODER, a
    trained one (bench/trained-cross-encoder.sh makes one from the default model on CaseHOLD's
    training rows), or by default the default model's encoder under a seeded fresh one-logit
    head, saved once with transformers, whose rows measure speed and score drift, not quality;
  - the default MiniLM as a bi-encoder, by `SentenceTransformer.encode` of the queries and the
    holdings followed by the cosine, mapped to a relevance score by the calibration finerank
    reports (sigmoid(scale x cosine + bias)), as finerank maps it.
Stacks, each timed REPEATS times, the repeats interleaved (every stack once, then again), best
time kept:
  - finerank in each of PRECISIONS (f32, bf16 where the CPU has bf16 units, int8);
  - sentence-transformers 6.2 on PyTorch fp32 (.venv): the reference every score is compared to;
  - sentence-transformers' ONNX backend (its plain export, its O3-optimized export and its
    dynamic int8 export for this CPU) and its OpenVINO backend (fp32; bf16, its default on a
    CPU with bf16 units; and int8 statically quantized on CaseHOLD train prompts), in
    bench/cpu_peer.py workers over .cache/bench-cpu-peers (bench/cpu-peers.sh installs it; see
    its requirements file).
A backend that fails to export, load or score is reported as such, with its error, not left out
silently.
For each: pairs/s, the largest score difference against PyTorch fp32, and accuracy@1 and nDCG@10
on the test rows (one right holding of five).
Prints a table and writes runs/bench/rerank-vs-st.json, with the load average before and after.

Usage: .venv/bin/python bench/rerank-vs-st.py FINERANK_BINARY   (env: QUERIES=200 MAXLEN=384
BATCH=32 THREADS=2 REPEATS=3 PRECISIONS=f32,bf16,int8 PEERS=onnx,onnx-O3,onnx-qint8,openvino,
openvino-bf16,openvino-qint8 DEVICE=cpu MODEL=.venv/default-model CROSS_ENCODER=
KINDS=cross-encoder,bi-encoder OUT=runs/bench
FINERANK_CASEHOLD=../shared/data/casehold; bench/gpu.sh sets DEVICE=cuda, PRECISIONS=f32,bf16
and PEERS= (none), where the reference stays fp32)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# Loading reports and progress bars would bury the table.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import CrossEncoder, SentenceTransformer  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("FINERANK_CASEHOLD", os.path.join(ROOT, "..", "shared", "data", "casehold"))
BASE = os.environ.get("MODEL", os.path.join(ROOT, ".venv", "default-model"))
CROSS_ENCODER = os.environ.get("CROSS_ENCODER")
KINDS = os.environ.get("KINDS", "cross-encoder,bi-encoder").split(",")
DEVICE = os.environ.get("DEVICE", "cpu")
OUT = os.environ.get("OUT", os.path.join(ROOT, "runs", "bench"))
QUERIES = int(os.environ.get("QUERIES", "200"))
MAXLEN = int(os.environ.get("MAXLEN", "384"))
BATCH = int(os.environ.get("BATCH", "32"))
THREADS = int(os.environ.get("THREADS", "2"))
REPEATS = int(os.environ.get("REPEATS", "3"))
CPU_FLAGS = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
# bf16 only where oneDNN has bf16 units to run it on; elsewhere it is slower than fp32.
BF16 = "avx512_bf16" in CPU_FLAGS or "amx_bf16" in CPU_FLAGS or DEVICE == "cuda"
PRECISIONS = [p for p in os.environ.get("PRECISIONS", "f32,bf16,int8").split(",")
              if p and (p != "bf16" or BF16)]
PEERS = [p for p in os.environ.get(
    "PEERS", "onnx,onnx-O3,onnx-qint8,openvino,openvino-bf16,openvino-qint8").split(",")
    if p and (p != "openvino-bf16" or BF16)]
# finerank fp32 must reproduce the reference to this; the other modes report their drift.
TOLERANCE = 1e-3


def load_average():
    return open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None


class Finerank:
    """`finerank bench` in one precision: each pass is one process, which times its own scoring
    (after its own warm-up), leaving out process start and load."""

    def __init__(self, binary, model, kind, precision, work):
        self.name = f"finerank {precision}"
        self.finerank = True
        self.cmd = [binary, "--device", DEVICE, "--precision", precision, "--threads", str(THREADS),
                    "bench", "--model", model, "--kind", kind, "--data", DATA,
                    "--queries", str(QUERIES), "--steps", "0", "--max-length", str(MAXLEN),
                    "--batch-size", str(BATCH), "--scores", os.path.join(work, "scores.json")]
        self.scores_path = self.cmd[-1]
        self.calibration = None

    def run(self):
        out = json.loads(subprocess.run(self.cmd, check=True, capture_output=True, text=True).stdout)
        self.calibration = out["calibration"]
        scores = np.array(json.load(open(self.scores_path)), dtype=np.float64).reshape(-1)
        return out["rerank"]["seconds"], scores

    def close(self):
        pass


class Reference:
    """sentence-transformers on PyTorch fp32, in this process."""

    def __init__(self, kind, model_dir, pairs):
        self.name = "sentence-transformers torch fp32"
        self.finerank = False
        if kind == "cross-encoder":
            ce = CrossEncoder(model_dir, max_length=MAXLEN, device=DEVICE)
            self.score = lambda: np.asarray(ce.predict(pairs, batch_size=BATCH)).reshape(-1)
        else:
            model = SentenceTransformer(model_dir, device=DEVICE)
            model.max_seq_length = MAXLEN
            queries, holdings = [q for q, _ in pairs[::5]], [h for _, h in pairs]

            def score():
                q = model.encode(queries, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
                h = model.encode(holdings, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
                return np.einsum("qd,qkd->qk", q, h.reshape(len(queries), 5, -1)).reshape(-1)
            self.score = score
        self.score()  # warm-up

    def run(self):
        t = time.perf_counter()
        s = self.score()
        return time.perf_counter() - t, s

    def close(self):
        pass


class Peer:
    """A sentence-transformers backend in a bench/cpu_peer.py worker."""

    def __init__(self, kind, variant, model_dir, work, pairs_path, site):
        self.name = f"sentence-transformers {variant}"
        self.finerank = False
        env = dict(os.environ, PYTHONPATH=site, THREADS=str(THREADS), BATCH=str(BATCH), MAXLEN=str(MAXLEN),
                   FINERANK_CASEHOLD=DATA)
        self.log = open(os.path.join(work, f"{kind}-{variant}.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "bench", "cpu_peer.py"), kind, variant, model_dir,
             work, pairs_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, env=env)
        if not self.proc.stdout.readline():
            self.died()

    def died(self):
        self.proc.wait()
        self.log.close()
        lines = open(self.log.name).read().strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"the worker exited ({self.proc.returncode})")

    def run(self):
        try:
            self.proc.stdin.write("run\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.died()
        line = self.proc.stdout.readline()
        if not line:
            self.died()
        r = json.loads(line)
        return r["seconds"], np.array(r["scores"], dtype=np.float64)

    def close(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


def cross_encoder_dir(work):
    """MiniLM-L6's encoder under a fresh, seeded one-logit head, in Hugging Face layout."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=1)
    out = os.path.join(work, "minilm-cross-encoder")
    model.save_pretrained(out)
    for name in os.listdir(BASE):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(os.path.join(BASE, name), out)
    return out


def quality(scores, labels):
    """accuracy@1 and nDCG@10 (one relevant of five), in points."""
    s = scores.reshape(len(labels), 5)
    right = s[np.arange(len(labels)), labels]
    rank = (s > right[:, None]).sum(1)
    return 100 * float((rank == 0).mean()), 100 * float((1 / np.log2(rank + 2)).mean())


def run_kind(kind, model_dir, binary, pairs, labels, fits, work, site):
    pairs_path = os.path.join(work, f"{kind}-pairs.json")
    json.dump(pairs, open(pairs_path, "w"))
    stacks, failed = [], []
    stacks.append(Reference(kind, model_dir, pairs))
    for p in PRECISIONS:
        stacks.append(Finerank(binary, model_dir, kind, p, work))
    for variant in PEERS:
        try:
            stacks.append(Peer(kind, variant, model_dir, work, pairs_path, site))
        except Exception as e:  # noqa: BLE001 - reported in the table
            failed.append((f"sentence-transformers {variant}", str(e)))
    best, scores = {}, {}
    for _ in range(REPEATS):
        for s in list(stacks):
            try:
                secs, sc = s.run()
            except Exception as e:  # noqa: BLE001 - a peer that dies mid-run is reported too
                if s.finerank or s is stacks[0]:
                    raise
                stacks.remove(s)
                failed.append((s.name, f"died while scoring: {e}"))
                continue
            best[s.name] = min(best.get(s.name, float("inf")), secs)
            scores[s.name] = sc
    for s in stacks:
        s.close()
    ref = scores[stacks[0].name]
    cal = next((s.calibration for s in stacks if s.finerank and s.calibration), None)
    rows = []
    for s in stacks:
        sc = scores[s.name]
        if kind == "bi-encoder" and not s.finerank:
            # Cosines, mapped as finerank maps its own.
            sc = 1 / (1 + np.exp(-(cal["scale"] * sc + cal["bias"])))
        if kind == "bi-encoder" and s is stacks[0]:
            ref = sc
        rows.append({"stack": s.name, "pairs_per_second": len(pairs) / best[s.name], "sc": sc})
    for r in rows:
        r["max_abs_score_diff"] = float(np.abs(r.pop("sc") - ref)[fits].max())
    for r, s in zip(rows, stacks):
        r["accuracy_at_1"], r["ndcg_at_10"] = quality(scores[s.name], labels)
    for name, error in failed:
        rows.append({"stack": name, "failed": error})
    return rows


def main():
    binary = sys.argv[1]
    torch.set_num_threads(THREADS)
    load_before = load_average()
    rows = [json.loads(line) for line in open(os.path.join(DATA, "test.jsonl"))][:QUERIES]
    labels = np.array([int(r["label"]) for r in rows])
    pairs = [[r["citing_prompt"], r[f"holding_{i}"]] for r in rows for i in range(5)]
    site = ""
    if PEERS:
        site = subprocess.run([os.path.join(ROOT, "bench", "cpu-peers.sh")], check=True,
                              capture_output=True, text=True).stdout.strip()
    report = {}
    with tempfile.TemporaryDirectory() as work:
        ce_dir = CROSS_ENCODER or cross_encoder_dir(work)
        ce_name = "cross-encoder (MiniLM-L6, " + ("trained on CaseHOLD)" if CROSS_ENCODER else "fresh head)")
        # A pair that fits the window is read whole by every stack. Past the window, transformers
        # cuts the longer text first, while finerank keeps half the window for the query and
        # splits the document into windows, so those pairs (if any) are left out of the score
        # comparison.
        tok = CrossEncoder(ce_dir, max_length=MAXLEN, device=DEVICE).tokenizer
        pair_len = tok([q for q, _ in pairs], [h for _, h in pairs])["input_ids"]
        fits = np.array([len(ids) <= MAXLEN for ids in pair_len])
        if "cross-encoder" in KINDS:
            report[ce_name] = run_kind(
                "cross-encoder", ce_dir, binary, pairs, labels, fits, work, site)
        if "bi-encoder" in KINDS:
            report["bi-encoder (all-MiniLM-L6-v2)"] = run_kind(
                "bi-encoder", BASE, binary, pairs, labels, np.ones(len(pairs), bool), work, site)
    load_after = load_average()

    print(f"{len(pairs)} CaseHOLD pairs ({len(rows)} queries x 5 holdings), max length {MAXLEN}, "
          f"batch {BATCH}, {THREADS} threads, best of {REPEATS} interleaved; "
          f"{fits.sum()} of {len(pairs)} cross-encoder pairs fit and are compared; "
          f"load average {' '.join(load_before or [])} before, {' '.join(load_after or [])} after")
    print("| model | stack | pairs/s | × torch fp32 | max score diff vs torch fp32 | accuracy@1 | nDCG@10 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for model, results in report.items():
        ok = [r for r in results if "failed" not in r]
        ref = ok[0]["pairs_per_second"]
        for r in results:
            if "failed" in r:
                print(f"| {model} | {r['stack']} | failed: {r['failed'][:120]} | | | | |")
                continue
            print(f"| {model} | {r['stack']} | {r['pairs_per_second']:.1f} | "
                  f"{r['pairs_per_second'] / ref:.2f}x | {r['max_abs_score_diff']:.1e} | "
                  f"{r['accuracy_at_1']:.1f} | {r['ndcg_at_10']:.2f} |")
        ours = [r for r in ok if r["stack"].startswith("finerank")]
        peers = [r for r in ok if not r["stack"].startswith("finerank")]
        fp32 = next((r for r in ours if r["stack"] == "finerank f32"), None)
        best_ours = max(ours, key=lambda r: r["pairs_per_second"])
        best_peer = max(peers, key=lambda r: r["pairs_per_second"])
        summary[model] = {
            "finerank_best": best_ours["stack"], "fastest_peer": best_peer["stack"],
            "best_over_fastest_peer": best_ours["pairs_per_second"] / best_peer["pairs_per_second"],
            "f32_over_torch_fp32": fp32 and fp32["pairs_per_second"] / ref,
        }
        print(f"{model}: {best_ours['stack']} is {summary[model]['best_over_fastest_peer']:.2f}x "
              f"the fastest peer ({best_peer['stack']}); finerank f32 is "
              f"{(summary[model]['f32_over_torch_fp32'] or 0):.2f}x torch fp32")
    os.makedirs(OUT, exist_ok=True)
    json.dump({"device": DEVICE, "max_length": MAXLEN, "batch_size": BATCH, "threads": THREADS,
               "repeats": REPEATS, "load_average_before": load_before, "load_average_after": load_after,
               "results": report, "summary": summary},
              open(os.path.join(OUT, "rerank-vs-st.json"), "w"), indent=2)
    # A fine-tune's relevance score is its calibrated logit (calibration.json), where
    # sentence-transformers serves the plain sigmoid: the rankings compare, the scores do not.
    calibrated = CROSS_ENCODER and os.path.exists(os.path.join(CROSS_ENCODER, "calibration.json"))
    bad = [(m, r["stack"]) for m, rs in report.items() for r in rs
           if r.get("stack") == "finerank f32" and r["max_abs_score_diff"] > TOLERANCE
           and not (calibrated and m.startswith("cross-encoder"))]
    if calibrated:
        print("cross-encoder: finerank serves the fine-tune's calibrated score, sentence-transformers "
              "the plain sigmoid; their score differences are not checked against the tolerance")
    if bad:
        sys.exit(f"finerank fp32 scores disagree with the reference by more than {TOLERANCE}: {bad}")


if __name__ == "__main__":
    main()
