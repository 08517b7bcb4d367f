"""Benchmark 4 of issue 5: how one /v1/rerank request's time grows with its number of documents
(10 to 10,000) and with the documents' length (64 to 512 tokens), on `finerank serve` with the
default model. Fits a line to time against documents and reports its R^2; writes
runs/bench/scaling.json and the plot docs/scaling.png.

Usage: .venv/bin/python bench/scaling.py FINERANK_BINARY   (env: FINERANK_CASEHOLD=../shared/data/casehold)
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("FINERANK_CASEHOLD", os.path.join(ROOT, "..", "shared", "data", "casehold"))
DOCS = [10, 30, 100, 300, 1000, 3000, 10000]
LENGTHS = [64, 128, 256, 384, 512]
DOCS_PER_LENGTH = 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=1800) as r:
        r.read()
    return time.perf_counter() - t


def timed(url, body, repeats):
    return float(np.median([post(url, body) for _ in range(repeats)]))


def main():
    binary = sys.argv[1]
    train = [json.loads(line) for line in open(os.path.join(DATA, "train.jsonl"))]
    query = json.loads(open(os.path.join(DATA, "test.jsonl")).readline())["citing_prompt"]
    holdings = [r[f"holding_{i}"] for r in train for i in range(5)]
    # Documents of an exact token length: windows of the citing prompts' running text.
    tok = Tokenizer.from_file(os.path.join(ROOT, ".venv", "default-model", "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    running = tok.encode(" ".join(r["citing_prompt"] for r in train[:400]), add_special_tokens=False).ids

    def doc_of(length, i):
        start = i * 97 % (len(running) - length)
        # Two special tokens join the text: [CLS] ... [SEP].
        return tok.decode(running[start:start + length - 2])

    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        log = open(os.path.join(work, "server.log"), "w")
        server = subprocess.Popen([binary, "--device", "cpu", "serve", "--data-dir", work, "--port", str(port),
                                   "--max-documents", "10000"], stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    urllib.request.urlopen(base + "/health", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.5)
            url = base + "/v1/rerank"
            body = lambda docs: {"model": "all-MiniLM-L6-v2", "query": query, "documents": docs, "top_n": 3}
            post(url, body(holdings[:50]))  # warm-up
            by_docs = []
            for n in DOCS:
                secs = timed(url, body(holdings[:n]), 3 if n <= 1000 else 1)
                by_docs.append({"documents": n, "seconds": secs})
                print(f"{n:>6} documents: {secs:8.3f} s", flush=True)
            by_len = []
            for length in LENGTHS:
                docs = [doc_of(length, i) for i in range(DOCS_PER_LENGTH)]
                secs = timed(url, body(docs), 3)
                by_len.append({"tokens": length, "seconds": secs})
                print(f"{DOCS_PER_LENGTH} documents of {length:>3} tokens: {secs:8.3f} s", flush=True)
        finally:
            server.terminate()
            server.wait()

    n = np.array([r["documents"] for r in by_docs], dtype=float)
    t = np.array([r["seconds"] for r in by_docs])
    slope, intercept = np.polyfit(n, t, 1)
    r2 = 1 - ((t - (slope * n + intercept)) ** 2).sum() / ((t - t.mean()) ** 2).sum()
    print(f"time = {intercept:.3f} s + {slope * 1000:.2f} ms x documents, R^2 = {r2:.4f}")

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.loglog(n, t, "o-", label="measured")
    a.loglog(n, slope * n + intercept, "--", color="gray", label=f"linear fit (R² = {r2:.4f})")
    a.set_xlabel("documents in one request")
    a.set_ylabel("request time (s)")
    a.set_title("Time against documents (CaseHOLD holdings)")
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    lens = [r["tokens"] for r in by_len]
    b.plot(lens, [r["seconds"] for r in by_len], "o-")
    b.set_xlabel("tokens per document")
    b.set_ylabel("request time (s)")
    b.set_title(f"Time against length ({DOCS_PER_LENGTH} documents)")
    b.set_ylim(bottom=0)
    b.grid(True, alpha=0.3)
    fig.suptitle("finerank serve, all-MiniLM-L6-v2 bi-encoder, CPU (2 cores)")
    fig.tight_layout()
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    fig.savefig(os.path.join(ROOT, "docs", "scaling.png"), dpi=110)
    os.makedirs(os.path.join(ROOT, "runs", "bench"), exist_ok=True)
    json.dump({"by_documents": by_docs, "by_length": by_len,
               "fit": {"intercept_seconds": intercept, "seconds_per_document": slope, "r2": r2}},
              open(os.path.join(ROOT, "runs", "bench", "scaling.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
