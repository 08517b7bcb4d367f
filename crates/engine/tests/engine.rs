//! Scoring behaviour (ranking, chunking, batching) and the registry's guarantees.
use std::path::{Path, PathBuf};

use finerank_engine::{
    resolve, DeviceChoice, Kind, LoadOptions, ModelRecord, Registry, Reranker, ScoreOptions,
    DEFAULT_MODEL,
};

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

fn load(dir: &Path, kind: Option<Kind>) -> Reranker {
    Reranker::load(
        "test",
        dir,
        &LoadOptions {
            device: DeviceChoice::Cpu,
            kind,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

fn default_model() -> Reranker {
    let registry = Registry::open(tempfile::tempdir().unwrap().path()).unwrap();
    let (_, dir) = resolve(DEFAULT_MODEL, &registry).unwrap();
    load(&dir, None)
}

const DOCS: [&str; 4] = [
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital and largest city of France.",
    "Bananas are yellow.",
    "France's capital city, Paris, lies on the Seine.",
];

#[test]
fn rerank_orders_best_first_and_respects_top_n() {
    let r = default_model();
    let out = r.rerank(
        "what is the capital of france",
        &DOCS,
        None,
        &ScoreOptions::default(),
    );
    let order: Vec<usize> = out.results.iter().map(|x| x.index).collect();
    assert_eq!(order.len(), 4);
    assert!(
        order[..2].contains(&1) && order[..2].contains(&3),
        "{order:?}"
    );
    assert!(out
        .results
        .windows(2)
        .all(|w| w[0].relevance_score >= w[1].relevance_score));
    assert!(out
        .results
        .iter()
        .all(|x| (0.0..=1.0).contains(&x.relevance_score)));
    let top = r.rerank(
        "what is the capital of france",
        &DOCS,
        Some(2),
        &ScoreOptions::default(),
    );
    assert_eq!(top.results, out.results[..2]);
}

#[test]
fn scores_do_not_depend_on_batching() {
    for r in [
        default_model(),
        load(&shared("fixtures/tiny-xlmr-cross-encoder"), None),
    ] {
        let rows = [finerank_data::TestRow {
            query: "capital of france".into(),
            documents: DOCS.iter().map(|d| d.to_string()).collect(),
            gold_indices: vec![1],
        }];
        let groups = finerank_engine::groups_of_test_rows(&rows);
        let big = r.score(&groups, &ScoreOptions::default());
        let tiny = r.score(
            &groups,
            &ScoreOptions {
                batch_tokens: 1,
                max_batch: 1,
                ..Default::default()
            },
        );
        for (a, b) in big[0].scores.iter().zip(&tiny[0].scores) {
            assert!(
                (a - b).abs() < 1e-5,
                "{:?} vs {:?}",
                big[0].scores,
                tiny[0].scores
            );
        }
    }
}

#[test]
fn a_long_document_takes_its_best_chunk() {
    for r in [
        default_model(),
        load(&shared("fixtures/tiny-bert-cross-encoder"), None),
    ] {
        let filler = "The weather report mentions rain and wind over the hills. ".repeat(40);
        let answer = "Paris is the capital and largest city of France.";
        let long = format!("{filler}{answer}");
        let opts = ScoreOptions {
            max_len: Some(64),
            ..Default::default()
        };
        let q = "what is the capital of france";
        let alone = r.rerank(q, &[answer], None, &opts).results[0].relevance_score;
        let whole = r.rerank(q, &[&long], None, &opts).results[0].relevance_score;
        let start_only = r.rerank(
            q,
            &[&long],
            None,
            &ScoreOptions {
                max_chunks_per_doc: Some(1),
                ..opts.clone()
            },
        );
        let filler_score = r.rerank(q, &[&filler], None, &opts).results[0].relevance_score;
        assert!(
            whole >= filler_score,
            "best chunk {whole} < filler {filler_score}"
        );
        if r.kind() == Kind::BiEncoder {
            // The answer sits in the last window, so capping chunks loses it.
            assert!(whole > start_only.results[0].relevance_score);
            assert!(whole > 0.5 * alone);
        }
    }
}

#[test]
fn a_long_query_is_reported_not_dropped() {
    let r = load(&shared("fixtures/tiny-bert-cross-encoder"), None);
    let q = "an extremely long query ".repeat(100);
    let out = r.rerank(&q, &DOCS, None, &ScoreOptions::default());
    assert!(out.query_truncated);
    assert_eq!(out.results.len(), 4);
    let short = r.rerank("short query", &DOCS, None, &ScoreOptions::default());
    assert!(!short.query_truncated);
}

fn record(id: &str) -> ModelRecord {
    ModelRecord {
        id: id.into(),
        name: "n".into(),
        kind: Kind::CrossEncoder,
        base_model: "b".into(),
        base_model_dir: "d".into(),
        created_at: finerank_engine::now_rfc3339(),
        hyperparameters: serde_json::json!({}),
        metrics: serde_json::json!({}),
        train_sha256: "0".into(),
        valid_sha256: None,
    }
}

#[test]
fn registry_publishes_whole_models_only() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::open(tmp.path()).unwrap();
    let id = Registry::new_id();
    let model = load(&shared("fixtures/tiny-bert-cross-encoder"), None);
    let staged = reg.staging_dir(&id).unwrap().join("model");
    model.model().save(&staged, None).unwrap();
    // Staged but unpublished: invisible, and gone after a reopen (a crash before publish).
    assert!(reg.get(&id).unwrap().is_none());
    let reg = Registry::open(tmp.path()).unwrap();
    assert!(!staged.exists());

    model.model().save(&staged, None).unwrap();
    let dir = reg.publish(&record(&id)).unwrap();
    assert!(dir.join("model.safetensors").exists() && dir.join("finerank.json").exists());
    assert_eq!(reg.list().unwrap()[0].id, id);
    let (name, resolved) = resolve(&id, &reg).unwrap();
    assert_eq!((name.as_str(), resolved), (id.as_str(), dir.clone()));
    load(&dir, None);
    assert!(reg.delete(&id).unwrap());
    assert!(reg.get(&id).unwrap().is_none());
    assert!(!reg.delete(&id).unwrap());
}

#[test]
fn ids_that_are_not_ours_never_become_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::open(tmp.path()).unwrap();
    for bad in [
        "../etc-ft",
        "/tmp/x-ft",
        "a\0b-ft",
        "not-a-uuid-ft",
        "0f0f0f0f-0f0f-0f0f-0f0f-0f0f0f0f0f0f/../x-ft",
        "ＡＢ-ft",
    ] {
        assert!(reg.get(bad).is_err(), "{bad:?} accepted");
        assert!(reg.delete(bad).is_err(), "{bad:?} accepted");
        assert!(reg.staging_dir(bad).is_err(), "{bad:?} accepted");
    }
    let err = resolve("no-such-model", &reg).unwrap_err().to_string();
    assert!(err.contains("finerank models"), "{err}");
}
