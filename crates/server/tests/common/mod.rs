//! A real server on 127.0.0.1:0 over a temporary data directory, and a client for it.
#![allow(dead_code)] // Each test binary uses its own part of this.

use std::path::{Path, PathBuf};

use finerank_server::{app, AppState, Config};
use serde_json::Value;

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
        let router = app(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
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

/// The message of an error body.
pub fn message(body: &Value) -> &str {
    body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {body}"))
}
