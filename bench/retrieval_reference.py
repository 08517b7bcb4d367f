"""The reference recipe for bench/retrieval-vs-st.sh: sentence-transformers' own hard-negative
mining (util.mine_hard_negatives, dense retrieval with the base model over the whole corpus) and
its usual loss (MultipleNegativesRankingLoss) with its trainer, on the same training queries and
the same corpus that finerank mines and trains on. Settings match finerank's where both have one:
7 negatives from the top 50, no margin, batch 16, 2 epochs, 10% warmup, max length
384, seed 0; the learning rate is sentence-transformers' usual 2e-5 (finerank runs its 4e-5).

Usage: retrieval_reference.py BEIR_DIR TRAIN_JSONL OUT_DIR
Writes OUT_DIR/model (a sentence-transformers checkpoint finerank evaluates) and
OUT_DIR/timing.json (mining and training wall seconds)."""
import json
import sys
import time

import uuid

import datasets.arrow_dataset
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, util
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.training_args import (
    BatchSamplers,
    SentenceTransformerTrainingArguments,
)

# datasets 5.2 fails to hash a new dataset's Arrow table here (dill cannot pickle pyarrow's
# MonthDayNano type); the fingerprint only names its cache files, so a random one does.
datasets.arrow_dataset.generate_fingerprint = lambda dataset: uuid.uuid4().hex

beir, train_file, out = sys.argv[1:4]
torch.manual_seed(0)
corpus = []
for line in open(f"{beir}/corpus.jsonl"):
    d = json.loads(line)
    corpus.append(f"{d['title']} {d['text']}" if d.get("title") else d["text"])
rows = [json.loads(line) for line in open(train_file)]
pairs = Dataset.from_dict({
    "anchor": [r["query"] for r in rows],
    "positive": [r["relevant_passages"][0] for r in rows],
})

model = SentenceTransformer(".venv/default-model", device="cpu")
model.max_seq_length = 384
started = time.perf_counter()
mined = util.mine_hard_negatives(
    pairs, model, corpus=corpus, range_min=0, range_max=50,
    num_negatives=7, sampling_strategy="top", output_format="n-tuple", batch_size=64,
    use_faiss=False, verbose=True,
)
mining_seconds = time.perf_counter() - started

args = SentenceTransformerTrainingArguments(
    output_dir=f"{out}/trainer", num_train_epochs=2, per_device_train_batch_size=16,
    learning_rate=2e-5, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, seed=0,
    batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", logging_steps=20,
    report_to=[], use_cpu=True, dataloader_num_workers=0,
)
trainer = SentenceTransformerTrainer(
    model=model, args=args, train_dataset=mined,
    loss=losses.MultipleNegativesRankingLoss(model, scale=20.0),
)
started = time.perf_counter()
trainer.train()
training_seconds = time.perf_counter() - started
model.save(f"{out}/model")
json.dump({"mining_seconds": mining_seconds, "training_seconds": training_seconds,
           "queries": len(rows), "mined_rows": len(mined)}, open(f"{out}/timing.json", "w"), indent=2)
print(json.dumps({"mining_seconds": mining_seconds, "training_seconds": training_seconds}))
