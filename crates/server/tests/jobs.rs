//! Datasets and fine-tuning end to end on the tiny model: upload, background validation, a job
//! from queue to ready, the model answering as `<id>-ft`, and what a restart leaves behind.
mod common;

use std::path::Path;

use common::{finetuned, message, rerank, settings, until, validated, Server, QUICK};
use reqwest::multipart::{Form, Part};
use serde_json::json;

fn rows(n: usize, offset: usize) -> String {
    (offset..offset + n)
        .map(|i| {
            json!({
                "query": format!("what does clause {i} of the lease say about rent"),
                "relevant_passages": [format!("Clause {i} sets the rent and when it is due.")],
                "hard_negatives": [format!("Clause {} covers pets.", i + 1000), format!("Clause {} covers parking.", i + 2000)],
            })
            .to_string()
                + "\n"
        })
        .collect()
}

fn form(train: String, eval: Option<String>) -> Form {
    let form = Form::new().part("data", Part::text(train).file_name("my train.jsonl"));
    match eval {
        Some(eval) => form.part("eval_data", Part::text(eval).file_name("eval.jsonl")),
        None => form,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fine_tune_goes_from_queued_to_ready_and_answers_as_id_ft() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let dataset = validated(&s, "", form(rows(20, 0), Some(rows(8, 100)))).await;
    assert_eq!(dataset["validation_status"], "validated", "{dataset}");
    let metrics = &dataset["metrics"]["finetune_dataset_metrics"];
    assert_eq!(metrics["reranker_data_metrics"]["num_train_queries"], 20);
    assert_eq!(
        metrics["reranker_data_metrics"]["num_eval_hard_negatives"],
        16
    );
    assert_eq!(dataset["dataset_parts"][0]["name"], "my train.jsonl");
    assert_eq!(
        dataset["review"]["train"]["file"], "my train.jsonl",
        "no server path in the review"
    );
    assert_eq!(
        dataset["review"]["max_len"], 64,
        "the window the lengths were measured against (--train-max-length)"
    );
    let dataset_id = dataset["id"].as_str().unwrap();

    // What the dashboard's form shows: defaults for this model kind and data size, and ranges.
    let (status, hyper) = s
        .get(&format!(
            "/v1/finetuning/hyperparameters?dataset_id={dataset_id}"
        ))
        .await;
    assert_eq!(status, 200, "{hyper}");
    assert_eq!(hyper["kind"], "cross-encoder");
    assert_eq!(hyper["train_rows"], 20);
    let field = |name: &str| {
        hyper["hyperparameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {hyper}"))
            .clone()
    };
    assert_eq!(field("train_epochs")["default"], 4.0);
    assert_eq!(field("train_epochs")["maximum"], 100.0);
    assert_eq!(field("learning_rate")["default"], 3e-5);
    assert_eq!(field("learning_rate")["exclusive_minimum"], true);
    assert!(field("early_stopping_patience")["maximum"].is_null());

    let (id, ready) = finetuned(&s, dataset_id).await;
    let path = format!("/v1/finetuning/finetuned-models/{id}");
    assert_eq!(ready["status"], "STATUS_READY", "{ready}");
    for metric in ["accuracy_at_1", "accuracy_at_3", "mrr_at_10", "ndcg_at_10"] {
        assert!(ready["metrics"]["base"][metric].is_f64(), "{ready}");
        assert!(ready["metrics"]["finetuned"][metric].is_f64(), "{ready}");
    }
    let (status, tuned) = rerank(&s, &format!("{id}-ft")).await;
    assert_eq!(status, 200, "{tuned}");
    let (_, base) = rerank(&s, "").await;
    // The model kept is the best checkpoint on validation, which is the base model itself when
    // no step improved on it; the metrics say which.
    let improved = ready["metrics"]["improved"].as_bool().unwrap();
    assert_eq!(
        improved,
        ready["metrics"]["best_step"].as_u64().unwrap() > 0,
        "{ready}"
    );
    assert_eq!(
        tuned["results"] != base["results"],
        improved,
        "{tuned} vs {base}"
    );

    let (_, events) = s.get(&format!("{path}/events?order_by=created_at")).await;
    let statuses: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "STATUS_QUEUED",
            "STATUS_FINETUNING",
            "STATUS_DEPLOYING_API",
            "STATUS_READY"
        ]
    );
    let (_, losses) = s.get(&format!("{path}/training-losses")).await;
    let steps: Vec<u64> = losses["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(l["loss"].is_f64(), "{l}");
            l["step_number"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2], "every step's loss, in order");
    let (_, later) = s.get(&format!("{path}/training-losses?after_step=1")).await;
    assert_eq!(later["losses"].as_array().unwrap().len(), 1, "{later}");
    let (_, steps) = s.get(&format!("{path}/training-step-metrics")).await;
    let steps = steps["step_metrics"].as_array().unwrap();
    assert_eq!(
        steps.first().unwrap()["step_number"],
        2,
        "most recent first"
    );
    assert_eq!(
        steps.last().unwrap()["step_number"],
        0,
        "the base model's evaluation"
    );
    assert!(steps[0]["metrics"]["train_loss"].is_f64());

    // Listing pages, renaming, and settings that can no longer change.
    s.post(
        "/v1/finetuning/finetuned-models",
        &json!({"name": "second", "settings": settings(dataset_id)}),
    )
    .await;
    let (_, page) = s.get("/v1/finetuning/finetuned-models?page_size=1").await;
    assert_eq!(page["total_size"], 2);
    assert_eq!(
        page["finetuned_models"][0]["id"],
        id.as_str(),
        "oldest first"
    );
    let (_, next) = s
        .get(&format!(
            "/v1/finetuning/finetuned-models?page_size=1&page_token={}",
            page["next_page_token"].as_str().unwrap()
        ))
        .await;
    assert_eq!(next["finetuned_models"][0]["name"], "second");
    assert_eq!(next["next_page_token"], "");
    let (status, renamed) = s
        .patch(
            &path,
            &json!({"name": "lease v1", "settings": ready["settings"]}),
        )
        .await;
    assert_eq!(
        (status, renamed["finetuned_model"]["name"].as_str()),
        (200, Some("lease v1")),
        "{renamed}"
    );
    let mut changed = ready["settings"].clone();
    changed["hyperparameters"]["train_epochs"] = json!(3);
    let (status, body) = s
        .patch(&path, &json!({"name": "x", "settings": changed}))
        .await;
    assert_eq!(status, 400);
    assert!(
        message(&body).contains("only while STATUS_QUEUED"),
        "{body}"
    );

    let (status, body) = s.get("/v1/models").await;
    assert_eq!(status, 200);
    assert!(body["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == format!("{id}-ft").as_str() && m["finetuned"] == true));

    assert_eq!(s.delete(&path).await.0, 200);
    assert_eq!(s.get(&path).await.0, 404);
    assert_eq!(
        rerank(&s, &format!("{id}-ft")).await.0,
        404,
        "a deleted model stops answering at once"
    );
    s.stop().await;
}

/// `"export": "adapter"` with LoRA registers a PEFT adapter directory, which the server then
/// serves over its base; the model's recorded settings say what was exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lora_job_can_register_its_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let dataset = validated(&s, "", form(rows(20, 0), Some(rows(8, 100)))).await;
    let mut settings = settings(dataset["id"].as_str().unwrap());
    settings["hyperparameters"]["lora_rank"] = 4.into();
    settings["hyperparameters"]["export"] = "adapter".into();
    let body = json!({"name": "adapter", "settings": settings});
    let (status, created) = s.post("/v1/finetuning/finetuned-models", &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["finetuned_model"]["id"].as_str().unwrap();
    let path = format!("/v1/finetuning/finetuned-models/{id}");
    let ready = until(&s, &path, |b| {
        matches!(
            b["finetuned_model"]["status"].as_str(),
            Some("STATUS_READY" | "STATUS_FAILED")
        )
    })
    .await["finetuned_model"]
        .clone();
    assert_eq!(ready["status"], "STATUS_READY", "{ready}");
    assert_eq!(ready["metrics"]["hyperparameters"]["export"], "adapter");
    assert_eq!(ready["settings"]["hyperparameters"]["export"], "adapter");
    let saved = dir.path().join("models").join(format!("{id}-ft"));
    assert!(saved.join("adapter_config.json").is_file());
    assert!(!saved.join("model.safetensors").exists(), "not merged");
    let (status, ranked) = rerank(&s, &format!("{id}-ft")).await;
    assert_eq!(status, 200, "{ranked}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datasets_and_settings_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--max-upload-bytes", "20000", "--min-train-queries", "16"],
    )
    .await;
    let failed = validated(
        &s,
        "",
        form(rows(5, 0) + "{\"query\": \"no passages\"}\n", None),
    )
    .await;
    assert_eq!(failed["validation_status"], "failed");
    let error = failed["validation_error"].as_str().unwrap();
    assert!(
        error.contains("my train.jsonl:6"),
        "names the file and line: {error}"
    );
    assert!(error.contains("at least 16 are required"), "{error}");
    assert!(
        !error.contains(&dir.path().display().to_string()),
        "no server paths: {error}"
    );

    let failed_id = failed["id"].as_str().unwrap();
    let cases = [
        (
            json!({"name": "x", "settings": settings(failed_id)}),
            "failed validation",
        ),
        (
            json!({"name": "x", "settings": settings("nope")}),
            "no dataset with id \"nope\"",
        ),
        (
            json!({"name": "", "settings": settings(failed_id)}),
            "name is empty",
        ),
        (
            json!({"name": "x", "settings": {"base_model": {"base_type": "BASE_TYPE_CHAT"}, "dataset_id": failed_id}}),
            "BASE_TYPE_RERANK",
        ),
        (
            json!({"name": "x", "settings": {"base_model": {"base_type": "BASE_TYPE_RERANK", "name": "/etc"}, "dataset_id": failed_id}}),
            "base_model.name",
        ),
        (
            json!({"name": "x", "settings": {"base_model": {"base_type": "BASE_TYPE_RERANK"}, "dataset_id": failed_id,
                                             "hyperparameters": {"train_batch_size": 1}}}),
            "train_batch_size must be 2..=1024",
        ),
    ];
    let hyper = |h: serde_json::Value| {
        json!({"name": "x", "settings": {"base_model": {"base_type": "BASE_TYPE_RERANK"},
                                         "dataset_id": failed_id, "hyperparameters": h}})
    };
    let cases = cases.into_iter().chain([
        (
            hyper(json!({"lora_rank": 1000})),
            "hyperparameters: lora_rank must be 0..=256, got 1000",
        ),
        (
            hyper(json!({"lora_rank": 8, "lora_dropout": 1.5})),
            "lora_dropout must be in [0, 0.9]",
        ),
        (
            hyper(json!({"lora_alpha": 32})),
            "need a lora_rank of at least 1",
        ),
        (
            hyper(json!({"lora_rank": 8, "lora_target_modules": "LORA_TARGET_MODULES_QV"})),
            "name the modules instead",
        ),
        (
            hyper(json!({"lora_rank": 8, "frozen_layers": 2})),
            "frozen_layers is for full fine-tuning",
        ),
        (
            hyper(json!({"export": "adapter"})),
            "an adapter export needs LoRA adapters to export: set lora_rank",
        ),
    ]);
    for (body, text) in cases {
        let (status, got) = s.post("/v1/finetuning/finetuned-models", &body).await;
        assert_eq!(status, 400, "{body}: {got}");
        assert!(message(&got).contains(text), "{body}: {got}");
    }
    for (query, text) in [
        (format!("dataset_id={failed_id}"), "failed validation"),
        (
            format!("dataset_id={failed_id}&base_model=nope"),
            "base_model",
        ),
        (String::new(), "dataset_id"),
    ] {
        let (status, got) = s
            .get(&format!("/v1/finetuning/hyperparameters?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {got}");
        assert!(message(&got).contains(text), "{query}: {got}");
    }

    let to = |query: &str| s.client.post(s.at(&format!("/v1/datasets?{query}")));
    let ok = "name=a&type=reranker-finetune-input";
    let uploads: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            to("type=reranker-finetune-input").multipart(form(rows(1, 0), None)),
            400,
            "`name` is required",
        ),
        (
            to("name=a&type=embed-input").multipart(form(rows(1, 0), None)),
            400,
            "not supported",
        ),
        (
            to(ok).multipart(Form::new().text("eval_data", rows(1, 0))),
            400,
            "`data` (the training file, JSONL) is missing",
        ),
        (
            to(ok).multipart(form(rows(1, 0), None).text("../x", "y")),
            400,
            "unexpected multipart field",
        ),
        (
            to(ok).multipart(form(rows(200, 0), None)),
            413,
            "--max-upload-bytes",
        ),
        (to(ok).body("not multipart"), 400, "multipart"),
    ];
    for (req, want, text) in uploads {
        let (status, got) = s.send(req).await;
        assert_eq!(status, want, "{got}");
        assert!(message(&got).contains(text), "{got}");
    }
    let (_, list) = s.get("/v1/datasets").await;
    assert_eq!(
        list["datasets"].as_array().unwrap().len(),
        1,
        "refused uploads leave nothing: {list}"
    );
    let leftovers = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 1, "and no files");
    assert_eq!(s.get("/v1/datasets/..%2F..%2Fetc").await.0, 404);
    assert_eq!(s.delete(&format!("/v1/datasets/{failed_id}")).await.0, 200);
    assert_eq!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    s.stop().await;
}

