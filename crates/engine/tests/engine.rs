//! Scoring behaviour (ranking, chunking, batching) and the registry's guarantees.
mod shared_store;

use std::path::{Path, PathBuf};

use finerank_engine::{
    dot, resolve, Calibration, DeviceChoice, Group, Kind, LoadOptions, Registry, Reranker, Role,
    ScoreOptions, CALIBRATION_FILE, DEFAULT_MODEL,
};
use finerank_text::{chunk_pairs, chunk_singles, ChunkPolicy, Encoded};
use shared_store::record;

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

/// Each window's raw score, each window scored alone: a cross-encoder's logit of (query,
/// window), a bi-encoder's cosine between the query's embedding and the window's.
fn window_scores(r: &Reranker, q: &str, doc: &str, policy: &ChunkPolicy) -> Vec<f32> {
    let (tok, model) = (r.tokenizer(), r.model());
    let alone = |input: &Encoded| model.infer(&[input]).remove(0);
    match r.kind() {
        Kind::CrossEncoder => chunk_pairs(tok, q, &[doc], policy)
            .inputs
            .iter()
            .map(|input| alone(input)[0])
            .collect(),
        Kind::BiEncoder => {
            let query = alone(&tok.encode_single(q, policy.max_len));
            let (windows, _) = chunk_singles(tok, &[doc], "", policy);
            windows.iter().map(|w| dot(&query, &alone(w))).collect()
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
        let q = "what is the capital of france";
        // One input per forward pass, as `window_scores` runs them, so the scores match exactly.
        let opts = ScoreOptions {
            max_len: Some(64),
            max_batch: 1,
            ..Default::default()
        };
        let policy = ChunkPolicy::new(64);
        let windows = window_scores(&r, q, &long, &policy);
        assert!(windows.len() > 2, "{} windows", windows.len());
        let best = windows.iter().copied().fold(f32::NEG_INFINITY, f32::max);

        let scored = r.score(
            &[Group {
                query: q,
                documents: vec![&long],
            }],
            &opts,
        );
        assert_eq!(scored[0].raw_scores, [best], "windows {windows:?}");
        let out = r.rerank(q, &[&long], None, &opts);
        assert_eq!(out.results[0].relevance_score, r.calibration().score(best));

        // Capped at one window, the document is its first window.
        let first_only = ScoreOptions {
            max_chunks_per_doc: Some(1),
            ..opts.clone()
        };
        let scored = r.score(
            &[Group {
                query: q,
                documents: vec![&long],
            }],
            &first_only,
        );
        assert_eq!(scored[0].raw_scores, [windows[0]]);
        if r.kind() == Kind::BiEncoder {
            // The default model finds the answer, which only the last window holds.
            assert_eq!(windows.last(), Some(&best), "{windows:?}");
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

#[test]
fn registry_publishes_whole_models_only() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::open(tmp.path()).unwrap();
    let id = Registry::new_id();
    let model = load(&shared("fixtures/tiny-bert-cross-encoder"), None);
    let staged = reg.staging_dir(&id).unwrap().join("model");
    model.model().save(&staged, None).unwrap();
    // Staged but unpublished: invisible, and gone after a reopen once its writer died (a crash
    // before publish; dropping the registry lets go of its staging as dying would).
    assert!(reg.get(&id).unwrap().is_none());
    drop(reg);
    let reg = Registry::open(tmp.path()).unwrap();
    assert!(!staged.exists());

    reg.staging_dir(&id).unwrap();
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
    assert_eq!(entries(&tmp.path().join("staging")), Vec::<String>::new());
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn staging_belongs_to_its_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&shared("fixtures/tiny-bert-cross-encoder"), None);
    // A fine-tune writing its model: its registry holds the staging directory.
    let writer = Registry::open(tmp.path()).unwrap();
    let id = Registry::new_id();
    let staged = writer.staging_dir(&id).unwrap().join("model");
    model.model().save(&staged, None).unwrap();

    // Any other command opening the registry meanwhile (a second handle locks through files of
    // its own, as another process does) leaves the model alone, and cannot take the id over.
    let other = Registry::open(tmp.path()).unwrap();
    assert!(
        staged.join("model.safetensors").is_file(),
        "a live writer's model was removed"
    );
    let err = other.staging_dir(&id).unwrap_err().to_string();
    assert!(
        err.contains("another process") && err.contains(&std::process::id().to_string()),
        "{err}"
    );
    writer.publish(&record(&id)).unwrap();
    assert_eq!(other.list().unwrap()[0].id, id);
    assert_eq!(entries(&tmp.path().join("staging")), Vec::<String>::new());

    // A writer that died (its registry dropped, its lock gone) left a model half written, and
    // debris without any owner lies beside it: the next open removes both.
    let dead = Registry::open(tmp.path()).unwrap();
    let half = dead.staging_dir(&Registry::new_id()).unwrap().join("model");
    model.model().save(&half, None).unwrap();
    drop(dead);
    let debris = tmp.path().join("staging").join(Registry::new_id());
    std::fs::create_dir_all(debris.join("model")).unwrap();
    let live = Registry::open(tmp.path()).unwrap();
    let live_id = Registry::new_id();
    live.staging_dir(&live_id).unwrap();
    Registry::open(tmp.path()).unwrap();
    assert_eq!(
        entries(&tmp.path().join("staging")),
        std::slice::from_ref(&live_id)
    );
    // A writer takes over, emptied, a staging directory whose writer died.
    let leftover = debris.join("model/model.safetensors");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"half").unwrap();
    let debris_id = debris.file_name().unwrap().to_str().unwrap();
    assert_eq!(live.staging_dir(debris_id).unwrap(), debris);
    assert!(!leftover.exists());

    // A model its writer gives up on (its save failed) goes at once, lock and owner file too,
    // and the id is free for another writer.
    live.abandon(debris_id);
    live.abandon(&live_id);
    assert_eq!(entries(&tmp.path().join("staging")), Vec::<String>::new());
    other.staging_dir(&live_id).unwrap();
}

#[test]
fn a_delete_cut_short_never_leaves_a_listed_model_without_files() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::open(tmp.path()).unwrap();
    let model = load(&shared("fixtures/tiny-bert-cross-encoder"), None);
    let id = Registry::new_id();
    model
        .model()
        .save(&reg.staging_dir(&id).unwrap().join("model"), None)
        .unwrap();
    let dir = reg.publish(&record(&id)).unwrap();

    // The crash point: delete renamed the model out of `models/` (its first step), then died
    // part way through removing its files.
    let aside = tmp.path().join(format!("staging/{id}.removing"));
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::remove_file(aside.join("model.safetensors")).unwrap();
    assert!(reg.get(&id).unwrap().is_none());
    assert!(reg.list().unwrap().is_empty());
    assert!(resolve(&id, &reg).is_err());
    // The next open finishes the delete.
    let reg = Registry::open(tmp.path()).unwrap();
    assert!(!aside.exists(), "the half-deleted model is still there");
    assert!(reg.list().unwrap().is_empty());
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

/// A copy of a fixture checkpoint that a test may add files to.
fn copy_checkpoint(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn relevance_scores_are_the_calibrated_raw_scores() {
    let r = default_model();
    let q = "what is the capital of france";
    let scored = r.score(
        &[Group {
            query: q,
            documents: DOCS.to_vec(),
        }],
        &ScoreOptions::default(),
    );
    let query = r
        .embed(&[q], Role::Query, &ScoreOptions::default())
        .unwrap();
    let docs = r
        .embed(&DOCS, Role::Document, &ScoreOptions::default())
        .unwrap();
    for (i, (&score, &raw)) in scored[0]
        .scores
        .iter()
        .zip(&scored[0].raw_scores)
        .enumerate()
    {
        let cosine = dot(&query[0], &docs[i]);
        assert!(
            (raw - cosine).abs() < 1e-5,
            "document {i}: {raw} vs {cosine}"
        );
        assert_eq!(score, r.calibration().score(raw));
    }
    // An unrelated document scores near 0, as Cohere's do, so a cutoff drops it.
    assert!(scored[0].scores[2] < 0.05, "{:?}", scored[0].scores);
    assert!(scored[0].scores[1] > 0.5, "{:?}", scored[0].scores);
}

#[test]
fn a_checkpoints_calibration_json_maps_its_scores_and_a_bad_one_is_refused() {
    let dir = copy_checkpoint(&shared("fixtures/tiny-bert-cross-encoder"));
    let plain = load(dir.path(), None);
    assert_eq!(
        plain.calibration(),
        &Calibration::default_for(Kind::CrossEncoder)
    );
    let q = "capital of france";
    let before = plain.rerank(q, &DOCS, None, &ScoreOptions::default());

    let path = dir.path().join(CALIBRATION_FILE);
    std::fs::write(
        &path,
        r#"{"method": "platt", "input": "logit", "scale": 3.0, "bias": -1.5}"#,
    )
    .unwrap();
    let calibrated = load(dir.path(), None);
    let after = calibrated.rerank(q, &DOCS, None, &ScoreOptions::default());
    let order =
        |o: &finerank_engine::RerankOutput| o.results.iter().map(|x| x.index).collect::<Vec<_>>();
    assert_eq!(order(&before), order(&after), "calibration never reorders");
    for (b, a) in before.results.iter().zip(&after.results) {
        let logit = (b.relevance_score / (1.0 - b.relevance_score)).ln();
        let want = 1.0 / (1.0 + (-(3.0 * logit - 1.5)).exp());
        assert!((a.relevance_score - want).abs() < 1e-4, "{a:?} vs {want}");
    }

    // So steep that relevance scores round to 0 or 1 in f32: the order is still the model's.
    std::fs::write(
        &path,
        r#"{"method": "platt", "input": "logit", "scale": 1e6, "bias": 0}"#,
    )
    .unwrap();
    let steep = load(dir.path(), None).rerank(q, &DOCS, None, &ScoreOptions::default());
    assert_eq!(order(&before), order(&steep));

    std::fs::write(
        &path,
        r#"{"method": "platt", "input": "cosine", "scale": 3.0, "bias": -1.5}"#,
    )
    .unwrap();
    let err = Reranker::load("test", dir.path(), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("Cosine"),
        "{err}"
    );

    let mut r = load(dir.path(), Some(Kind::CrossEncoder));
    assert_eq!(
        r.calibration(),
        &Calibration::default_for(Kind::CrossEncoder)
    );
    assert!(r
        .set_calibration(Calibration::default_for(Kind::BiEncoder))
        .is_err());
}

#[test]
fn a_calibration_fitted_on_ranking_tasks_keeps_the_order_and_reports_its_error() {
    let r = default_model();
    let rows: Vec<finerank_data::TestRow> = [
        ("what is the capital of france", 1),
        ("where do cells get their energy", 0),
        ("what colour are bananas", 2),
        ("which river runs through paris", 3),
    ]
    .iter()
    .map(|&(q, gold)| finerank_data::TestRow {
        query: q.into(),
        documents: DOCS.iter().map(|d| d.to_string()).collect(),
        gold_indices: vec![gold],
    })
    .collect();
    let mut seen = Vec::new();
    let fitted = finerank_engine::fit_calibration(
        &r,
        &rows,
        &ScoreOptions::default(),
        r.calibration(),
        &mut |done, total| seen.push((done, total)),
    )
    .unwrap();
    assert_eq!(seen.last(), Some(&(4, 4)));
    assert_eq!(fitted.input, finerank_engine::RawScore::Cosine);
    assert!(fitted.platt.scale > 0.0, "{fitted:?}");
    let report = fitted.fitted_on.unwrap();
    assert_eq!((report.pairs, report.positives), (16, 4));
    assert!(report.ece_after.is_finite() && report.ece_before.is_finite());
}

/// Sets a copied BERT cross-encoder's `classifier.bias` to `value` in its safetensors file, so
/// that every logit it outputs is `value` plus a finite number.
fn set_classifier_bias(dir: &Path, value: f32) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let bias = &header["classifier.bias"];
    assert_eq!(
        (bias["dtype"].as_str(), bias["shape"][0].as_u64()),
        (Some("F32"), Some(1))
    );
    let at = 8 + header_len + bias["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

fn test_row(documents: &[&str], gold: &[usize]) -> finerank_data::TestRow {
    finerank_data::TestRow {
        query: "capital of france".into(),
        documents: documents.iter().map(|d| d.to_string()).collect(),
        gold_indices: gold.to_vec(),
    }
}

#[test]
fn a_tie_counts_against_the_model() {
    let r = load(&shared("fixtures/tiny-bert-cross-encoder"), None);
    // One input per forward pass: identical documents then get bit-identical logits.
    let opts = ScoreOptions {
        max_batch: 1,
        ..Default::default()
    };
    // The relevant document first, as validation lists it, then two copies of it marked
    // irrelevant: the model cannot tell them apart, so it must not get the hit.
    let same = DOCS[1];
    let assessed = finerank_engine::assess(
        &r,
        &[test_row(&[same, same, same], &[0])],
        &opts,
        &mut |_, _| {},
    );
    let m = &assessed.per_query[0];
    assert_eq!((m.first_relevant_rank, m.acc_at_1), (3, 0.0), "{m:?}");
    assert_eq!(assessed.non_finite, 0);
}

#[test]
fn a_model_that_outputs_nan_ranks_nothing_first_and_is_counted() {
    let dir = copy_checkpoint(&shared("fixtures/tiny-bert-cross-encoder"));
    set_classifier_bias(dir.path(), f32::NAN);
    let r = load(dir.path(), None);
    let rows = [test_row(&DOCS, &[0]), test_row(&DOCS, &[3])];
    let assessed = finerank_engine::assess(&r, &rows, &ScoreOptions::default(), &mut |_, _| {});
    assert_eq!(assessed.non_finite, 8);
    for m in &assessed.per_query {
        // Every score is NaN: all tie, and the relevant document ranks last.
        assert_eq!((m.first_relevant_rank, m.acc_at_1), (4, 0.0), "{m:?}");
    }
    // Served, NaN scores keep the documents' order: none is put ahead of another.
    let out = r.rerank("q", &DOCS, None, &ScoreOptions::default());
    let order: Vec<usize> = out.results.iter().map(|x| x.index).collect();
    assert_eq!(order, [0, 1, 2, 3]);
    assert!(out.results.iter().all(|x| x.relevance_score.is_nan()));
}

#[test]
fn assessment_ranks_by_raw_score_where_relevance_scores_saturate() {
    let dir = copy_checkpoint(&shared("fixtures/tiny-bert-cross-encoder"));
    let plain = load(dir.path(), None);
    // Every logit 30 higher: every relevance score is then 1 in f32, and only raw scores rank.
    set_classifier_bias(dir.path(), 30.0);
    let saturated = load(dir.path(), None);
    let rows: Vec<_> = (0..DOCS.len()).map(|g| test_row(&DOCS, &[g])).collect();
    let opts = ScoreOptions::default();
    let scored = saturated.score(&finerank_engine::groups_of_test_rows(&rows), &opts);
    assert!(scored[0].scores.iter().all(|&s| s == 1.0), "{scored:?}");
    let ranks = |r: &Reranker| {
        finerank_engine::assess(r, &rows, &opts, &mut |_, _| {})
            .per_query
            .iter()
            .map(|m| m.first_relevant_rank)
            .collect::<Vec<_>>()
    };
    let want = ranks(&plain);
    assert_eq!(ranks(&saturated), want);
    // Each document is relevant once, so the ranks are a permutation: no tie flattened them.
    let mut sorted = want.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3, 4]);
}

/// A bi-encoder that declares prompts (e5's `query: ` and `passage: `) is served with them:
/// each raw score is the cosine of sentence-transformers' prompted query and document
/// embeddings, which the fixture holds. sentence-transformers cuts a long document where
/// finerank would score its every window, so only the first is scored here.
#[test]
fn a_bi_encoders_prompts_are_applied_when_it_scores() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/families/bert-dense-bi-encoder");
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let vectors =
        |key: &str| -> Vec<Vec<f32>> { serde_json::from_value(exp[key].clone()).unwrap() };
    let (queries, docs) = (vectors("query_embeddings"), vectors("document_embeddings"));
    let documents: Vec<&str> = exp["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let r = load(&dir, None);
    for (q, query) in exp["queries"].as_array().unwrap().iter().zip(&queries) {
        let scored = r.score(
            &[Group {
                query: q.as_str().unwrap(),
                documents: documents.clone(),
            }],
            &ScoreOptions {
                max_chunks_per_doc: Some(1),
                ..ScoreOptions::default()
            },
        );
        for (raw, doc) in scored[0].raw_scores.iter().zip(&docs) {
            let want = dot(query, doc);
            assert!((raw - want).abs() < 1e-4, "{q}: {raw} vs {want}");
        }
    }
}

/// The tiny Qwen3 reranker of the model crate's family fixtures.
fn qwen3_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/families/qwen3-reranker")
}

