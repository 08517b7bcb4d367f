//! Keys, the generated API description, metrics, the dashboard's files and answers for routes
//! that do not exist.
mod common;

use common::{message, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_every_endpoint_but_health_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--api-key", "k1", "--api-key", "second-key"]).await;
    assert_eq!(s.get("/health").await.0, 200);
    let rerank = json!({"query": "q", "documents": ["a"]});
    for path in [
        "/v1/models",
        "/metrics",
        "/openapi.json",
        "/docs",
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
        "/v1/datasets",
        "/v1/datasets/{id}",
        "/v1/finetuning/finetuned-models/{id}/events",
        "/v1/finetuning/finetuned-models/{id}/training-step-metrics",
        "/v1/finetuning/finetuned-models/{id}/training-losses",
        "/v1/finetuning/hyperparameters",
        "/v1/models",
        "/health",
        "/metrics",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    assert!(spec["components"]["schemas"]["RerankV1Request"].is_object());
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
            if path == "/health" {
                assert_eq!(op["security"], json!([]), "/health needs no key");
                continue;
            }
            assert!(documented("401"), "{method} {path}: 401");
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
