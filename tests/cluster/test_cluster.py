"""The multi-process test: PostgreSQL, two serving replicas (`serve --training-workers 0`) and two
CPU training workers (`finerank worker`), sharing a `file://` store, on the tiny model.

A dataset uploaded through replica A is fine-tuned on whichever worker claims the job; that worker
is SIGKILLed after the run saved its state, and the other resumes the job from the shared store
to STATUS_READY; the `-ft` model reranks through replica B. Replica A is SIGKILLed while both take
requests: B keeps answering, and the job queued through A just before is trained all the same. A
cancel through B pauses a job running on a worker, which stops it at its next heartbeat, and a
retry resumes it to STATUS_READY. Everything ends on SIGTERM, cleanly.

Usage (under scripts/postgres.sh): test_cluster.py BINARY WORK_DIR
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

from harness import Checks, Server
from common import Api, rows, tiny_flags, wait_for

LEASE = "2s"
# 400 rows in batches of 4: 100 steps an epoch, on a model whose steps take milliseconds. A run
# of LONG_RUN epochs saves its state at steps 100, 200 and 300, which leaves time to kill its
# worker after the first save, or to cancel it, before it ends.
STEPS = 1000
LONG_RUN = 4
LEASE_NOTE = "its worker's lease expired ("


class Worker:
    """`finerank worker` over `data_dir`, with `flags`, logging to `log`."""

    def __init__(self, binary, data_dir, log, flags):
        self.binary, self.data_dir, self.log_path, self.flags = binary, data_dir, log, flags
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINERANK_")}
        env["FINERANK_DATABASE_URL"] = os.environ["FINERANK_TEST_DATABASE_URL"]
        cmd = [self.binary, "--device", "cpu", "worker", "--data-dir", self.data_dir, *self.flags]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        return self

    def has_state(self, model):
        return os.path.isdir(os.path.join(self.data_dir, "resume", model))

    def log(self):
        with open(self.log_path) as f:
            return f.read()


def step_of(note):
    found = re.search(r"resumes from step (\d+)", note or "")
    return int(found.group(1)) if found else None


def main(binary, work):
    checks = Checks("cluster")
    shared = os.path.join(work, "shared")
    os.makedirs(shared)
    common = ["--store", "file://" + shared, "--job-lease", LEASE]
    replica_flags = tiny_flags(*common, "--training-workers", "0", steps=STEPS)
    workers = [Worker(binary, os.path.join(work, f"worker-{i}"), os.path.join(work, f"worker-{i}.log"),
                      tiny_flags(*common, "--training-threads", "1", steps=STEPS)).start() for i in (1, 2)]
    a = Server(binary, os.path.join(work, "a"), os.path.join(work, "a.log"), flags=replica_flags).start()
    b = Server(binary, os.path.join(work, "b"), os.path.join(work, "b.log"), flags=replica_flags).start()
    api_a, api_b = Api(a), Api(b)
    state = {}

    with checks.check("a dataset uploaded through replica A is validated, and seen through B"):
        status, body = api_a.upload(rows(400))
        assert status == 200, (status, body)
        state["dataset"] = body["id"]
        dataset = api_b.settled_dataset(body["id"])
        assert dataset["validation_status"] == "validated", dataset

    with checks.check("a worker SIGKILLed mid-training: the other resumes the job from the shared store to READY"):
        status, body = api_a.finetune(state["dataset"], train_batch_size=4, train_epochs=LONG_RUN)
        assert status == 200, (status, body)
        job = body["finetuned_model"]["id"]
        model = state["model"] = job + "-ft"
        saved = os.path.join(shared, "resume", model, "state.json")
        wait_for(lambda: os.path.isfile(saved), bool, timeout=120, interval=0.01)
        trainer = next(w for w in workers if w.has_state(model))
        trainer.proc.send_signal(signal.SIGKILL)
        trainer.proc.wait()
        workers.remove(trainer)
        killed_at = api_b.model(job)
        assert killed_at["status"] == "STATUS_FINETUNING", f"trained before the kill; lengthen the run: {killed_at}"
        ready = api_b.settled_model(job, timeout=180)
        assert ready["status"] == "STATUS_READY", ready
        events = api_b.events(job)
        requeued = [e for e in events if e["status"] == "STATUS_QUEUED" and e.get("message")]
        assert len(requeued) == 1 and requeued[0]["message"].startswith(LEASE_NOTE), events
        step = step_of(requeued[0]["message"])
        assert step and step > 0, events
        resumed = [e for e in events if e["status"] == "STATUS_FINETUNING"]
        assert resumed[-1].get("message") == f"resumed from step {step}", events
        assert not os.path.exists(os.path.join(shared, "resume", model)), "a ready job left its state in the store"

    with checks.check("the -ft model reranks through replica B"):
        status, body = api_b.rerank(model=state["model"])
        assert status == 200 and len(body["results"]) == 2, (status, body)

    with checks.check("replica A SIGKILLed under load: B keeps answering, and the job queued through A trains"):
        status, body = api_a.finetune(state["dataset"], name="after-a", train_batch_size=4)
        assert status == 200, (status, body)
        queued = body["finetuned_model"]["id"]
        answers, stop = {"a": [], "b": []}, threading.Event()

        def load(api, name):
            while not stop.is_set():
                try:
                    answers[name].append(api.rerank(model=state["model"])[0])
                except Exception as e:  # noqa: BLE001 - a killed replica refuses connections
                    answers[name].append(type(e).__name__)
        threads = [threading.Thread(target=load, args=(Api(s), n)) for s, n in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        time.sleep(1)
        a.kill()
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        assert answers["b"] and set(answers["b"]) == {200}, sorted(set(map(str, answers["b"])))
        assert 200 in answers["a"], sorted(set(map(str, answers["a"])))
        ready = api_b.settled_model(queued, timeout=180)
        assert ready["status"] == "STATUS_READY", ready
        status, listed = api_b.get("/v1/finetuning/finetuned-models")
        assert {m["id"] for m in listed["finetuned_models"]} == {state["model"][:-3], queued}, listed

    with checks.check("a cancel through B pauses a job running on a worker, which stops it; a retry resumes it"):
        status, body = api_b.finetune(state["dataset"], name="cancelled", train_batch_size=4,
                                      train_epochs=LONG_RUN)
        assert status == 200, (status, body)
        job = body["finetuned_model"]["id"]
        wait_for(lambda: api_b.model(job), lambda m: (m.get("progress") or {}).get("step", 0) >= 1, timeout=120)
        status, body = api_b.post(f"/v1/finetuning/finetuned-models/{job}/cancel")
        assert status == 200 and body["finetuned_model"]["status"] == "STATUS_PAUSED", (status, body)
        wait_for(lambda: workers[0].log(), lambda log: "no longer this worker's" in log, timeout=10, interval=0.2)
        assert api_b.model(job)["status"] == "STATUS_PAUSED"
        status, body = api_b.post(f"/v1/finetuning/finetuned-models/{job}/cancel")
        assert status == 409, (status, body)
        status, body = api_b.post(f"/v1/finetuning/finetuned-models/{job}/retry")
        assert status == 200, (status, body)
        ready = api_b.settled_model(job, timeout=180)
        assert ready["status"] == "STATUS_READY", ready

    with checks.check("SIGTERM stops the worker and replica B cleanly"):
        for w in workers:
            w.proc.send_signal(signal.SIGTERM)
            assert w.proc.wait(timeout=60) == 0, w.log()[-2000:]
        assert b.stop() == 0
    checks.finish()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
