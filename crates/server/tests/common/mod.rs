//! A real server on 127.0.0.1:0 over a temporary data directory, and a client for it.
#![allow(dead_code)] // Each test binary uses its own part of this.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use finerank_server::{serve_on, AppState, Config};
use reqwest::multipart::Form;
use serde_json::{json, Value};

/// `n` training rows about a lease's clauses, from clause `offset` on, each with one negative.
pub fn clause_rows(n: usize, offset: usize) -> String {
    (offset..offset + n)
        .map(|i| {
            json!({
                "query": format!("what does clause {i} of the lease say about rent"),
                "relevant_passages": [format!("Clause {i} sets the rent and when it is due.")],
                "hard_negatives": [format!("Clause {} covers pets.", i + 1000)],
            })
            .to_string()
                + "\n"
        })
        .collect()
}

/// Small minimums and two steps: a job takes seconds.
pub const QUICK: &[&str] = &[
    "--min-train-queries",
    "16",
    "--min-eval-queries",
    "8",
    "--max-train-steps",
    "2",
    "--train-max-length",
    "64",
];

pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

/// A two-layer random cross-encoder: loads and scores in milliseconds.
pub fn tiny_model() -> String {
    shared("fixtures/tiny-bert-cross-encoder")
        .display()
        .to_string()
}

pub struct Server {
    pub url: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts on the tiny model unless `flags` name another.
    pub async fn start(data_dir: &Path, flags: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.display().to_string()];
        if !flags.contains(&"--default-model") {
            args.extend(["--default-model".into(), tiny_model()]);
        }
        args.extend(flags.iter().map(|f| f.to_string()));
        let config = Config::from_flags(&args).expect("valid flags");
        let state = tokio::task::spawn_blocking(move || AppState::start(config))
            .await
            .unwrap()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(serve_on(listener, state.clone(), std::future::pending()));
        Server {
            url,
            state,
            client: reqwest::Client::new(),
            data_dir: data_dir.to_path_buf(),
            task,
        }
    }

    /// Stops serving and stops the workers, as a graceful shutdown does.
    pub async fn stop(self) {
        self.task.abort();
        let state = self.state;
        tokio::task::spawn_blocking(move || state.shutdown())
            .await
            .unwrap();
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Status and JSON body.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(self.at(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.client.post(self.at(path)).json(body)).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(self.client.post(self.at(path)).body(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.client.patch(self.at(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.client.delete(self.at(path))).await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.at("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The value of an unlabelled metric.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// The message of an error body, in Cohere's shape or (from TEI's `/rerank`) TEI's.
pub fn message(body: &Value) -> &str {
    body["message"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or_else(|| panic!("no message in {body}"))
}

/// Uploads a dataset named "lease"; `params` are more query parameters (`&mine_negatives=true`).
pub async fn upload(s: &Server, params: &str, form: Form) -> (u16, Value) {
    let url = s.at(&format!(
        "/v1/datasets?name=lease&type=reranker-finetune-input{params}"
    ));
    s.send(s.client.post(url).multipart(form)).await
}

/// Polls until `done` holds, for at most a minute.
pub async fn until(s: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads, and waits for the validation to end either way; the dataset as it then is.
pub async fn validated(s: &Server, params: &str, form: Form) -> Value {
    let (status, created) = upload(s, params, form).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap();
    until(s, &format!("/v1/datasets/{id}"), |b| {
        !matches!(
            b["dataset"]["validation_status"].as_str(),
            Some("queued" | "processing")
        )
    })
    .await["dataset"]
        .clone()
}

/// Starts a fine-tune named "lease" on the dataset with [`settings`], and waits for it to end
/// either way; its id and the model as it then is.
pub async fn finetuned(s: &Server, dataset_id: &str) -> (String, Value) {
    let (status, created) = s
        .post(
            "/v1/finetuning/finetuned-models",
            &json!({"name": "lease", "settings": settings(dataset_id)}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["finetuned_model"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let model = until(s, &format!("/v1/finetuning/finetuned-models/{id}"), |b| {
        matches!(
            b["finetuned_model"]["status"].as_str(),
            Some("STATUS_READY" | "STATUS_FAILED")
        )
    })
    .await["finetuned_model"]
        .clone();
    (id, model)
}

/// Fine-tuning settings for a dataset: one epoch of batches of four.
pub fn settings(dataset_id: &str) -> Value {
    json!({"base_model": {"base_type": "BASE_TYPE_RERANK"}, "dataset_id": dataset_id,
           "hyperparameters": {"train_epochs": 1, "train_batch_size": 4, "learning_rate": 0.001}})
}

/// Two documents about a lease, reranked by `model`.
pub async fn rerank(s: &Server, model: &str) -> (u16, Value) {
    s.post("/v1/rerank", &json!({"model": model, "query": "what does clause 3 say about rent",
                                 "documents": ["Clause 3 sets the rent.", "Clause 9 covers pets."]}))
        .await
}
