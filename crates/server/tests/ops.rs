//! Keys and their scopes, rate limits, slow clients, the generated API description, metrics, the
//! dashboard's files and answers for routes that do not exist.
mod common;

use std::time::{Duration, Instant};

use common::{message, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_every_endpoint_but_health_and_the_docs_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--api-key", "k1", "--api-key", "second-key"]).await;
    // The API's description holds no data, and a browser opening /docs cannot send a key.
    for path in ["/health", "/health/ready", "/docs", "/openapi.json"] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let rerank = json!({"query": "q", "documents": ["a"]});
    for path in [
        "/v1/models",
        "/metrics",
        "/info",
        "/v1/datasets",
        "/nowhere",
    ] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(message(&body).contains("Authorization: Bearer"), "{body}");
    }
    let wrong = s
        .send(
            s.client
                .post(s.at("/v1/rerank"))
                .bearer_auth("k2")
                .json(&rerank),
        )
        .await;
    assert_eq!(wrong.0, 401);
    assert_eq!(message(&wrong.1), "invalid API key");
    for key in ["k1", "second-key"] {
        let (status, body) = s
            .send(
                s.client
                    .post(s.at("/v1/rerank"))
                    .bearer_auth(key)
                    .json(&rerank),
            )
            .await;
        assert_eq!(status, 200, "{key}: {body}");
    }
    let resp = s.client.get(s.at("/v1/models")).send().await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    // The dashboard's page and files hold no data, and a browser cannot send a key when it
    // navigates: they are open, and the page asks for the key.
    for path in ["/", "/assets/js/app.js"] {
        let resp = s.client.get(s.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    s.stop().await;
}

/// A serving application's key reads and reranks; only a full key changes the server's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_reranks_and_reads_but_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--api-key", "admin", "--api-key-read-only", "serving"],
    )
    .await;
    let as_key = |key: &str, req: reqwest::RequestBuilder| req.bearer_auth(key);
    // One body for all three: each endpoint ignores the others' fields.
    let rerank = json!({"query": "q", "documents": ["a", "b"], "texts": ["a", "b"]});
    for path in ["/v1/rerank", "/v2/rerank", "/rerank"] {
        let req = s.client.post(s.at(path)).json(&rerank);
        let (status, body) = s.send(as_key("serving", req)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in [
        "/v1/models",
        "/v1/datasets",
        "/v1/finetuning/finetuned-models",
        "/info",
    ] {
        let (status, body) = s.send(as_key("serving", s.client.get(s.at(path)))).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let form = || reqwest::multipart::Form::new().text("data", "{}\n");
    let upload = "/v1/datasets?name=x&type=reranker-finetune-input";
    let id = "00000000-0000-4000-8000-000000000000";
    let finetune = json!({"name": "x", "settings": {"base_model": {"base_type": "BASE_TYPE_RERANK"}, "dataset_id": id}});
    let writes = [
        ("POST", s.client.post(s.at(upload)).multipart(form())),
        (
            "DELETE",
            s.client.delete(s.at(&format!("/v1/datasets/{id}"))),
        ),
        (
            "POST",
            s.client
                .post(s.at("/v1/finetuning/finetuned-models"))
                .json(&finetune),
        ),
        (
            "PATCH",
            s.client
                .patch(s.at(&format!("/v1/finetuning/finetuned-models/{id}")))
                .json(&json!({"name": "y"})),
        ),
        (
            "DELETE",
            s.client
                .delete(s.at(&format!("/v1/finetuning/finetuned-models/{id}"))),
        ),
    ];
    for (method, req) in writes {
        let (status, body) = s.send(as_key("serving", req)).await;
        assert_eq!(status, 403, "{method}: {body}");
        assert!(message(&body).contains("read-only"), "{body}");
        assert!(message(&body).contains("--api-key"), "{body}");
    }
    assert!(
        dir.path()
            .join("uploads")
            .read_dir()
            .unwrap()
            .next()
            .is_none(),
        "the refused upload was not read"
    );
    // The full key gets past the scope (to the handlers' own answers).
    let (status, body) = s
        .send(as_key(
            "admin",
            s.client.delete(s.at(&format!("/v1/datasets/{id}"))),
        ))
        .await;
    assert_eq!(status, 404, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--api-key",
        "a",
        "--api-key-read-only",
        "b",
        "--rate-limit",
        "0.5",
        "--rate-limit-burst",
        "2",
    ];
    let s = Server::start(dir.path(), &flags).await;
    let get = |key: &'static str| s.client.get(s.at("/v1/models")).bearer_auth(key).send();
    for _ in 0..2 {
        assert_eq!(get("a").await.unwrap().status(), 200, "within the burst");
    }
    let refused = get("a").await.unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "one request every 2 s: {wait}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(message(&body).contains("--rate-limit"), "{body}");
    assert_eq!(
        get("b").await.unwrap().status(),
        200,
        "another key has its own allowance"
    );
    for open in ["/health", "/docs"] {
        assert_eq!(s.get(open).await.0, 200, "{open} is not limited");
    }
    let unauthorized = s
        .client
        .get(s.at("/v1/models"))
        .bearer_auth("c")
        .send()
        .await
        .unwrap();
    assert_eq!(
        unauthorized.status(),
        401,
        "a wrong key spends no one's allowance"
    );
    s.stop().await;
}

/// A client that never finishes its headers (slowloris) loses its connection after
/// --header-read-timeout, instead of holding a socket forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_finish_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--header-read-timeout", "300ms"]).await;
    let addr = s.url.strip_prefix("http://").unwrap();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "still connected after 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A client that sends its request in time is answered as usual; its kept-alive connection
    // then has as long to start the next one.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    let started = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut answer)).await;
    assert_eq!(
        rest.ok().map(Result::unwrap),
        Some(0),
        "the idle connection is closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    s.stop().await;
}

/// Every file the page and its modules load, with the type a browser needs to run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    let get = |path: String| {
        let s = &s;
        async move {
            let resp = s.client.get(s.at(&path)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let headers = resp.headers().clone();
            let content_type = headers["content-type"].to_str().unwrap().to_string();
            assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
            (content_type, resp.text().await.unwrap())
        }
    };
    let (content_type, page) = get("/".into()).await;
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        !page.contains("https://"),
        "nothing from elsewhere: the server may be offline"
    );
    let mut files: Vec<String> = page
        .split('"')
        .filter(|part| part.starts_with("assets/"))
        .map(|part| format!("/{part}"))
        .collect();
    assert!(files.contains(&"/assets/js/app.js".into()), "{files:?}");
    let mut seen = Vec::new();
    while let Some(path) = files.pop() {
        if seen.contains(&path) {
            continue;
        }
        let (content_type, body) = get(path.clone()).await;
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("svg") => "image/svg+xml",
            other => panic!("{path}: unexpected kind of file {other:?}"),
        };
        assert!(content_type.starts_with(expected), "{path}: {content_type}");
        // ES modules import their siblings as "./name.js".
        let dir = &path[..path.rfind('/').unwrap() + 1];
        files.extend(
            body.split('"')
                .filter_map(|part| part.strip_prefix("./"))
                .filter(|name| name.ends_with(".js"))
                .map(|name| format!("{dir}{name}")),
        );
        seen.push(path);
    }
    assert!(seen.len() >= 10, "{seen:?}");
    let (status, body) = s.get("/assets/nothing.js").await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("no file"), "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_docs_metrics_and_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    let (status, spec) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/rerank",
        "/v2/rerank",
        "/rerank",
        "/info",
        "/v1/datasets",
        "/v1/datasets/{id}",
        "/v1/finetuning/finetuned-models/{id}/events",
        "/v1/finetuning/finetuned-models/{id}/training-step-metrics",
        "/v1/finetuning/finetuned-models/{id}/training-losses",
        "/v1/finetuning/hyperparameters",
        "/v1/models",
        "/health",
        "/health/ready",
        "/metrics",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    assert!(spec["components"]["schemas"]["RerankV1Request"].is_object());
    // Bring your own corpus: the upload's parts and mining parameters, and the retrieval figures
    // with the caveat that their queries also chose the checkpoint.
    let schemas = &spec["components"]["schemas"];
    let params: Vec<&str> = spec["paths"]["/v1/datasets"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["mine_negatives", "negatives", "first_stage"] {
        assert!(params.contains(&name), "{name}: {params:?}");
    }
    for field in ["data", "eval_data", "corpus", "queries", "qrels"] {
        let part = &schemas["DatasetUpload"]["properties"][field];
        assert!(part.is_object(), "{field}");
    }
    let retrieval = &schemas["FinetuneMetrics"]["properties"]["retrieval"]["description"];
    assert!(
        retrieval
            .as_str()
            .unwrap()
            .contains("also chose the checkpoint"),
        "{retrieval}"
    );
    // Schema names are global in the document: three list responses once shared one name, and
    // two of the three lists were described with the third's fields.
    for (path, field) in [
        ("/v1/datasets", "datasets"),
        ("/v1/finetuning/finetuned-models", "finetuned_models"),
        ("/v1/models", "models"),
    ] {
        let reference = spec["paths"][path]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap();
        let name = reference.rsplit('/').next().unwrap();
        let schema = &spec["components"]["schemas"][name];
        assert!(
            schema["properties"][field].is_object(),
            "{path}: {name} has no {field}"
        );
    }
    // The errors the layers and extractors answer, whatever the handler: a client generated
    // from the document expects them.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let documented = |status: &str| op["responses"][status].is_object();
            if path.starts_with("/health") {
                assert_eq!(op["security"], json!([]), "{path} needs no key");
                continue;
            }
            assert!(documented("401"), "{method} {path}: 401");
            assert!(documented("429"), "{method} {path}: 429 (--rate-limit)");
            let writes = method != "get" && !path.ends_with("rerank");
            assert_eq!(
                documented("403"),
                writes,
                "{method} {path}: 403 (read-only keys)"
            );
            // TEI's clients read TEI's error shape.
            let error = op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap();
            let shape = if path == "/rerank" {
                "TeiError"
            } else {
                "ErrorBody"
            };
            assert!(error.ends_with(shape), "{method} {path}: {error}");
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                assert!(documented("400"), "{method} {path}: 400");
            }
            if op["requestBody"].is_object() {
                for status in ["400", "413", "422"] {
                    assert!(documented(status), "{method} {path}: {status}");
                }
            }
        }
    }
    let docs = s.client.get(s.at("/docs")).send().await.unwrap();
    assert!(docs.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = docs.text().await.unwrap();
    assert!(
        page.contains("openapi.json") && !page.contains("https://"),
        "self-contained"
    );

    s.post(
        "/v1/rerank",
        &json!({"query": "q", "documents": ["a", "b"]}),
    )
    .await;
    let m = s.metrics().await;
    for name in [
        r#"finerank_http_requests_total{method="POST",route="/v1/rerank",status="200"} 1"#,
        "finerank_http_request_duration_seconds_bucket",
        "finerank_rerank_queue_depth 0",
        "finerank_rerank_batch_documents_sum 2",
        "finerank_rerank_batch_tokens_count 1",
        "finerank_rerank_inference_seconds_count 1",
        "finerank_models_loaded 1",
    ] {
        assert!(m.contains(name), "{name} not in\n{m}");
    }

    let (status, body) = s.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("no route for GET /v1/nothing-here"));
    let (status, body) = s.delete("/v1/rerank").await;
    assert_eq!(status, 405);
    assert!(message(&body).contains("DELETE is not allowed"));
    s.stop().await;
}
