//! Bring your own corpus through the API, on the tiny model: rows without negatives and the
//! collection they come from, or a whole BEIR collection, mined in the review; a bad qrels line
//! named as the client uploaded it; and a fine-tune on such a dataset, evaluated retrieval-style.
mod common;

use std::path::Path;

use common::{finetuned, message, upload, validated, Server, QUICK};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Queries judged against the corpus; a tenth of them, 3, are held out for evaluation.
const QUERIES: usize = 25;
const HELD_OUT: usize = 3;

fn rent(i: usize) -> String {
    format!("Clause {i} sets the rent for unit {i} and when it is due.")
}

/// Per clause, the rent (the relevant document) and two that are not: 75 documents.
fn corpus() -> String {
    (0..QUERIES)
        .flat_map(|i| {
            [
                (format!("d{i}"), rent(i)),
                (
                    format!("p{i}"),
                    format!("Clause {i} covers pets in unit {i}."),
                ),
                (
                    format!("k{i}"),
                    format!("Clause {i} covers parking for unit {i}."),
                ),
            ]
        })
        .map(|(id, text)| json!({"_id": id, "title": "", "text": text}).to_string() + "\n")
        .collect()
}

fn query(i: usize) -> String {
    format!("what does clause {i} of the lease say about rent")
}

/// Cohere rows without negatives, whose relevant passages are corpus documents.
fn rows(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| json!({"query": query(i), "relevant_passages": [rent(i)]}).to_string() + "\n")
        .collect()
}

fn queries() -> String {
    (0..QUERIES)
        .map(|i| json!({"_id": format!("q{i}"), "text": query(i)}).to_string() + "\n")
        .collect()
}

/// BEIR's qrels: the header, then each query's rent document, graded 2 for every other query.
fn qrels() -> String {
    let lines = (0..QUERIES).map(|i| format!("q{i}\td{i}\t{}\n", 1 + (i % 2)));
    std::iter::once("query-id\tcorpus-id\tscore\n".to_string())
        .chain(lines)
        .collect()
}

fn file(form: Form, field: &'static str, text: String, name: &'static str) -> Form {
    form.part(field, Part::text(text).file_name(name))
}

fn rows_and_corpus() -> Form {
    let form = file(Form::new(), "data", rows(0..QUERIES), "my train.jsonl");
    file(form, "corpus", corpus(), "my corpus.jsonl")
}

fn beir(qrels: String) -> Form {
    let form = file(Form::new(), "corpus", corpus(), "my corpus.jsonl");
    let form = file(form, "queries", queries(), "my queries.jsonl");
    file(form, "qrels", qrels, "my qrels.tsv")
}

fn read_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mined_file(s: &Server, dataset: &Value, name: &str) -> std::path::PathBuf {
    let id = dataset["id"].as_str().unwrap();
    s.data_dir.join("uploads").join(id).join(name)
}