/// An LLM reranker scores through its prompt with the request's instruction, else its own: its
/// relevance scores are transformers' P("yes") for the model card's inputs (at the fixture's
/// 160 tokens, the first window being the card's cut), and a fine-tuned model's
/// `instruction.json` becomes its default.
#[test]
fn an_llm_reranker_scores_p_yes_with_the_instruction_it_is_given() {
    let dir = qwen3_fixture();
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let r = load(&dir, None);
    assert_eq!(r.kind(), Kind::CrossEncoder);
    assert_eq!(r.instruction(), exp["default_instruction"].as_str());
    let opts = |instruction: Option<&str>| ScoreOptions {
        max_len: Some(160),
        max_chunks_per_doc: Some(1),
        instruction: instruction.map(str::to_string),
        ..ScoreOptions::default()
    };
    let pairs = exp["pairs"].as_array().unwrap();
    let score = |r: &Reranker, p: &serde_json::Value, instruction: Option<&str>| {
        let group = Group {
            query: p["query"].as_str().unwrap(),
            documents: vec![p["document"].as_str().unwrap()],
        };
        r.score(&[group], &opts(instruction)).remove(0).scores[0]
    };
    for (i, p) in pairs.iter().enumerate() {
        let want = exp["scores"][i].as_f64().unwrap() as f32;
        let got = score(&r, p, p["instruction"].as_str());
        assert!((got - want).abs() < 1e-4, "pair {i}: {got} vs {want}");
    }

    // Saved with the custom instruction, the model scores by it when a request gives none.
    let custom = pairs.last().unwrap();
    let instruction = custom["instruction"].as_str().unwrap();
    let copy = copy_checkpoint(&dir);
    let mut tuned = load(copy.path(), None);
    tuned.set_instruction(instruction).unwrap();
    tuned.write_instruction(copy.path()).unwrap();
    let reloaded = load(copy.path(), None);
    assert_eq!(reloaded.instruction(), Some(instruction));
    let want = exp["scores"][pairs.len() - 1].as_f64().unwrap() as f32;
    assert!((score(&reloaded, custom, None) - want).abs() < 1e-4);

    // A model that takes no instruction refuses one, naming itself.
    let bert = default_model();
    assert_eq!(bert.instruction(), None);
    let err = bert.check_instruction(Some("x")).unwrap_err().to_string();
    assert!(err.contains("takes no instruction"), "{err}");
    assert!(bert.check_instruction(None).is_ok());
}
