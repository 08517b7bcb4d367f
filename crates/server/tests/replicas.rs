//! Serving replicas: two servers over one shared file store. A model that one made ready is
//! served by the other, which stops serving it within `--model-sync-interval` of its delete
//! through the first; and `/health/ready` says whether a server can serve, where `/health`
//! only says it answers.
mod common;

use std::time::{Duration, Instant};

use common::{clause_rows, finetuned, message, metric, rerank, validated, Server, QUICK};
use reqwest::multipart::{Form, Part};
use serde_json::json;

const SYNC: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_what_another_made_ready_and_drops_what_it_deleted() {
    let (a_dir, b_dir, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let url = format!("file://{}", store.path().display());
    let interval = format!("{}ms", SYNC.as_millis());
    let flags: Vec<&str> = QUICK
        .iter()
        .copied()
        .chain(["--store", &url, "--model-sync-interval", &interval])
        .collect();
    let a = Server::start(a_dir.path(), &flags).await;
    let b = Server::start(b_dir.path(), &flags).await;
    assert_eq!(
        b.get("/health/ready").await,
        (200, json!({"status": "ready"}))
    );

    let form = Form::new()
        .part(
            "data",
            Part::text(clause_rows(20, 0)).file_name("train.jsonl"),
        )
        .part(
            "eval_data",
            Part::text(clause_rows(8, 100)).file_name("eval.jsonl"),
        );
    let dataset = validated(&a, "", form).await;
    let (id, ready) = finetuned(&a, dataset["id"].as_str().unwrap()).await;
    assert_eq!(ready["status"], "STATUS_READY", "{ready}");
    let model = format!("{id}-ft");

    // B never heard of the job: the first request finds the model in the store.
    let (status, on_b) = rerank(&b, &model).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(metric(&b.metrics().await, "finerank_models_loaded"), 2.0);

    // Deleted through A, while B holds it loaded: B answers 404 within the interval, as for a
    // model it never had, and unloads it.
    let (status, body) = a
        .delete(&format!("/v1/finetuning/finetuned-models/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let deleted = Instant::now();
    let gone = loop {
        let (status, body) = rerank(&b, &model).await;
        if status != 200 {
            break (status, body);
        }
        assert!(
            deleted.elapsed() < 4 * SYNC,
            "B still serves {model} {:?} after its delete",
            deleted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(gone.0, 404, "{}", gone.1);
    assert!(message(&gone.1).contains("not found"), "{}", gone.1);
    assert_eq!(metric(&b.metrics().await, "finerank_models_loaded"), 1.0);
    assert!(!b_dir.path().join("models").join(&model).exists());

    // Readiness follows the store: gone, B is live but not ready, and says why; back, ready.
    let moved = store.path().with_extension("away");
    std::fs::rename(store.path(), &moved).unwrap();
    assert_eq!(b.get("/health").await.0, 200);
    let (status, body) = b.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("the model store does not answer"), "{body}");
    std::fs::rename(&moved, store.path()).unwrap();
    assert_eq!(b.get("/health/ready").await.0, 200);

    // From the moment a shutdown begins, not ready, so that no new request is sent here.
    let state = b.state.clone();
    tokio::task::spawn_blocking(move || state.shutdown())
        .await
        .unwrap();
    let (status, body) = b.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    a.stop().await;
    b.stop().await;
}
