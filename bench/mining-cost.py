"""Mining cost against corpus size: `finerank mine` over synthetic BEIR corpora of 10k, 100k and
1M documents, with BM25 alone (`--mining-model none`) and with dense retrieval by the default
model (`--first-stage dense`), each run cold (empty cache) and then again warm (cache reused).

Documents are 20-60 words drawn from the vocabulary of the CaseHOLD holdings (unigram
frequencies); each of 500 queries is 12 words of its one relevant document plus 4 random words.
Usage: .venv/bin/python bench/mining-cost.py target/release/finerank [SIZES] [DENSE_MAX]
(defaults: 10000,100000,1000000, and dense up to 10000: embedding runs at about 100 documents a
second on 2 cores, so 100k documents take some 17 minutes cold). Writes
runs/bench/mining-cost/cost.json and docs/mining-cost.png."""
import collections
import json
import os
import random
import shutil
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

binary = sys.argv[1]
sizes = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "10000,100000,1000000").split(",")]
dense_max = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
root = "runs/bench/mining-cost"
os.makedirs(root, exist_ok=True)

counts = collections.Counter()
for line in open("../shared/data/casehold/train.jsonl"):
    row = json.loads(line)
    for h in range(5):
        counts.update(row[f"holding_{h}"].lower().split())
words, weights = zip(*counts.items())


def corpus(n, folder):
    rng = random.Random(n)
    os.makedirs(f"{folder}/qrels", exist_ok=True)
    docs = []
    with open(f"{folder}/corpus.jsonl", "w") as f:
        for i in range(n):
            text = rng.choices(words, weights, k=rng.randint(20, 60))
            if i < 500:
                docs.append(text)
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": " ".join(text)}) + "\n")
    with open(f"{folder}/queries.jsonl", "w") as q, open(f"{folder}/qrels/train.tsv", "w") as r:
        r.write("query-id\tcorpus-id\tscore\n")
        for i, text in enumerate(docs):
            query = rng.sample(text, 12) + rng.choices(words, weights, k=4)
            q.write(json.dumps({"_id": f"q{i}", "text": " ".join(query)}) + "\n")
            r.write(f"q{i}\td{i}\t1\n")


def mine(folder, extra):
    started = time.perf_counter()
    subprocess.run([binary, "--device", "cpu", "mine", "--beir", folder, "--out", f"{folder}/out",
                    "--valid-share", "0", *extra], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


results = []
for n in sizes:
    folder = f"{root}/{n}"
    if not os.path.exists(f"{folder}/corpus.jsonl"):
        corpus(n, folder)
    modes = [("bm25", ["--first-stage", "bm25", "--mining-model", "none"])]
    if n <= dense_max:
        modes.append(("dense", ["--first-stage", "dense"]))
    for name, extra in modes:
        shutil.rmtree(f"{folder}/.finerank-cache", ignore_errors=True)
        cold = mine(folder, extra)
        warm = mine(folder, extra)
        results.append({"docs": n, "mode": name, "cold_seconds": cold, "warm_seconds": warm})
        print(f"{n:>8} docs {name:>5}: cold {cold:7.1f} s, warm {warm:6.1f} s", flush=True)
json.dump(results, open(f"{root}/cost.json", "w"), indent=2)

plt.figure(figsize=(6, 4))
for name in ("bm25", "dense"):
    rows = [r for r in results if r["mode"] == name]
    if rows:
        plt.plot([r["docs"] for r in rows], [r["cold_seconds"] for r in rows], "o-", label=f"{name}, cold")
        plt.plot([r["docs"] for r in rows], [r["warm_seconds"] for r in rows], "o--", label=f"{name}, cached")
plt.xscale("log")
plt.yscale("log")
plt.xlabel("documents in the corpus")
plt.ylabel("seconds to mine 500 queries")
plt.title("finerank mine on 2 CPU cores")
plt.legend()
plt.grid(True, which="both", alpha=0.3)
plt.tight_layout()
plt.savefig("docs/mining-cost.png", dpi=100)