fn reranker_metrics(dataset: &Value) -> &Value {
    &dataset["metrics"]["finetune_dataset_metrics"]["reranker_data_metrics"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_negatives_are_mined_from_their_corpus_in_the_review() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let params = "&mine_negatives=true&negatives=2&first_stage=bm25";
    let dataset = validated(&s, params, rows_and_corpus()).await;
    assert_eq!(dataset["validation_status"], "validated", "{dataset}");
    assert_eq!(dataset["mining"]["first_stage"], "bm25");
    assert_eq!(dataset["mining"]["negatives"], 2);
    let part_ids: Vec<&str> = dataset["dataset_parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(part_ids, ["my train.jsonl", "my corpus.jsonl"]);

    let report = &dataset["review"]["mining"];
    assert_eq!(report["first_stage"], "bm25", "{report}");
    assert!(
        report["scorer"]
            .as_str()
            .unwrap()
            .starts_with("cross-encoder"),
        "{report}"
    );
    assert_eq!(report["queries"], QUERIES);
    assert_eq!(report["corpus_docs"], 3 * QUERIES);
    assert_eq!(report["negatives"], 2 * QUERIES, "{report}");
    assert_eq!(report["queries_short"], 0);
    assert!(report["dropped_positive"].as_u64().unwrap() > 0, "{report}");
    assert!(report["seconds"].is_f64());

    // The review is of the mined rows, which training reads.
    let train = &dataset["review"]["train"];
    assert_eq!(train["file"], "my train.jsonl, with mined negatives");
    assert_eq!(train["avg_hard_negatives"], 2.0, "{train}");
    assert_eq!(
        dataset["review"]["valid"]["file"],
        "my train.jsonl, held out, with mined negatives"
    );
    let counts = reranker_metrics(&dataset);
    assert_eq!(counts["num_train_queries"], QUERIES - HELD_OUT);
    assert_eq!(counts["num_eval_queries"], HELD_OUT);
    assert_eq!(counts["num_train_hard_negatives"], 2 * (QUERIES - HELD_OUT));
    let warnings = dataset["validation_warnings"].to_string();
    assert!(
        !warnings.contains("no training row has hard negatives"),
        "{warnings}"
    );

    let mined = read_rows(&mined_file(&s, &dataset, "mined-train.jsonl"));
    let held_out = read_rows(&mined_file(&s, &dataset, "mined-eval.jsonl"));
    assert_eq!(
        (mined.len(), held_out.len()),
        (QUERIES - HELD_OUT, HELD_OUT)
    );
    for row in mined.iter().chain(&held_out) {
        let negatives = row["hard_negatives"].as_array().unwrap();
        assert_eq!(negatives.len(), 2, "{row}");
        assert!(
            !negatives.contains(&row["relevant_passages"][0]),
            "a relevant passage mined as a negative: {row}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beir_collection_is_mined_in_place_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let dataset = validated(&s, "&mine_negatives=true", beir(qrels())).await;
    assert_eq!(dataset["validation_status"], "validated", "{dataset}");
    let id = dataset["id"].as_str().unwrap();
    let parts: Vec<(&str, &str)> = dataset["dataset_parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let corpus_id = format!("{id}-corpus");
    let queries_id = format!("{id}-queries");
    let qrels_id = format!("{id}-qrels");
    assert_eq!(
        parts,
        [
            (corpus_id.as_str(), "my corpus.jsonl"),
            (queries_id.as_str(), "my queries.jsonl"),
            (qrels_id.as_str(), "my qrels.tsv")
        ]
    );
    // The default first stage is dense, which the tiny cross-encoder cannot embed for.
    let report = &dataset["review"]["mining"];
    assert!(
        report["first_stage"]
            .as_str()
            .unwrap()
            .starts_with("bm25 (dense needs a bi-encoder"),
        "{report}"
    );
    assert_eq!(report["negatives"], 7 * QUERIES, "{report}");
    let counts = reranker_metrics(&dataset);
    assert_eq!(counts["num_train_queries"], QUERIES - HELD_OUT);
    assert_eq!(counts["num_eval_queries"], HELD_OUT);
    assert_eq!(
        dataset["review"]["train"]["file"],
        "my qrels.tsv, with mined negatives"
    );
    assert_eq!(dataset["review"]["train"]["avg_hard_negatives"], 7.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_problems_fail_the_validation_and_bad_combinations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let mut bad = qrels();
    bad = bad.replacen("q3\td3\t", "q3\tnope\t", 1);
    let failed = validated(&s, "&mine_negatives=true", beir(bad)).await;
    assert_eq!(failed["validation_status"], "failed", "{failed}");
    let error = failed["validation_error"].as_str().unwrap();
    assert!(
        error.contains("my qrels.tsv:5: no document in the corpus has the id `nope`"),
        "names the uploaded file and line: {error}"
    );
    assert!(
        !error.contains(&dir.path().display().to_string()),
        "{error}"
    );
    assert_eq!(failed["review"]["errors"][0]["file"], "my qrels.tsv");
    assert_eq!(failed["review"]["errors"][0]["line"], 5);

    // A corpus without mining: the rows' review as it is, whose missing negatives it flags with
    // both ways to mine them.
    let form = rows_and_corpus().part("eval_data", Part::text(rows(0..8)).file_name("eval.jsonl"));
    let unmined = validated(&s, "", form).await;
    assert_eq!(unmined["validation_status"], "validated", "{unmined}");
    assert!(unmined.get("mining").is_none(), "{unmined}");
    assert!(unmined["review"].get("mining").is_none());
    let warnings = unmined["validation_warnings"].to_string();
    assert!(
        warnings.contains("no training row has hard negatives"),
        "{warnings}"
    );
    assert!(warnings.contains("mine_negatives=true"), "{warnings}");
    assert!(warnings.contains("finerank mine --beir"), "{warnings}");

    let rows_only = || file(Form::new(), "data", rows(0..QUERIES), "train.jsonl");
    let refused: Vec<(&str, Form, &str)> = vec![
        (
            "",
            beir(qrels()),
            "add the query parameter mine_negatives=true",
        ),
        (
            "",
            rows_and_corpus(),
            "add `eval_data`, or mine_negatives=true",
        ),
        (
            "&mine_negatives=true",
            rows_only(),
            "add the multipart field `corpus`",
        ),
        ("&negatives=3", rows_and_corpus(), "add mine_negatives=true"),
        (
            "&mine_negatives=true&negatives=0",
            rows_and_corpus(),
            "negatives must be 1 to 50",
        ),
        (
            "&mine_negatives=true&first_stage=splade",
            rows_and_corpus(),
            "bm25, dense or hybrid",
        ),
        (
            "&mine_negatives=true",
            file(rows_and_corpus(), "qrels", qrels(), "qrels.tsv"),
            "not both",
        ),
        (
            "&mine_negatives=true",
            file(Form::new(), "corpus", corpus(), "corpus.jsonl"),
            "`data` (the training file, JSONL) is missing",
        ),
    ];
    for (params, form, text) in refused {
        let (status, body) = upload(&s, params, form).await;
        assert_eq!(status, 400, "{params}: {body}");
        assert!(message(&body).contains(text), "{params}: {body}");
    }
    let (_, list) = s.get("/v1/datasets").await;
    assert_eq!(list["datasets"].as_array().unwrap().len(), 2, "{list}");
    let kept = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(kept, 2, "refused uploads leave no files");
    s.stop().await;
}

fn sha256(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fine_tune_on_a_corpus_trains_on_the_mined_rows_and_reports_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUICK).await;
    let params = "&mine_negatives=true&first_stage=bm25";
    let dataset = validated(&s, params, rows_and_corpus()).await;
    assert_eq!(dataset["validation_status"], "validated", "{dataset}");
    let dataset_id = dataset["id"].as_str().unwrap();
    let (_, hyper) = s
        .get(&format!(
            "/v1/finetuning/hyperparameters?dataset_id={dataset_id}"
        ))
        .await;
    assert_eq!(hyper["train_rows"], QUERIES - HELD_OUT, "{hyper}");

    let (id, ready) = finetuned(&s, dataset_id).await;
    assert_eq!(ready["status"], "STATUS_READY", "{ready}");

    let registry = finerank_engine::Registry::open(dir.path()).unwrap();
    let (record, _) = registry.get(&format!("{id}-ft")).unwrap().unwrap();
    let train = mined_file(&s, &dataset, "mined-train.jsonl");
    let eval = mined_file(&s, &dataset, "mined-eval.jsonl");
    assert_eq!(
        record.train_sha256,
        sha256(&train),
        "trained on the mined rows"
    );
    assert_eq!(record.valid_sha256, Some(sha256(&eval)));

    let retrieval = &ready["metrics"]["retrieval"];
    assert_eq!(retrieval["queries"], HELD_OUT, "{retrieval}");
    assert_eq!(retrieval["corpus_docs"], 3 * QUERIES);
    assert_eq!(retrieval["top_k"], 100);
    assert_eq!(retrieval["collection"], "my corpus.jsonl");
    assert!(
        retrieval["split"]
            .as_str()
            .unwrap()
            .contains("chose the checkpoint"),
        "{retrieval}"
    );
    let systems: Vec<&str> = retrieval["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let tuned = format!("{id}-ft");
    assert_eq!(systems, ["bm25", "tiny-bert-cross-encoder", tuned.as_str()]);
    for system in retrieval["systems"].as_array().unwrap() {
        for metric in [
            "ndcg_at_10",
            "recall_at_10",
            "recall_at_100",
            "mrr_at_10",
            "map_at_100",
        ] {
            let e = &system["metrics"][metric];
            let [low, mean, high] = ["ci_low", "mean", "ci_high"].map(|k| e[k].as_f64().unwrap());
            assert!(low <= mean && mean <= high && high <= 1.0, "{system}");
        }
    }
    // Each relevant document is BM25's to find: every query's is among its 100 candidates.
    assert_eq!(
        retrieval["systems"][0]["metrics"]["recall_at_100"]["mean"],
        1.0
    );
    let pairs: Vec<(&str, &str)> = retrieval["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let p = c["comparison"]["ndcg_at_10"]["p_value"].as_f64().unwrap();
            assert!(p > 0.0 && p <= 1.0, "{c}");
            (c["a"].as_str().unwrap(), c["b"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("bm25", "tiny-bert-cross-encoder"),
            ("bm25", tuned.as_str()),
            ("tiny-bert-cross-encoder", tuned.as_str())
        ]
    );
    s.stop().await;
}