fn job_state(data_dir: &Path, id: &str) -> (String, Option<String>) {
    let db = rusqlite::Connection::open(data_dir.join("finerank.db")).unwrap();
    db.query_row(
        "SELECT status, failure_reason FROM finetuned_models WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Marks a job as running, as a process killed mid-training leaves it.
fn leave_running(data_dir: &Path, id: &str) {
    let db = rusqlite::Connection::open(data_dir.join("finerank.db")).unwrap();
    db.execute(
        "UPDATE finetuned_models SET status = 'STATUS_FINETUNING' WHERE id = ?1",
        [id],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_everything_is_there_and_no_job_is_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let dataset = validated(&s, "", form(rows(20, 0), None)).await;
    let dataset_id = dataset["id"].as_str().unwrap().to_string();
    let (_, created) = s
        .post(
            "/v1/finetuning/finetuned-models",
            &json!({"name": "a", "settings": settings(&dataset_id)}),
        )
        .await;
    let ready_id = created["finetuned_model"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/finetuning/finetuned-models/{ready_id}");
    let ready_before = until(&s, &path, |b| {
        b["finetuned_model"]["status"] == "STATUS_READY"
    })
    .await;
    let (_, before) = rerank(&s, &format!("{ready_id}-ft")).await;
    s.stop().await;

    // A long job, stopped by a shutdown after it saved its state at a validation.
    const LONG: &[&str] = &["--min-train-queries", "16"];
    let s = Server::start(dir.path(), LONG).await;
    let long = json!({"base_model": {"base_type": "BASE_TYPE_RERANK"}, "dataset_id": dataset_id,
                      "hyperparameters": {"train_epochs": 100, "train_batch_size": 2}});
    let (_, created) = s
        .post(
            "/v1/finetuning/finetuned-models",
            &json!({"name": "b", "settings": long}),
        )
        .await;
    let killed_id = created["finetuned_model"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = format!("/v1/finetuning/finetuned-models/{killed_id}");
    until(&s, &format!("{job}/training-step-metrics"), |b| {
        b["step_metrics"].as_array().is_some_and(|m| m.len() >= 2)
    })
    .await;
    let (status, body) = rerank(&s, &format!("{killed_id}-ft")).await;
    assert_eq!(status, 404);
    assert!(
        message(&body).contains("it answers once STATUS_READY (now STATUS_FINETUNING)"),
        "{body}"
    );
    let (status, body) = s.delete(&format!("/v1/datasets/{dataset_id}")).await;
    assert_eq!(status, 409, "a running job needs its dataset: {body}");
    assert!(message(&body).contains(&killed_id), "{body}");
    let (status, body) = s.post(&format!("{job}/retry"), &json!({})).await;
    assert_eq!(status, 409, "only a failed job can be retried: {body}");
    s.stop().await;
    assert_eq!(
        job_state(dir.path(), &killed_id),
        ("STATUS_QUEUED".into(), None)
    );

    // The next start resumes it from its last validation.
    let s = Server::start(dir.path(), LONG).await;
    let events = until(&s, &format!("{job}/events"), |b| {
        b["events"][0]["status"] == "STATUS_FINETUNING"
    })
    .await;
    let queued = events["events"][1]["message"].as_str().unwrap();
    let step = queued
        .strip_prefix("the server shut down during training; resumes from step ")
        .and_then(|rest| rest.strip_suffix(" at the next start"))
        .unwrap_or_else(|| panic!("{events}"));
    assert_ne!(step, "0", "{events}");
    assert_eq!(
        events["events"][0]["message"],
        format!("resumed from step {step}"),
        "{events}"
    );
    s.stop().await;

    // A process killed while the job trained leaves it running. Started again with other
    // training flags, the saved state is not this run's: the job fails and says how to go on.
    leave_running(dir.path(), &killed_id);
    // A process killed after publishing a model but before storing its metrics (the registry
    // has them): the job comes back ready, with them.
    leave_running(dir.path(), &ready_id);
    rusqlite::Connection::open(dir.path().join("finerank.db"))
        .unwrap()
        .execute(
            "UPDATE finetuned_models SET metrics = NULL WHERE id = ?1",
            [&ready_id],
        )
        .unwrap();

    let s = Server::start(dir.path(), QUICK).await;
    let failed = until(&s, &job, |b| {
        b["finetuned_model"]["status"] == "STATUS_FAILED"
    })
    .await;
    let reason = failed["finetuned_model"]["failure_reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("max_steps"), "{reason}");
    assert!(reason.contains("from_scratch=true"), "{reason}");
    let (_, events) = s.get(&format!("{job}/events?order_by=created_at")).await;
    let all = events["events"].as_array().unwrap();
    let requeued = &all[all.len() - 2];
    assert_eq!(requeued["status"], "STATUS_QUEUED", "{events}");
    let note = requeued["message"].as_str().unwrap();
    assert!(note.starts_with(finerank_server::RESTART_NOTE), "{note}");
    assert!(note.contains("resumes from step"), "{note}");
    // Retried from scratch, it trains to the end under these flags.
    let (status, retried) = s
        .post(&format!("{job}/retry?from_scratch=true"), &json!({}))
        .await;
    assert_eq!(status, 200, "{retried}");
    // Queued, or already taken by the idle worker.
    assert_ne!(
        retried["finetuned_model"]["status"], "STATUS_FAILED",
        "{retried}"
    );
    assert!(
        retried["finetuned_model"]["failure_reason"].is_null(),
        "{retried}"
    );
    until(&s, &job, |b| {
        b["finetuned_model"]["status"] == "STATUS_READY"
    })
    .await;
    let resume_state = dir.path().join("resume").join(format!("{killed_id}-ft"));
    assert!(
        !resume_state.exists(),
        "a ready job keeps no training state"
    );

    let (_, dataset_after) = s.get(&format!("/v1/datasets/{dataset_id}")).await;
    assert_eq!(dataset_after["dataset"]["validation_status"], "validated");
    let (_, ready) = s.get(&path).await;
    assert_eq!(ready["finetuned_model"]["status"], "STATUS_READY");
    assert_eq!(
        ready["finetuned_model"]["metrics"],
        ready_before["finetuned_model"]["metrics"]
    );
    let (status, after) = rerank(&s, &format!("{ready_id}-ft")).await;
    assert_eq!(status, 200);
    assert_eq!(
        after["results"], before["results"],
        "the model answers as before"
    );
    s.stop().await;
}

/// Offsets come from clients: however large, they are past the end of every list, never wrapped
/// into negative numbers (which SQLite reads as "from the start") nor overflowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_page_tokens_and_offsets_are_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let dataset = validated(&s, "", form(rows(20, 0), None)).await;
    let dataset_id = dataset["id"].as_str().unwrap();
    let (_, created) = s
        .post(
            "/v1/finetuning/finetuned-models",
            &json!({"name": "a", "settings": settings(dataset_id)}),
        )
        .await;
    let id = created["finetuned_model"]["id"].as_str().unwrap();
    until(&s, &format!("/v1/finetuning/finetuned-models/{id}"), |b| {
        b["finetuned_model"]["status"] == "STATUS_READY"
    })
    .await;
    let max = u64::MAX;
    let wraps = 1u64 << 63; // negative once cast to SQLite's i64
    let jobs = "/v1/finetuning/finetuned-models";
    for (path, list) in [
        (format!("/v1/models?page_token={max}"), "models"),
        (format!("{jobs}?page_token={max}"), "finetuned_models"),
        (format!("{jobs}?page_token={wraps}"), "finetuned_models"),
        (format!("{jobs}/{id}/events?page_token={max}"), "events"),
        (format!("{jobs}/{id}/events?page_token={wraps}"), "events"),
        (
            format!("{jobs}/{id}/training-step-metrics?page_token={wraps}"),
            "step_metrics",
        ),
        (
            format!("{jobs}/{id}/training-losses?after_step={wraps}"),
            "losses",
        ),
        ("/v1/datasets?offset=1e19".into(), "datasets"),
        ("/v1/datasets?offset=1e300".into(), "datasets"),
    ] {
        let (status, body) = s.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body[list], json!([]), "{path}: {body}");
    }
    let (_, body) = s.get("/v1/datasets?limit=1e19").await;
    assert_eq!(
        body["datasets"].as_array().unwrap().len(),
        1,
        "a huge limit is no limit"
    );
    s.stop().await;
}

/// A second server on a data directory in use stops before it touches anything: it would take
/// the first one's running jobs for ones a crash left, and fail them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_refuses_to_start_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--min-train-queries", "16"]).await;
    let dataset = validated(&s, "", form(rows(20, 0), None)).await;
    let long = json!({"base_model": {"base_type": "BASE_TYPE_RERANK"}, "dataset_id": dataset["id"],
                      "hyperparameters": {"train_epochs": 100, "train_batch_size": 2}});
    let (_, created) = s
        .post(
            "/v1/finetuning/finetuned-models",
            &json!({"name": "running", "settings": long}),
        )
        .await;
    let id = created["finetuned_model"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/finetuning/finetuned-models/{id}");
    until(&s, &path, |b| {
        b["finetuned_model"]["status"] == "STATUS_FINETUNING"
    })
    .await;
    // An upload in progress: the start-up cleanup would take it for debris.
    let staging = dir.path().join("uploads/.staging-in-progress");
    std::fs::create_dir(&staging).unwrap();

    let flags = [
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--default-model",
    ];
    let config = finerank_server::Config::from_flags(
        flags.into_iter().chain([common::tiny_model().as_str()]),
    )
    .unwrap();
    let second = tokio::task::spawn_blocking(move || finerank_server::AppState::start(config))
        .await
        .unwrap();
    let error = format!(
        "{:#}",
        second.err().expect("the second server must not start")
    );
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
    assert!(
        error.contains("in use by another finerank serve"),
        "{error}"
    );
    assert!(
        error.contains(&format!("pid {}", std::process::id())),
        "{error}"
    );

    let (_, job) = s.get(&path).await;
    assert_eq!(
        job["finetuned_model"]["status"], "STATUS_FINETUNING",
        "{job}"
    );
    assert!(staging.is_dir(), "the upload in progress is still there");
    std::fs::remove_dir(&staging).unwrap();
    s.stop().await;
    // Stopped, the first one lets the next start, which finds the job back in the queue.
    let s = Server::start(dir.path(), &[]).await;
    let (_, events) = s.get(&format!("{path}/events")).await;
    let requeued = events["events"].as_array().unwrap().iter().any(|e| {
        e["status"] == "STATUS_QUEUED"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the server shut down during training"))
    });
    assert!(requeued, "{events}");
    s.stop().await;
}

/// A list of datasets is compact: each one's review, with its sample rows, is one GET away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_lists_leave_the_review_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let dataset = validated(&s, "", form(rows(20, 0), None)).await;
    assert!(dataset["review"]["train"].is_object(), "{dataset}");
    let (status, list) = s.get("/v1/datasets").await;
    assert_eq!(status, 200, "{list}");
    let listed = &list["datasets"][0];
    assert_eq!(listed["id"], dataset["id"]);
    assert!(listed.get("review").is_none(), "{listed}");
    assert_eq!(listed["metrics"], dataset["metrics"]);
    assert_eq!(listed["dataset_parts"], dataset["dataset_parts"]);
    s.stop().await;
}

/// What is in `uploads/` besides the datasets: staging debris of refused uploads.
fn debris(data_dir: &Path, datasets: &[&str]) -> Vec<String> {
    std::fs::read_dir(data_dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !datasets.contains(&name.as_str()))
        .collect()
}

/// Every way an upload is refused, and clients that go away mid-upload, leave no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-upload-bytes", "20000"]).await;
    let big = rows(400, 0);
    assert!(big.len() > 20_000);
    let text = |field: &str, body: String| {
        Form::new().part(field.to_string(), Part::text(body).file_name("f.jsonl"))
    };
    let refusals = vec![
        ("an unexpected field", "", text("other", rows(2, 0)), 400),
        (
            "a field twice",
            "",
            text("data", rows(2, 0)).part("data", Part::text(rows(2, 0))),
            400,
        ),
        ("no data", "", text("eval_data", rows(2, 0)), 400),
        (
            "queries without qrels",
            "",
            text("data", rows(2, 0)).part("queries", Part::text("{}")),
            400,
        ),
        ("over the size limit", "", text("data", big.clone()), 413),
        (
            "a bad mining parameter",
            "&negatives=3",
            text("data", rows(2, 0)),
            400,
        ),
    ];
    for (what, params, form, want) in refusals {
        let (status, body) = common::upload(&s, params, form).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_eq!(debris(dir.path(), &[]), Vec::<String>::new(), "{what}");
    }
    // Clients that go away: right after their headers, or in the middle of a file.
    let addr = s.url.strip_prefix("http://").unwrap().to_string();
    let head = "POST /v1/datasets?name=x&type=reranker-finetune-input HTTP/1.1\r\nHost: x\r\n\
                Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000\r\n\r\n";
    let part = "--b\r\nContent-Disposition: form-data; name=\"data\"; filename=\"t.jsonl\"\r\n\r\n{\"query\": ";
    for sent in [head.to_string(), format!("{head}{part}")] {
        for _ in 0..50 {
            let mut client = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut client, sent.as_bytes())
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        debris(dir.path(), &[]),
        Vec::<String>::new(),
        "after clients that went away"
    );
    // And an accepted one is all that is there.
    let (status, created) = common::upload(&s, "", text("data", rows(2, 0))).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        debris(dir.path(), &[created["id"].as_str().unwrap()]),
        Vec::<String>::new()
    );
    s.stop().await;
}
