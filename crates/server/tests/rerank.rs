//! The rerank endpoints as clients meet them: Cohere's v1 and v2 shapes, TEI's, every kind of bad
//! request answered with the right 4xx and a clear message, and the queue under load.
mod common;

use std::time::Duration;

use common::{message, metric, shared, Server};
use futures_util::future::join_all;
use serde_json::{json, Value};

const DOCS: [&str; 4] = [
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital and largest city of France.",
    "Bananas are yellow.",
    "France's capital city, Paris, lies on the Seine.",
];

fn indices(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

/// The scores of a list of ranked items, back in document order.
fn scores(ranked: &Value, key: &str) -> Vec<f64> {
    let mut by_index: Vec<(u64, f64)> = ranked
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r[key].as_f64().unwrap()))
        .collect();
    by_index.sort_by_key(|(i, _)| *i);
    by_index.into_iter().map(|(_, s)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohere_v1_v2_and_tei_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;

    let (status, v1) = s
        .post(
            "/v1/rerank",
            &json!({"query": "capital of france", "documents": DOCS}),
        )
        .await;
    assert_eq!(status, 200, "{v1}");
    assert!(uuid::Uuid::parse_str(v1["id"].as_str().unwrap()).is_ok());
    assert_eq!(v1["meta"]["api_version"]["version"], "1");
    assert_eq!(v1["meta"]["billed_units"]["search_units"], 1);
    assert_eq!(indices(&v1).len(), 4);
    let ordered: Vec<f64> = v1["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relevance_score"].as_f64().unwrap())
        .collect();
    assert!(
        ordered.windows(2).all(|w| w[0] >= w[1]),
        "best first: {ordered:?}"
    );
    assert!(ordered.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!(
        v1["results"][0].get("document").is_none(),
        "documents only on request"
    );

    // Objects rank by `text`, or by `rank_fields`; they come back whole.
    let objects = json!({
        "query": "capital of france", "return_documents": true, "top_n": 2,
        "documents": [{"text": DOCS[0], "id": "a"}, DOCS[1], {"text": DOCS[2], "id": "c"}, DOCS[3]],
    });
    let (status, body) = s.post("/v1/rerank", &objects).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    for r in body["results"].as_array().unwrap() {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["document"]["text"], DOCS[i]);
        if matches!(i, 0 | 2) {
            assert!(
                r["document"]["id"].is_string(),
                "other fields are kept: {r}"
            );
        }
    }
    let fields = json!({"query": "q", "rank_fields": ["title", "body"], "documents": [{"title": "t", "body": "b"}, {"title": "u"}]});
    assert_eq!(s.post("/v1/rerank", &fields).await.0, 200);

    let (status, v2) = s
        .post("/v2/rerank", &json!({"model": "rerank-v3.5", "query": "capital of france", "documents": DOCS, "top_n": 1}))
        .await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["meta"]["api_version"]["version"], "2");
    assert_eq!(indices(&v2), &indices(&v1)[..1], "v1 and v2 agree");

    let tei = json!({"query": "capital of france", "texts": DOCS, "return_text": true});
    let (status, ranks) = s.post("/rerank", &tei).await;
    assert_eq!(status, 200, "{ranks}");
    let ranks = ranks.as_array().unwrap().clone();
    assert_eq!(ranks.len(), 4);
    assert_eq!(ranks[0]["index"].as_u64(), Some(indices(&v1)[0]));
    assert_eq!(
        ranks[0]["text"],
        DOCS[ranks[0]["index"].as_u64().unwrap() as usize]
    );
    let (_, raw) = s
        .post(
            "/rerank",
            &json!({"query": "capital of france", "texts": DOCS, "raw_scores": true}),
        )
        .await;
    // The tiny model is a cross-encoder: raw scores are its logits, sigmoid gives the scores back.
    let (probs, logits) = (
        scores(&Value::Array(ranks.clone()), "score"),
        scores(&raw, "score"),
    );
    for (p, l) in probs.iter().zip(&logits) {
        assert!(
            (p - 1.0 / (1.0 + (-l).exp())).abs() < 1e-4,
            "{p} vs sigmoid({l})"
        );
    }
    assert!(raw[0].get("text").is_none());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-body-bytes", "200000"]).await;
    let many: Vec<&str> = vec!["d"; 10_001];
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/rerank",
            json!({"documents": ["a"]}),
            422,
            "missing field `query`",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": []}),
            400,
            "documents is empty",
        ),
        (
            "/v1/rerank",
            json!({"query": " ", "documents": ["a"]}),
            400,
            "query is empty",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": many}),
            400,
            "too many documents: 10001",
        ),
        (
            "/v1/rerank",
            json!({"query": 5, "documents": ["a"]}),
            422,
            "query: invalid type: integer",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": "a"}),
            422,
            "documents: invalid type",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": [7]}),
            422,
            "documents[0]: expected a string or an object",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": [{"title": "t"}]}),
            400,
            "without a \"text\" field",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "model": "nope"}),
            404,
            "model \"nope\" not found",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "top_n": 0}),
            400,
            "top_n must be at least 1",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "instruction": "judge"}),
            400,
            "takes no instruction",
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a"], "instruction": "judge"}),
            400,
            "takes no instruction",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "max_chunks_per_doc": -2}),
            400,
            "max_chunks_per_doc",
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": [{"title": "t"}]}),
            400,
            "without a \"text\" field",
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": [7]}),
            422,
            "documents[0]: expected a string or an object",
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}),
            400,
            "max_tokens_per_doc",
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a"], "model": "00000000-0000-4000-8000-000000000000-ft"}),
            404,
            "no fine-tuned model with that id is ready",
        ),
        (
            "/rerank",
            json!({"query": "q"}),
            422,
            "missing field `texts`",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a"], "truncation_direction": "Left"}),
            422,
            "truncation_direction",
        ),
        ("/v1/rerank", json!([1, 2]), 422, "expected a JSON object"),
    ];
    for (path, body, want, text) in cases {
        let (status, got) = s.post(path, &body).await;
        assert_eq!(status, want, "{path} {body}: {got}");
        assert!(message(&got).contains(text), "{path} {body}: {got}");
    }
    let raw_cases: Vec<(&str, u16, &str)> = vec![
        (
            r#"{"query": "q", "documents": ["a"],"#,
            400,
            "malformed JSON body",
        ),
        (
            r#"{"query": "q", "documents": ["a"]} trailing"#,
            400,
            "malformed JSON body",
        ),
        ("", 400, "the request body is empty"),
    ];
    for (body, want, text) in raw_cases {
        let (status, got) = s.post_raw("/v1/rerank", body).await;
        assert_eq!(status, want, "{body}: {got}");
        assert!(message(&got).contains(text), "{body}: {got}");
    }
    let big = json!({"query": "q", "documents": ["x".repeat(300_000)]});
    let (status, got) = s.post("/v1/rerank", &big).await;
    assert_eq!(status, 413, "{got}");
    assert!(
        message(&got).contains("limit of 200000 bytes (--max-body-bytes)"),
        "{got}"
    );
    // The server stopped reading that body, so it closes the connection, and says so; a request
    // without a body, or one that succeeds, keeps the connection open.
    let connection = |resp: reqwest::Response| resp.headers().get("connection").cloned();
    let refused = s.client.post(s.at("/v1/rerank")).json(&big).send();
    assert_eq!(connection(refused.await.unwrap()).unwrap(), "close");
    let fine = json!({"query": "q", "documents": ["a"]});
    let accepted = s.client.post(s.at("/v1/rerank")).json(&fine).send();
    assert_eq!(connection(accepted.await.unwrap()), None);
    let unknown = s.client.get(s.at("/v1/nowhere")).send();
    assert_eq!(connection(unknown.await.unwrap()), None);
    s.stop().await;
}

