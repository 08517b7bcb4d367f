"""The restart test: SIGKILL `finerank serve` in the middle of a fine-tune, start it again on the
same data dir, and the job goes back to the queue with a note that says so (at once on SQLite,
which the server holds alone; on PostgreSQL when the dead server's lease expires) and trains to
STATUS_READY, while the dataset and the model trained by test_cohere_sdk.py are intact and the
model answers exactly as before. (crates/server/tests/jobs.rs and tests/reliability/test_crash.py
check that a run resumes from the step it saved.)

Usage: test_restart.py BINARY WORK_DIR (after test_cohere_sdk.py left WORK_DIR/state.json).
"""
import json
import os
import sys

import cohere
from cohere.finetuning import BaseModel, FinetunedModel, Hyperparameters, Settings

from harness import API_KEY, Checks, Server, wait_until

# SQLite's note, and PostgreSQL's, which names the claim whose lease expired.
REQUEUE_NOTES = ("interrupted by a server restart; ", "its worker's lease expired (")


def main(binary, work):
    with open(os.path.join(work, "state.json")) as f:
        state = json.load(f)
    checks = Checks("restart")
    data_dir, log = os.path.join(work, "server"), os.path.join(work, "server.log")

    server = Server(binary, data_dir, log).start()
    co = cohere.Client(api_key=API_KEY, base_url=server.url)
    with checks.check("a fine-tune is running, then the server is killed with SIGKILL"):
        settings = Settings(
            base_model=BaseModel(base_type="BASE_TYPE_RERANK"),
            dataset_id=state["dataset_id"],
            hyperparameters=Hyperparameters(train_epochs=1, train_batch_size=16),
        )
        killed_id = co.finetuning.create_finetuned_model(
            request=FinetunedModel(name="killed", settings=settings)).finetuned_model.id
        # Killed after its first optimizer step, well before its last.
        wait_until(lambda: co.finetuning.get_finetuned_model(killed_id).finetuned_model,
                   lambda m: (getattr(m, "progress", None) or {}).get("step", 0) >= 1, timeout=120, interval=0.5)
        server.kill()

    server = Server(binary, data_dir, log).start()
    co = cohere.Client(api_key=API_KEY, base_url=server.url)
    with checks.check("after the restart the job is queued again, says why, and trains to STATUS_READY"):
        model = wait_until(lambda: co.finetuning.get_finetuned_model(killed_id).finetuned_model,
                           lambda m: m.status in ("STATUS_READY", "STATUS_FAILED"), timeout=300, interval=1)
        assert model.status == "STATUS_READY", model
        events = co.finetuning.list_events(finetuned_model_id=killed_id).events
        assert [e.status for e in events] == ["STATUS_READY", "STATUS_DEPLOYING_API", "STATUS_FINETUNING",
                                              "STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_QUEUED"], events
        assert events[3].message.startswith(REQUEUE_NOTES), events[3]
        r = co.rerank(model=killed_id + "-ft", query=state["query"], documents=state["documents"])
        assert len(r.results) == len(state["documents"]), r

    with checks.check("the dataset and the earlier model are intact, and it answers as before"):
        dataset = co.datasets.get(state["dataset_id"]).dataset
        assert dataset.validation_status == "validated", dataset
        model = co.finetuning.get_finetuned_model(state["model_id"]).finetuned_model
        assert model.status == "STATUS_READY" and model.name == "casehold-ft-v1", model
        assert len(co.finetuning.list_events(finetuned_model_id=state["model_id"]).events) == 4
        assert co.finetuning.list_training_step_metrics(finetuned_model_id=state["model_id"]).step_metrics
        r = co.rerank(model=state["model_id"] + "-ft", query=state["query"], documents=state["documents"])
        tuned = [x.relevance_score for x in sorted(r.results, key=lambda x: x.index)]
        assert max(abs(a - b) for a, b in zip(tuned, state["ft_scores"])) < 1e-5, (tuned, state["ft_scores"])
        listed = co.finetuning.list_finetuned_models()
        assert sorted(m.id for m in listed.finetuned_models) == sorted([state["model_id"], killed_id]), listed

    with checks.check("SIGTERM stops the server cleanly"):
        assert server.stop() == 0
    checks.finish()


if __name__ == "__main__":
    main(*sys.argv[1:3])
