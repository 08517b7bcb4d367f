//! Two servers over one shared file store (`--store file:///...`, apart from either data
//! directory): a dataset uploaded to one is in the store before it is listed, a fine-tune trains
//! on it from the store, and the model it publishes answers on the other server too.
mod common;

use common::{clause_rows, finetuned, rerank, validated, Server, QUICK};
use reqwest::multipart::{Form, Part};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_trained_on_one_server_from_the_store_answers_on_another() {
    let (a_dir, b_dir, store) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let url = format!("file://{}", store.path().display());
    let flags: Vec<&str> = QUICK.iter().copied().chain(["--store", &url]).collect();
    let a = Server::start(a_dir.path(), &flags).await;

    let train = clause_rows(20, 0);
    let form = Form::new()
        .part("data", Part::text(train.clone()).file_name("train.jsonl"))
        .part(
            "eval_data",
            Part::text(clause_rows(8, 100)).file_name("eval.jsonl"),
        );
    let dataset = validated(&a, "", form).await;
    assert_eq!(dataset["validation_status"], "validated", "{dataset}");
    let dataset_id = dataset["id"].as_str().unwrap();
    let stored = store.path().join("datasets").join(dataset_id);
    assert_eq!(
        std::fs::read_to_string(stored.join("train.jsonl")).unwrap(),
        train
    );
    // As if the dataset had come through another server: this one has no copy of its own.
    std::fs::remove_dir_all(a_dir.path().join("uploads").join(dataset_id)).unwrap();

    let (id, ready) = finetuned(&a, dataset_id).await;
    assert_eq!(ready["status"], "STATUS_READY", "{ready}");
    let path = format!("/v1/finetuning/finetuned-models/{id}");
    let model = format!("{id}-ft");
    let manifest = store
        .path()
        .join("models")
        .join(&model)
        .join("manifest.json");
    assert!(manifest.exists());

    let (status, on_a) = rerank(&a, &model).await;
    assert_eq!(status, 200, "{on_a}");
    let b = Server::start(b_dir.path(), &flags).await;
    let (status, on_b) = rerank(&b, &model).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_a["results"], on_b["results"]);
    assert!(b_dir.path().join("models").join(&model).is_dir());

    // Deleted on the first server, the model and the dataset leave the store.
    assert_eq!(a.delete(&path).await.0, 200);
    assert!(!manifest.exists());
    assert_eq!(a.delete(&format!("/v1/datasets/{dataset_id}")).await.0, 200);
    assert!(!stored.exists());
    a.stop().await;
    b.stop().await;
}
