"""What the reliability scripts share beyond tests/harness.py: a server on the tiny model with
quick fine-tunes, a client that returns status and body instead of raising, small datasets, and
the checks of what a data directory holds."""
import json
import os
import sqlite3
import uuid

import requests

from harness import Server, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A two-layer random cross-encoder: it loads in milliseconds and a fine-tune of a few steps takes
# well under a second, so a test can restart and train many times.
TINY_MODEL = os.path.join(ROOT, "..", "shared", "fixtures", "tiny-bert-cross-encoder")
KEY = "reliability-key-" + uuid.uuid4().hex
# RELIABILITY_LONG=1 runs the long variants (more kills, more generated requests, a 10-minute soak).
LONG = os.environ.get("RELIABILITY_LONG") == "1"
RESTART_NOTE = "interrupted by a server restart"
TERMINAL = ("STATUS_READY", "STATUS_FAILED")


def tiny_flags(*extra, steps=6):
    """Flags for a server on the tiny model whose fine-tunes take a few steps on 8 queries."""
    return ["--default-model", TINY_MODEL, "--api-key", KEY,
            "--min-train-queries", "8", "--min-eval-queries", "4",
            "--max-train-steps", str(steps), "--train-max-length", "32", *extra]


def tiny_server(binary, data_dir, log, *extra, env=None, steps=6):
    return Server(binary, data_dir, log, flags=tiny_flags(*extra, steps=steps), env=env)


class Api:
    """Requests with the key; every call returns (status, JSON body or text) and never raises on
    an HTTP status."""

    def __init__(self, server, key=KEY, timeout=60):
        self.url, self.key, self.timeout = server.url, key, timeout
        self.session = requests.Session()

    def headers(self, extra=None):
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        headers.update(extra or {})
        return headers

    def call(self, method, path, headers=None, **kw):
        kw.setdefault("timeout", self.timeout)
        r = self.session.request(method, self.url + path, headers=self.headers(headers), **kw)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, json=body, **kw)

    def upload(self, train, eval_data=None, name="reliability", filename="train.jsonl", **kw):
        files = {"data": (filename, train)}
        if eval_data is not None:
            files["eval_data"] = ("eval.jsonl", eval_data)
        return self.call("POST", "/v1/datasets", params={"name": name, "type": "reranker-finetune-input"},
                         files=files, **kw)

    def finetune(self, dataset_id, name="reliability", **hyper):
        settings = {"base_model": {"base_type": "BASE_TYPE_RERANK"}, "dataset_id": dataset_id,
                    "hyperparameters": {"train_epochs": 1, "train_batch_size": 4, "learning_rate": 0.001, **hyper}}
        return self.post("/v1/finetuning/finetuned-models", {"name": name, "settings": settings})

    def rerank(self, model=None, query="what does clause 3 say about rent",
               documents=("Clause 3 sets the rent.", "Clause 9 covers pets.")):
        body = {"query": query, "documents": list(documents)}
        if model:
            body["model"] = model
        return self.post("/v1/rerank", body)

    def dataset(self, dataset_id):
        status, body = self.get(f"/v1/datasets/{dataset_id}")
        assert status == 200, (dataset_id, status, body)
        return body["dataset"]

    def model(self, model_id):
        status, body = self.get(f"/v1/finetuning/finetuned-models/{model_id}")
        assert status == 200, (model_id, status, body)
        return body["finetuned_model"]

    def events(self, model_id):
        """A fine-tune's events, oldest first."""
        status, body = self.get(f"/v1/finetuning/finetuned-models/{model_id}/events",
                                params={"order_by": "created_at", "page_size": 1000})
        assert status == 200, (model_id, status, body)
        return body["events"]

    def settled_dataset(self, dataset_id, timeout=60):
        return wait_for(lambda: self.dataset(dataset_id),
                        lambda d: d["validation_status"] in ("validated", "failed"), timeout)

    def settled_model(self, model_id, timeout=120):
        return wait_for(lambda: self.model(model_id), lambda m: m["status"] in TERMINAL, timeout)

    def metric(self, name):
        """An unlabelled metric's value from /metrics."""
        status, text = self.get("/metrics")
        assert status == 200, text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")


def wait_for(fetch, done, timeout, interval=0.05):
    """`harness.wait_until`, polling fast by default: these tests race the server on purpose."""
    return wait_until(fetch, done, timeout, interval)


def rows(n, tag="lease", marker="", padding=0):
    """`n` training rows of the fine-tuning format, as JSONL bytes; `marker` goes into every query,
    `padding` words into every passage (to make a file larger)."""
    filler = " ".join(["rent"] * padding)
    out = []
    for i in range(n):
        out.append(json.dumps({
            "query": f"{marker} what does clause {i} of the {tag} say about rent".strip(),
            "relevant_passages": [f"Clause {i} of the {tag} sets the rent and when it is due. {filler}".strip()],
            "hard_negatives": [f"Clause {i + 1000} covers pets. {filler}".strip(),
                               f"Clause {i + 2000} covers parking. {filler}".strip()],
        }))
    return ("\n".join(out) + "\n").encode()


def integrity_check(data_dir):
    """SQLite's own verdict on the store, read while the server may be running (WAL allows it)."""
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'finerank.db')}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in db.execute("PRAGMA integrity_check")]
    finally:
        db.close()


MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "finerank.json")


def disk_layout_problems(data_dir, dataset_ids):
    """What a data directory holds that it should not: a registered model missing a file, an
    upload directory of no dataset, staging debris, or a dataset without its files."""
    problems = []
    models = os.path.join(data_dir, "models")
    for name in os.listdir(models):
        missing = [f for f in MODEL_FILES if not os.path.isfile(os.path.join(models, name, f))]
        if missing:
            problems.append(f"model {name} lacks {missing}")
    uploads = os.path.join(data_dir, "uploads")
    for name in os.listdir(uploads):
        if name not in dataset_ids:
            problems.append(f"uploads/{name} belongs to no dataset")
    for dataset_id in dataset_ids:
        if not os.path.isfile(os.path.join(uploads, dataset_id, "train.jsonl")):
            problems.append(f"dataset {dataset_id} has no train.jsonl")
    return problems