/// A model name is a name: a directory holding a model is refused like any unknown name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_names_never_become_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    let fixture = shared("fixtures/tiny-xlmr-cross-encoder")
        .display()
        .to_string();
    for model in [
        fixture.as_str(),
        "../../../shared/fixtures/tiny-xlmr-cross-encoder",
        "/etc",
        "models",
        "x-ft",
    ] {
        let (status, body) = s
            .post(
                "/v1/rerank",
                &json!({"query": "q", "documents": ["a"], "model": model}),
            )
            .await;
        assert_eq!(status, 404, "{model}: {body}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_do_not_depend_on_cross_request_batching() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    let queries: Vec<String> = (0..16)
        .map(|i| format!("question number {i} about {}", DOCS[i % 4]))
        .collect();
    let bodies: Vec<Value> = queries
        .iter()
        .map(|q| json!({"query": q, "documents": DOCS}))
        .collect();
    let mut alone = Vec::new();
    for body in &bodies {
        alone.push(s.post("/v2/rerank", body).await.1);
    }
    let together = join_all(bodies.iter().map(|body| s.post("/v2/rerank", body))).await;
    for (a, (status, t)) in alone.iter().zip(&together) {
        assert_eq!(*status, 200);
        for (x, y) in scores(&a["results"], "relevance_score")
            .iter()
            .zip(scores(&t["results"], "relevance_score"))
        {
            assert!((x - y).abs() < 1e-5, "{a} vs {t}");
        }
    }
    let m = s.metrics().await;
    assert_eq!(metric(&m, "finerank_rerank_batch_requests_sum"), 32.0);
    s.stop().await;
}

/// Enough work to keep the model busy for a while on a CPU (seconds, even on a fast one).
fn heavy() -> Value {
    let doc =
        "The court held that the statute of limitations barred the claim because the plaintiff \
               knew of the injury more than two years before filing suit. ";
    json!({"query": "when does the limitation period start", "documents": vec![doc.repeat(3); 600]})
}

/// With the model busy and the queue full, the next request is refused at once; a queued request
/// whose client gives up is dropped unscored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_gone_clients_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--default-model",
            "all-MiniLM-L6-v2",
            "--queue-capacity",
            "1",
        ],
    )
    .await;
    let busy = {
        let (client, url) = (s.client.clone(), s.at("/v1/rerank"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&heavy())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Scoring has started once the request has left the queue.
    while metric(&s.metrics().await, "finerank_rerank_queue_seconds_count") < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Takes the one place in the queue, then hangs up.
    let gone = s
        .client
        .post(s.at("/v1/rerank"))
        .timeout(Duration::from_millis(300))
        .json(&json!({"query": "q", "documents": ["a"]}))
        .send();
    let refused = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let r = s
            .post("/v1/rerank", &json!({"query": "q", "documents": ["a"]}))
            .await;
        (r, started.elapsed())
    };
    let (gone, ((status, body), waited)) = tokio::join!(gone, refused);
    assert!(gone.is_err(), "the impatient client timed out");
    assert_eq!(status, 429, "{body}");
    assert!(message(&body).contains("--queue-capacity"), "{body}");
    // The model holds the CPU, so "at once" is generous; a queued request would wait for seconds.
    assert!(
        waited < Duration::from_secs(1),
        "refused at once, not after {waited:?}"
    );
    assert_eq!(busy.await.unwrap(), 200);
    let m = s.metrics().await;
    assert_eq!(metric(&m, "finerank_rerank_rejected_total"), 1.0);
    assert_eq!(
        metric(&m, "finerank_rerank_cancelled_total"),
        1.0,
        "the abandoned request was not scored"
    );
    assert_eq!(
        metric(&m, "finerank_rerank_batch_requests_count"),
        1.0,
        "only the heavy request reached the model"
    );
    s.stop().await;
}

