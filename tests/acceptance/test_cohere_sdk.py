"""Cohere's rerank fine-tuning tutorial, replayed with the official `cohere` SDK against
`finerank serve`: only base_url changes. Then the bad requests a client can send, each of which
must get a 4xx with a clear message.

Usage: test_cohere_sdk.py BINARY DATA_DIR WORK_DIR
  DATA_DIR holds train.jsonl and valid.jsonl (`finerank prepare` of CaseHOLD: 256 and 154 queries).
  WORK_DIR receives the server's data dir, its log, and state.json for test_restart.py.
"""
import json
import os
import sys

import cohere
import requests
from cohere.finetuning import BaseModel, FinetunedModel, Hyperparameters, Settings

from harness import API_KEY, Checks, Server, wait_until

QUERY = "What is the capital of the United States?"
DOCUMENTS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
    "Washington, D.C. (also known as simply Washington or D.C.) is the capital of the United States.",
    "Capital punishment (the death penalty) has existed in the United States since before it was a country.",
]
WASHINGTON = 2
TERMINAL = ("STATUS_READY", "STATUS_FAILED")


def scores(response):
    return [r.relevance_score for r in sorted(response.results, key=lambda r: r.index)]


def main(binary, data, work):
    checks = Checks("cohere sdk")
    server = Server(binary, os.path.join(work, "server"), os.path.join(work, "server.log")).start()
    co = cohere.Client(api_key=API_KEY, base_url=server.url)
    co2 = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    state = {"query": QUERY, "documents": DOCUMENTS}

    with checks.check("1. rerank with the base model, v1 and v2 clients, top_n=1"):
        for client, model in [(co, "rerank-english-v3.0"), (co2, "rerank-v3.5"), (co, "all-MiniLM-L6-v2")]:
            r = client.rerank(model=model, query=QUERY, documents=DOCUMENTS, top_n=1)
            assert [x.index for x in r.results] == [WASHINGTON], r
            assert 0.0 <= r.results[0].relevance_score <= 1.0
            assert r.meta.billed_units.search_units == 1
            # Cohere's names are served by the default model, and the answer says so.
            warnings = r.meta.warnings or []
            if model.startswith("rerank-"):
                assert len(warnings) == 1 and model in warnings[0] and "all-MiniLM-L6-v2" in warnings[0], r.meta
            else:
                assert not warnings, r.meta
        r = co.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCUMENTS, return_documents=True)
        assert r.results[0].document.text == DOCUMENTS[WASHINGTON], r
        state["base_scores"] = scores(co.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCUMENTS))

    with checks.check("2. datasets.create with data and eval_data, wait until validated"):
        with open(os.path.join(data, "train.jsonl"), "rb") as train, open(os.path.join(data, "valid.jsonl"), "rb") as valid:
            created = co.datasets.create(name="casehold", type="reranker-finetune-input", data=train, eval_data=valid)
        dataset = co.wait(created, timeout=120, interval=1).dataset
        assert dataset.validation_status == "validated", dataset
        counts = dataset.metrics.finetune_dataset_metrics.reranker_data_metrics
        assert (counts.num_train_queries, counts.num_eval_queries) == (256, 154), counts
        state["dataset_id"] = dataset.id

    with checks.check("3. create a fine-tuned rerank model and poll until STATUS_READY"):
        settings = Settings(
            base_model=BaseModel(base_type="BASE_TYPE_RERANK", name="english"),
            dataset_id=state["dataset_id"],
            # The run keeps its best checkpoint, which is the base model unless validation improves:
            # these settings improve validation within the server's four steps.
            hyperparameters=Hyperparameters(train_epochs=1, train_batch_size=16, early_stopping_threshold=0.0),
        )
        created = co.finetuning.create_finetuned_model(request=FinetunedModel(name="casehold-ft", settings=settings))
        model_id = created.finetuned_model.id
        assert created.finetuned_model.status == "STATUS_QUEUED", created
        model = wait_until(
            lambda: co.finetuning.get_finetuned_model(model_id).finetuned_model,
            lambda m: m.status in TERMINAL,
            timeout=300,
        )
        assert model.status == "STATUS_READY", model
        # Extra fields beyond Cohere's: the validation metrics against the base model.
        for side in ("base", "finetuned"):
            assert set(model.metrics[side]) == {"accuracy_at_1", "accuracy_at_3", "mrr_at_10", "ndcg_at_10"}, model.metrics
        # These are the validation rows that chose the checkpoint, so a higher MRR there says
        # nothing about unseen queries (held-out gains are measured by the README's evaluation
        # reports, not by four steps here). What must hold is that the metrics say what the run
        # did: the kept checkpoint is never below the base, and `improved` says whether it is a
        # different model at all.
        tuned, base = model.metrics["finetuned"]["mrr_at_10"], model.metrics["base"]["mrr_at_10"]
        assert tuned >= base and model.metrics["improved"] == (tuned > base), model.metrics
        state["model_id"] = model_id

    with checks.check("4. the fine-tuned model answers as <id>-ft, with different scores"):
        for client in (co, co2):
            r = client.rerank(model=state["model_id"] + "-ft", query=QUERY, documents=DOCUMENTS)
            tuned = scores(r)
            assert len(tuned) == len(DOCUMENTS)
            assert max(abs(a - b) for a, b in zip(tuned, state["base_scores"])) > 1e-4, (tuned, state["base_scores"])
        state["ft_scores"] = tuned

    with checks.check("5. list, get, events, training-step metrics, update, models"):
        model_id = state["model_id"]
        listed = co.finetuning.list_finetuned_models(page_size=10)
        assert [m.id for m in listed.finetuned_models] == [model_id] and listed.total_size == 1, listed
        got = co.finetuning.get_finetuned_model(model_id).finetuned_model
        assert got.settings.dataset_id == state["dataset_id"] and got.name == "casehold-ft", got
        events = co.finetuning.list_events(finetuned_model_id=model_id).events
        assert [e.status for e in events] == [
            "STATUS_READY", "STATUS_DEPLOYING_API", "STATUS_FINETUNING", "STATUS_QUEUED"], events
        # Training starts once the data is read and the base model loaded, after the queueing.
        assert events[2].created_at > events[3].created_at, events
        steps = co.finetuning.list_training_step_metrics(finetuned_model_id=model_id).step_metrics
        assert steps[0].step_number == 4 and steps[-1].step_number == 0, steps
        assert {"accuracy_at_1", "mrr_at_10", "ndcg_at_10", "train_loss"} <= set(steps[0].metrics), steps[0]
        renamed = co.finetuning.update_finetuned_model(model_id, name="casehold-ft-v1", settings=got.settings)
        assert renamed.finetuned_model.name == "casehold-ft-v1", renamed
        names = [m.name for m in co.models.list().models]
        assert model_id + "-ft" in names and "all-MiniLM-L6-v2" in names, names
        assert [d.id for d in co.datasets.list().datasets] == [state["dataset_id"]]
        assert co.datasets.get(state["dataset_id"]).dataset.name == "casehold"

    with checks.check("a dataset that fails validation: failed, with the reason, and no fine-tune from it"):
        with open(os.path.join(data, "train.jsonl"), "rb") as f:
            few = b"".join(f.readlines()[:10])
        created = co.datasets.create(name="too-small", type="reranker-finetune-input", data=("small.jsonl", few))
        try:
            co.wait(created, timeout=60, interval=1)
            raise AssertionError("co.wait accepted a failed dataset")
        except Exception as e:  # the SDK raises a bare Exception with the validation error
            assert "at least 256 are required" in str(e), e
        dataset = co.datasets.get(created.id).dataset
        assert dataset.validation_status == "failed" and "small.jsonl" in dataset.validation_error, dataset
        bad = Settings(base_model=BaseModel(base_type="BASE_TYPE_RERANK"), dataset_id=created.id)
        try:
            co.finetuning.create_finetuned_model(request=FinetunedModel(name="nope", settings=bad))
            raise AssertionError("a fine-tune was created from a failed dataset")
        except cohere.BadRequestError as e:
            assert "failed validation" in e.body["message"], e.body
        co.datasets.delete(created.id)

    with checks.check("an unknown model: 404 through the SDK"):
        try:
            co.rerank(model="no-such-model", query=QUERY, documents=DOCUMENTS)
            raise AssertionError("an unknown model was accepted")
        except cohere.NotFoundError as e:
            assert "not found" in e.body["message"], e.body

    auth = {"Authorization": f"Bearer {API_KEY}"}
    bad_requests = [
        ("missing query", {"documents": ["a"]}, 422, "missing field `query`"),
        ("empty documents", {"query": "q", "documents": []}, 400, "documents is empty"),
        ("10,001 documents", {"query": "q", "documents": ["d"] * 10_001}, 400, "too many documents: 10001"),
        ("a wrong type", {"query": "q", "documents": [1, 2]}, 422, "documents[0]"),
        ("an unknown model", {"query": "q", "documents": ["a"], "model": "nope"}, 404, "not found"),
    ]
    for name, body, status, text in bad_requests:
        with checks.check(f"bad request: {name} -> {status}"):
            r = requests.post(server.url + "/v1/rerank", json=body, headers=auth, timeout=60)
            assert r.status_code == status and text in r.json()["message"], (r.status_code, r.text)
    raw_requests = [
        ("a malformed JSON body", b'{"query": "q", "documents": [', 400, "malformed JSON body"),
        ("an oversized body", b'{"query": "' + b"x" * 5_000_000 + b'"}', 413, "--max-body-bytes"),
    ]
    for name, body, status, text in raw_requests:
        with checks.check(f"bad request: {name} -> {status}"):
            r = requests.post(server.url + "/v2/rerank", data=body, headers=auth, timeout=60)
            assert r.status_code == status and text in r.json()["message"], (r.status_code, r.text)
    with checks.check("keys: 401 without one or with a wrong one, /health open"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = requests.get(server.url + "/v1/models", headers=headers, timeout=10)
            assert r.status_code == 401 and r.json()["message"], r.text
        assert requests.get(server.url + "/health", timeout=10).status_code == 200

    with checks.check("TEI /info, /rerank and its errors, /metrics, and /openapi.json and /docs without a key"):
        info = requests.get(server.url + "/info", headers=auth, timeout=10).json()
        assert info["model_id"] == "all-MiniLM-L6-v2" and info["model_type"] == {"embedding": {"pooling": "mean"}}, info
        assert info["max_input_length"] > 0 and info["max_client_batch_size"] == 10_000, info
        r = requests.post(server.url + "/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True},
                          headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()[0] == {
            "index": WASHINGTON, "score": r.json()[0]["score"], "text": DOCUMENTS[WASHINGTON]}, r.text
        r = requests.post(server.url + "/rerank", json={"query": QUERY}, headers=auth, timeout=60)
        assert r.status_code == 422 and r.json()["error_type"] == "Validation" and r.json()["error"], r.text
        for path in ("/openapi.json", "/docs"):
            assert requests.get(server.url + path, timeout=10).status_code == 200, path
        metrics = requests.get(server.url + "/metrics", headers=auth, timeout=10).text
        assert 'finerank_finetuned_models{status="STATUS_READY"} 1' in metrics, metrics
        assert "/v1/finetuning/finetuned-models/{id}/events" in server.get("/openapi.json")["paths"]

    with open(os.path.join(work, "state.json"), "w") as f:
        json.dump(state, f)
    with checks.check("SIGTERM stops the server cleanly"):
        assert server.stop() == 0
    checks.finish()


if __name__ == "__main__":
    main(*sys.argv[1:4])
