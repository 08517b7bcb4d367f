"""Crash safety: SIGKILL `finerank serve` at a random point of a dataset upload, a validation, a
fine-tune and a model's registration, in turn, many times over (24 kills; 100 with
RELIABILITY_LONG=1), restarting it on the same data directory each time. After every restart:

- SQLite's `PRAGMA integrity_check` passes;
- every dataset whose upload was answered is there, validated, with the bytes that were sent;
- every fine-tune whose creation was answered is there and settles READY (it reranks, and has
  its metrics): a job the kill caught in training went back to the queue with a note that says
  so ("interrupted by a server restart; resumes from step N") and resumed;
- the registry holds only complete models, no upload or staging debris is left, and no training
  state outlives its job.

Usage: test_crash.py BINARY WORK_DIR
"""
import collections
import hashlib
import os
import random
import sys
import threading
import time

import requests

from harness import Checks
from common import (LONG, RESTART_NOTE, TERMINAL, Api, disk_layout_problems, integrity_check, rows,
                    tiny_server, wait_for)

PHASES = ("upload", "validation", "fine-tuning", "registration")
STEPS = 60  # optimizer steps a fine-tune takes: long enough to be killed in the middle of


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Crashes:
    def __init__(self, binary, work, seed):
        self.binary, self.work, self.rng = binary, work, random.Random(seed)
        self.data_dir = os.path.join(work, "crash-data")
        self.log = os.path.join(work, "crash.log")
        self.datasets = {}  # id -> (sha of train, sha of eval): uploads that were answered
        self.models = set()  # fine-tunes whose creation was answered
        self.killed_in = collections.Counter()  # the state each kill caught
        self.server = self.start()

    def start(self):
        return tiny_server(self.binary, self.data_dir, self.log, steps=STEPS).start()

    def kill_after(self, delay, observe):
        """Kills the server `delay` seconds from now, noting what `observe()` said just before."""
        def kill():
            try:
                self.killed_in[observe()] += 1
            except requests.RequestException:
                self.killed_in["unknown"] += 1
            self.server.kill()
        timer = threading.Timer(delay, kill)
        timer.start()
        return timer

    def upload(self, api, train, eval_data=None):
        status, body = api.upload(train, eval_data)
        assert status == 200, body
        self.datasets[body["id"]] = (sha(train), sha(eval_data) if eval_data else None)
        return body["id"]

    def finetune(self, api, dataset_id):
        status, body = api.finetune(dataset_id, name="crash", train_epochs=100, early_stopping_patience=0)
        assert status == 200, body
        self.models.add(body["finetuned_model"]["id"])
        return body["finetuned_model"]["id"]

    def crash(self, phase, base_dataset):
        """Does the work of `phase` and kills the server at a random point of it."""
        api = Api(self.server, timeout=30)
        rng = self.rng
        timer = None
        try:
            if phase == "upload":
                train = rows(rng.randrange(500, 3000), padding=rng.randrange(0, 20))
                boundary = "crash-boundary"
                head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"train.jsonl\"\r\n"
                        "\r\n").encode()
                chunks = [head] + [train[i:i + 16384] for i in range(0, len(train), 16384)]
                chunks.append(f"\r\n--{boundary}--\r\n".encode())

                def slowly():  # a client on a slow link, so that the kill lands mid-body
                    for c in chunks:
                        time.sleep(0.004)
                        yield c
                timer = self.kill_after(rng.uniform(0, 0.004 * len(chunks)), lambda: "upload")
                status, created = api.call("POST", "/v1/datasets",
                                           params={"name": "crash", "type": "reranker-finetune-input"},
                                           data=slowly(),
                                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
                if status == 200:  # the kill came after the answer: it was stored
                    self.datasets[created["id"]] = (sha(train), None)
            elif phase == "validation":
                dataset_id = self.upload(api, rows(rng.randrange(1000, 4000)), rows(rng.randrange(8, 200), "deed"))
                timer = self.kill_after(rng.uniform(0, 0.6),
                                        lambda: "validation: " + api.dataset(dataset_id)["validation_status"])
            elif phase == "fine-tuning":
                model_id = self.finetune(api, base_dataset)
                # At a random step, polled closely: a tiny fine-tune is over in about a second.
                step = rng.randrange(1, STEPS - 1)
                wait_for(lambda: api.model(model_id),
                         lambda m: (m.get("progress") or {}).get("step", 0) >= step or m["status"] in TERMINAL,
                         60, 0.002)
                timer = self.kill_after(0, lambda: "fine-tuning: " + api.model(model_id)["status"])
            else:
                model_id = self.finetune(api, base_dataset)
                # Near the end of training: the last evaluation, saving, publishing and loading.
                wait_for(lambda: api.model(model_id),
                         lambda m: (m.get("progress") or {}).get("step", 0) >= STEPS or m["status"] in TERMINAL,
                         60, 0.002)
                timer = self.kill_after(rng.uniform(0, 0.05), lambda: "registration: " + api.model(model_id)["status"])
        except requests.RequestException:
            pass  # the kill cut the request off
        if timer:
            timer.join()
        else:
            self.server.kill()
        self.server = self.start()

    def settle(self):
        """Waits for validations and jobs the restart requeued, then checks everything."""
        api = Api(self.server)
        problems = []
        assert integrity_check(self.data_dir) == ["ok"], integrity_check(self.data_dir)
        for dataset_id, (train_sha, eval_sha) in self.datasets.items():
            d = api.settled_dataset(dataset_id)
            if d["validation_status"] != "validated":
                problems.append(f"dataset {dataset_id}: {d['validation_status']} {d.get('validation_error')}")
            folder = os.path.join(self.data_dir, "uploads", dataset_id)
            with open(os.path.join(folder, "train.jsonl"), "rb") as f:
                if sha(f.read()) != train_sha:
                    problems.append(f"dataset {dataset_id}: train.jsonl is not what was uploaded")
            if eval_sha:
                with open(os.path.join(folder, "eval.jsonl"), "rb") as f:
                    if sha(f.read()) != eval_sha:
                        problems.append(f"dataset {dataset_id}: eval.jsonl is not what was uploaded")
        for model_id in self.models:
            m = api.settled_model(model_id)
            if m["status"] != "STATUS_READY":
                problems.append(f"model {model_id} is {m['status']}: {m.get('failure_reason')!r}")
                continue
            status, body = api.rerank(model=model_id + "-ft")
            if status != 200:
                problems.append(f"READY model {model_id} does not rerank: {status} {body}")
            if not m.get("metrics"):
                problems.append(f"READY model {model_id} has no metrics")
            for e in api.events(model_id):
                if e["status"] == "STATUS_QUEUED" and e.get("message") \
                        and not e["message"].startswith(RESTART_NOTE + "; "):
                    problems.append(f"model {model_id} was requeued with {e['message']!r}")
        listed = {d["id"] for d in api.get("/v1/datasets")[1]["datasets"]}
        problems += disk_layout_problems(self.data_dir, listed)
        staging = os.listdir(os.path.join(self.data_dir, "staging"))
        if staging:
            problems.append(f"staging holds {staging}")
        resume = os.path.join(self.data_dir, "resume")
        states = os.listdir(resume) if os.path.isdir(resume) else []
        if states:
            problems.append(f"training state left for ready models: {states}")
        if not self.datasets.keys() <= listed:
            problems.append(f"answered uploads missing from the list: {self.datasets.keys() - listed}")
        return problems


def main(binary, work):
    checks = Checks("crash")
    kills = 100 if LONG else 24
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(1 << 30)))
    print(f"     crash: {kills} kills, seed {seed} (RELIABILITY_SEED repeats a run)")
    crashes = Crashes(binary, work, seed)
    api = Api(crashes.server)
    base = crashes.upload(api, rows(16), rows(8, "deed"))
    assert api.settled_dataset(base)["validation_status"] == "validated"

    for i in range(kills):
        phase = PHASES[i % len(PHASES)]
        with checks.check(f"kill {i + 1} during {phase}: the store is intact, nothing is lost or stuck"):
            crashes.crash(phase, base)
            problems = crashes.settle()
            assert not problems, problems

    with checks.check("every phase was hit, and jobs killed in training resumed from a saved step"):
        print(f"     crash: the kills caught {dict(sorted(crashes.killed_in.items()))}")
        caught = " ".join(crashes.killed_in)
        for state in ("upload", "validation: processing", "fine-tuning: STATUS_FINETUNING"):
            assert state in caught, f"no kill during {state}"
        api = Api(crashes.server)
        resumed = [m for m in crashes.models
                   if any((e.get("message") or "").startswith("resumed from step ") for e in api.events(m))]
        print(f"     crash: {len(crashes.datasets)} datasets answered, {len(crashes.models)} fine-tunes "
              f"(all ready; {len(resumed)} resumed after a restart)")
        assert resumed, "no fine-tune was interrupted after a saved step"

    with checks.check("a second server on the data dir in use exits at once, naming it and the first's pid"):
        log = os.path.join(work, "second.log")
        try:
            tiny_server(binary, crashes.data_dir, log).start(timeout=60)
            raise AssertionError("a second server started on the same data dir")
        except RuntimeError:
            pass
        text = open(log).read()
        assert f"the data directory {crashes.data_dir} is in use by another finerank serve (pid " \
            f"{crashes.server.proc.pid})" in text, text
        assert api.rerank()[0] == 200 and not crashes.settle(), "the first one goes on, untouched"

    with checks.check("after all that, a new fine-tune trains to READY and SIGTERM stops cleanly"):
        model_id = crashes.finetune(api, base)
        assert api.settled_model(model_id)["status"] == "STATUS_READY"
        assert api.rerank(model=model_id + "-ft")[0] == 200
        assert crashes.server.stop() == 0
        log = open(crashes.log).read()
        assert "panicked" not in log, log[log.find("panicked") - 2000:][:4000]
    checks.finish()


if __name__ == "__main__":
    main(*sys.argv[1:3])