/// Cohere's model names are served by this server's models: the answer says which model it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohere_model_name_answered_by_another_model_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    for path in ["/v1/rerank", "/v2/rerank"] {
        for model in [
            "rerank-v3.5",
            "rerank-english-v3.0",
            "rerank-multilingual-v3.0",
        ] {
            let body = json!({"model": model, "query": "capital of france", "documents": DOCS});
            let (status, answer) = s.post(path, &body).await;
            assert_eq!(status, 200, "{answer}");
            let warnings = answer["meta"]["warnings"].as_array().unwrap();
            assert_eq!(warnings.len(), 1, "{answer}");
            let warning = warnings[0].as_str().unwrap();
            assert!(
                warning.contains(model) && warning.contains("\"tiny-bert-cross-encoder\""),
                "{path} {model}: {warning}"
            );
        }
        // The model's own name, or none: no warning.
        for body in [
            json!({"model": "tiny-bert-cross-encoder", "query": "q", "documents": DOCS}),
            json!({"query": "q", "documents": DOCS}),
        ] {
            let (status, answer) = s.post(path, &body).await;
            assert_eq!(status, 200, "{answer}");
            assert!(answer["meta"].get("warnings").is_none(), "{answer}");
        }
    }
    s.stop().await;
}

/// LiteLLM sends v2 documents as objects, with `rank_fields`; they are taken as v1 takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_takes_documents_as_objects_with_rank_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]).await;
    let objects: Vec<Value> = DOCS
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"title": format!("doc {i}"), "body": d}))
        .collect();
    let fields = json!({"query": "capital of france", "documents": objects,
                        "rank_fields": ["title", "body"], "return_documents": true});
    let (status, v1) = s.post("/v1/rerank", &fields).await;
    assert_eq!(status, 200, "{v1}");
    let (status, v2) = s.post("/v2/rerank", &fields).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(
        v2["results"], v1["results"],
        "ranked and returned as v1 does"
    );
    let first = v2["results"][0]["index"].as_u64().unwrap() as usize;
    assert_eq!(
        v2["results"][0]["document"], objects[first],
        "objects come back whole"
    );
    // Objects with a `text` field need no rank_fields; strings and objects may mix.
    let mixed = json!({"query": "capital of france", "documents": [{"text": DOCS[0]}, DOCS[1], {"text": DOCS[2]}, DOCS[3]]});
    let (status, v2) = s.post("/v2/rerank", &mixed).await;
    assert_eq!(status, 200, "{v2}");
    let (_, strings) = s
        .post(
            "/v2/rerank",
            &json!({"query": "capital of france", "documents": DOCS}),
        )
        .await;
    assert_eq!(indices(&v2), indices(&strings));
    s.stop().await;
}

/// TEI's clients read `/info` before their first request, and errors as `{error, error_type}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_clients_get_info_and_errors_in_teis_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--api-key", "k", "--max-documents", "3"]).await;
    let (status, info) = s.send(s.client.get(s.at("/info")).bearer_auth("k")).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["model_id"], "tiny-bert-cross-encoder");
    assert_eq!(
        info["model_type"],
        json!({"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}})
    );
    assert_eq!(info["max_client_batch_size"], 3);
    assert_eq!(info["max_batch_tokens"], 65_536);
    assert!(info["max_input_length"].as_u64().unwrap() > 0, "{info}");
    assert!(
        info["version"].is_string() && info["model_dtype"] == "float32",
        "{info}"
    );

    let tei_error = |body: &Value, error_type: &str| {
        assert_eq!(body["error_type"], error_type, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert!(body.get("message").is_none(), "{body}");
    };
    let post = |body: Value| s.client.post(s.at("/rerank")).bearer_auth("k").json(&body);
    let (status, body) = s.send(post(json!({"query": "q"}))).await;
    assert_eq!(status, 422);
    tei_error(&body, "Validation");
    let (status, body) = s
        .send(post(json!({"query": "q", "texts": ["a", "b", "c", "d"]})))
        .await;
    assert_eq!(status, 400);
    tei_error(&body, "Validation");
    // Refused before the handler, by the key: the same shape.
    let (status, body) = s
        .send(s.client.post(s.at("/rerank")).json(&json!({})))
        .await;
    assert_eq!(status, 401);
    tei_error(&body, "Validation");
    // Cohere's endpoints keep Cohere's shape.
    let cohere = s.client.post(s.at("/v1/rerank")).bearer_auth("k");
    let (status, body) = s.send(cohere.json(&json!({"query": "q"}))).await;
    assert_eq!(status, 422);
    assert!(
        body["message"].is_string() && body.get("error").is_none(),
        "{body}"
    );
    s.stop().await;
}

/// An LLM reranker served: its relevance scores are the model card's P("yes") (the fixture's
/// reference, for the pairs it did not cut to 160 tokens), and the request's instruction changes
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_reranker_answers_p_yes_with_the_requests_instruction() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/families/qwen3-reranker");
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--default-model", fixture.to_str().unwrap()]).await;
    let score = |pair: &Value, instruction: &Value| {
        let body = json!({
            "query": pair["query"],
            "documents": [pair["document"]],
            "instruction": instruction,
        });
        let s = &s;
        async move {
            let (status, body) = s.post("/v2/rerank", &body).await;
            assert_eq!(status, 200, "{body}");
            body["results"][0]["relevance_score"].as_f64().unwrap()
        }
    };
    let pairs = exp["pairs"].as_array().unwrap();
    let mut checked = 0;
    for (i, pair) in pairs.iter().enumerate() {
        if exp["input_ids"][i].as_array().unwrap().len() < 160 {
            let got = score(pair, &pair["instruction"]).await;
            let want = exp["scores"][i].as_f64().unwrap();
            assert!((got - want).abs() < 1e-4, "pair {i}: {got} vs {want}");
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
    let short = &pairs[3];
    let custom = score(
        short,
        &json!("Given a legal question, retrieve court holdings"),
    )
    .await;
    assert!((custom - score(short, &Value::Null).await).abs() > 1e-4);
}

/// `--model-precision` serves one model in int8 and leaves every other as `--precision` says:
/// the named model's scores move, a little; a model the server does not know, or a precision
/// that does not exist, is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_precision_serves_one_model_in_int8() {
    let dir = tempfile::tempdir().unwrap();
    let body = json!({"query": "the capital of France", "documents": DOCS});
    let mut answers = Vec::new();
    for (name, flags) in [
        ("plain", &[][..]),
        (
            "other",
            &[
                "--model-precision",
                "legal=int8",
                "--alias",
                "legal=rerank-v3.5",
            ][..],
        ),
        (
            "int8",
            &["--model-precision", "tiny-bert-cross-encoder=int8"][..],
        ),
    ] {
        let s = Server::start(&dir.path().join(name), flags).await;
        let (status, answer) = s.post("/v2/rerank", &body).await;
        assert_eq!(status, 200, "{answer}");
        answers.push(scores(&answer["results"], "relevance_score"));
        s.stop().await;
    }
    // An alias names the default model too, so "other" serves it in int8 as well.
    for (int8, at) in [(&answers[1], "the alias"), (&answers[2], "its name")] {
        let moved = answers[0]
            .iter()
            .zip(int8)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 0.0 && moved < 0.02,
            "int8 through {at}: moved by {moved}"
        );
    }

    for (flag, says) in [
        (
            "nothing-ft=int8",
            "--model-precision nothing-ft=int8: model \"nothing-ft\" not found",
        ),
        (
            "tiny-bert-cross-encoder=int4",
            "\"int4\": expected auto, f32, bf16 or int8",
        ),
    ] {
        let args = [
            "--data-dir",
            &dir.path().join("refused").display().to_string(),
            "--default-model",
            &common::tiny_model(),
            "--model-precision",
            flag,
        ]
        .map(String::from);
        let refused = match finerank_server::Config::from_flags(&args) {
            Err(e) => e.to_string(),
            Ok(config) => tokio::task::spawn_blocking(move || {
                finerank_server::AppState::start(config)
                    .err()
                    .unwrap()
                    .to_string()
            })
            .await
            .unwrap(),
        };
        assert!(refused.contains(says), "{refused}");
    }
}
