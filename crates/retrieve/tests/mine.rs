//! Mining, dense retrieval and reranked runs with real models: the default bi-encoder
//! (scripts/bootstrap.sh installs it) and a tiny cross-encoder fixture.
use std::path::{Path, PathBuf};

use finerank_data::{Corpus, Doc, Judgements, Query, TrainRow};
use finerank_engine::{default_model_dir, DeviceChoice, LoadOptions, Reranker, Role, ScoreOptions};
use finerank_retrieve::{
    corpus_embeddings, mine, model_fingerprint, rerank_run, Bm25Index, FirstStage, Hit,
    MineOptions, MineReport, RetrieveError, Sampling,
};

const DOCS: [&str; 20] = [
    "Paris is the capital and largest city of France.",
    "France's capital, Paris, lies on the river Seine.",
    "Lyon is the third-largest city of France, known for its cuisine.",
    "The Eiffel Tower was built in Paris for the 1889 World's Fair.",
    "Marseille is a port city in the south of France.",
    "The mitochondria is the powerhouse of the cell, producing ATP.",
    "Ribosomes in the cell build proteins from amino acids.",
    "The cell nucleus holds the chromosomes and DNA.",
    "Chloroplasts let plant cells turn sunlight into sugar.",
    "Bananas are yellow fruit rich in potassium.",
    "Lemons are sour yellow citrus fruit.",
    "Strawberries are red fruit with seeds on the outside.",
    "Apples grow on trees in orchards and ripen in autumn.",
    "The Moon is about 384,000 kilometres from the Earth.",
    "Mars is the fourth planet from the Sun, a red and dusty world.",
    "The Sun is a star at the centre of the solar system.",
    "Jupiter is the largest planet of the solar system.",
    "Rust is a programming language focused on safety and speed.",
    "Python is a popular programming language for data science.",
    "A compiler translates source code into machine code.",
];

fn corpus() -> Corpus {
    Corpus::new(
        DOCS.iter()
            .enumerate()
            .map(|(i, text)| Doc {
                id: format!("d{i}"),
                title: String::new(),
                text: text.to_string(),
            })
            .collect(),
    )
    .unwrap()
}

/// Four queries, each with one relevant document; the first also judges a document not relevant.
fn judgements() -> Judgements {
    let q = |id: &str, text: &str| Query {
        id: id.into(),
        text: text.into(),
    };
    Judgements {
        queries: vec![
            q("q0", "What is the capital of France?"),
            q("q1", "What does the mitochondria do in a cell?"),
            q("q2", "Which fruit is yellow?"),
            q("q3", "How far away is the Moon?"),
        ],
        grades: vec![
            vec![(0, 2), (4, 0)],
            vec![(5, 1)],
            vec![(9, 1)],
            vec![(13, 1)],
        ],
    }
}

fn load(dir: &Path) -> Reranker {
    let opts = LoadOptions {
        device: DeviceChoice::Cpu,
        ..LoadOptions::default()
    };
    Reranker::load("test", dir, &opts).unwrap()
}

fn cross_encoder_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/tiny-xlmr-cross-encoder")
}

fn run_mine(
    scorer: Option<&Reranker>,
    opts: &MineOptions,
    cache: &Path,
) -> Result<(Vec<TrainRow>, MineReport), RetrieveError> {
    let key = scorer.map(|_| model_fingerprint(&default_model_dir()).unwrap());
    let scorer = scorer.zip(key.as_deref());
    mine(
        &corpus(),
        &judgements(),
        scorer,
        opts,
        cache,
        &mut |_, _, _| {},
    )
}

/// Every row keeps its query and positives, and no negative is a positive or repeats.
fn check_rows(rows: &[TrainRow], opts: &MineOptions) {
    let corpus = corpus();
    let judgements = judgements();
    assert_eq!(rows.len(), judgements.queries.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.query, judgements.queries[i].text);
        let positives: Vec<String> = judgements
            .relevant(i)
            .iter()
            .map(|&d| corpus.docs[d].full_text())
            .collect();
        assert_eq!(row.relevant_passages, positives);
        assert!(row.hard_negatives.len() <= opts.negatives);
        for (j, n) in row.hard_negatives.iter().enumerate() {
            assert!(
                !positives.contains(n),
                "query {i}: a positive mined as negative"
            );
            assert!(!row.hard_negatives[..j].contains(n), "query {i}: {n} twice");
        }
    }
}

fn cosine(model: &Reranker, a: &str, b: &str) -> f64 {
    let v = model
        .embed(&[a, b], Role::Document, &ScoreOptions::default())
        .unwrap();
    f64::from(v[0].iter().zip(&v[1]).map(|(x, y)| x * y).sum::<f32>())
}

#[test]
fn hybrid_mining_with_a_bi_encoder_is_seeded_and_cached() {
    let model = load(&default_model_dir());
    let cache = tempfile::tempdir().unwrap();
    let opts = MineOptions {
        first_stage: FirstStage::Hybrid,
        negatives: 3,
        range_max: 15,
        sampling: Sampling::Random,
        seed: 11,
        ..MineOptions::default()
    };
    let (rows, first) = run_mine(Some(&model), &opts, cache.path()).unwrap();
    check_rows(&rows, &opts);
    assert!(first.cache_hits.is_empty(), "{:?}", first.cache_hits);
    assert_eq!(first.first_stage, "hybrid");
    assert_eq!(first.scorer, "bi-encoder test");
    assert_eq!((first.queries, first.corpus_docs), (4, 20));
    assert_eq!(
        first.negatives,
        rows.iter().map(|r| r.hard_negatives.len()).sum::<usize>()
    );
    assert_eq!(first.negatives, 12, "{first:?}");
    // Every positive is in the top 15 of this small corpus, so each was met and dropped.
    assert_eq!(first.dropped_positive, 4);

    let (again, second) = run_mine(Some(&model), &opts, cache.path()).unwrap();
    assert_eq!(again, rows, "a seed repeats exactly");
    assert_eq!(second.cache_hits, ["bm25 index", "corpus embeddings"]);
    assert_eq!(
        MineReport {
            seconds: 0.0,
            cache_hits: vec![],
            ..second
        },
        MineReport {
            seconds: 0.0,
            ..first
        }
    );

    let (other, _) = run_mine(
        Some(&model),
        &MineOptions { seed: 12, ..opts },
        cache.path(),
    )
    .unwrap();
    assert_ne!(other, rows, "another seed draws other negatives");
}

#[test]
fn dense_and_bm25_candidates_respect_the_margin_on_the_bi_encoders_cosine() {
    let model = load(&default_model_dir());
    let cache = tempfile::tempdir().unwrap();
    for first_stage in [FirstStage::Dense, FirstStage::Bm25] {
        let opts = MineOptions {
            first_stage,
            negatives: 5,
            relative_margin: Some(0.05),
            ..MineOptions::default()
        };
        let (rows, report) = run_mine(Some(&model), &opts, cache.path()).unwrap();
        check_rows(&rows, &opts);
        assert_eq!(report.first_stage, first_stage.to_string());
        assert!(
            report.candidates >= report.negatives + report.dropped_relative_margin,
            "{report:?}"
        );
        for row in &rows {
            let positive = cosine(&model, &row.query, &row.relevant_passages[0]);
            let scores: Vec<f64> = row
                .hard_negatives
                .iter()
                .map(|n| cosine(&model, &row.query, n))
                .collect();
            // Best first, each at most 95% of the positive's score (a little slack for batching).
            assert!(scores.windows(2).all(|w| w[0] >= w[1] - 1e-4), "{scores:?}");
            assert!(
                scores.iter().all(|&s| s <= positive * 0.95 + 1e-4),
                "{scores:?} vs {positive}"
            );
        }
        // The top negative of the France question is about France: mining finds near misses.
        assert!(
            rows[0].hard_negatives[0].contains("France")
                || rows[0].hard_negatives[0].contains("Paris")
        );
    }
    // Neither stage embedded the whole corpus through the cache but the dense one.
    let cached: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("emb-"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
}

#[test]
fn without_a_model_bm25_scores_decide() {
    let cache = tempfile::tempdir().unwrap();
    let opts = MineOptions {
        first_stage: FirstStage::Bm25,
        negatives: 2,
        // A candidate scoring within 5% of the positive is dropped as a likely unjudged positive.
        relative_margin: Some(0.05),
        ..MineOptions::default()
    };
    let (rows, report) = run_mine(None, &opts, cache.path()).unwrap();
    check_rows(&rows, &opts);
    assert_eq!(report.scorer, "bm25");
    assert!(report.dropped_relative_margin > 0, "{report:?}");
    // The oracle: BM25's ranking without the positive and what scores within 5% of it, top two.
    let index = Bm25Index::open_or_build(&corpus(), cache.path(), &mut |_, _| {}).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let positive = judgements().relevant(i)[0];
        let hits = index.search(&row.query, 20);
        let bar = hits.iter().find(|h| h.doc == positive).unwrap().score;
        let expected: Vec<&str> = hits
            .iter()
            .filter(|h| h.doc != positive && h.score <= bar * 0.95)
            .take(2)
            .map(|h| DOCS[h.doc])
            .collect();
        assert_eq!(row.hard_negatives, expected, "query {i}");
    }
    let (_, again) = run_mine(None, &opts, cache.path()).unwrap();
    assert_eq!(again.cache_hits, ["bm25 index"]);

    let dense = MineOptions {
        first_stage: FirstStage::Dense,
        ..opts
    };
    let err = run_mine(None, &dense, cache.path()).unwrap_err();
    assert!(matches!(err, RetrieveError::NoEmbeddings(_)));
    assert!(err.to_string().contains("--first-stage bm25"), "{err}");
}

#[test]
fn a_cross_encoder_rescores_bm25_candidates() {
    let model = load(&cross_encoder_dir());
    let cache = tempfile::tempdir().unwrap();
    let opts = MineOptions {
        first_stage: FirstStage::Dense,
        negatives: 3,
        relative_margin: None,
        ..MineOptions::default()
    };
    let key = "cross-encoder-key";
    let (rows, report) = mine(
        &corpus(),
        &judgements(),
        Some((&model, key)),
        &opts,
        cache.path(),
        &mut |_, _, _| {},
    )
    .unwrap();
    check_rows(&rows, &opts);
    assert!(
        report
            .first_stage
            .starts_with("bm25 (dense needs a bi-encoder"),
        "{}",
        report.first_stage
    );
    assert_eq!(report.scorer, "cross-encoder test");

    let err = corpus_embeddings(
        &model,
        key,
        &corpus(),
        cache.path(),
        &ScoreOptions::default(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, RetrieveError::NoEmbeddings(_)), "{err}");
}

#[test]
fn rerank_run_rescores_in_place() {
    let model = load(&cross_encoder_dir());
    let judgements = judgements();
    let run: Vec<Vec<Hit>> = (0..4)
        .map(|q| {
            (0..5)
                .map(|d| Hit {
                    doc: (q * 5 + d) % 20,
                    score: -1.0,
                })
                .collect()
        })
        .collect();
    let mut seen = Vec::new();
    let reranked = rerank_run(
        &model,
        &corpus(),
        &judgements,
        &run,
        &ScoreOptions::default(),
        &mut |d, t| seen.push((d, t)),
    );
    assert_eq!(seen.last(), Some(&(4, 4)));
    for (before, after) in run.iter().zip(&reranked) {
        let docs = |hits: &[Hit]| hits.iter().map(|h| h.doc).collect::<Vec<_>>();
        assert_eq!(docs(before), docs(after));
        assert!(after.iter().all(|h| h.score.is_finite()));
    }
    // The model's raw scores (logits here), as scoring each query alone gives them: a run is
    // ranked by them, where a saturating calibration would tie confident documents.
    let alone = model.score(
        &[finerank_engine::Group {
            query: &judgements.queries[1].text,
            documents: run[1].iter().map(|h| DOCS[h.doc]).collect(),
        }],
        &ScoreOptions::default(),
    );
    assert_eq!(reranked[1].len(), alone[0].raw_scores.len());
    for (h, s) in reranked[1].iter().zip(&alone[0].raw_scores) {
        assert!((h.score - f64::from(*s)).abs() < 1e-4);
    }
}

#[test]
fn corpus_embeddings_are_cached_and_rebuilt_when_damaged() {
    let model = load(&default_model_dir());
    let key = model_fingerprint(&default_model_dir()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let embed = |calls: &mut usize| {
        corpus_embeddings(
            &model,
            &key,
            &corpus,
            cache.path(),
            &ScoreOptions::default(),
            &mut |_, _| *calls += 1,
        )
        .unwrap()
    };
    let mut calls = 0;
    let first = embed(&mut calls);
    assert!(calls > 0);
    assert_eq!(first.data.len(), 20 * first.dim);
    for row in first.data.chunks(first.dim) {
        let norm: f32 = row.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "unit length");
    }
    calls = 0;
    assert_eq!(embed(&mut calls), first);
    assert_eq!(calls, 0, "a cache hit embeds nothing");

    let file = std::fs::read_dir(cache.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        name,
        format!("emb-{}-{}-256.bin", &key[..16], &corpus.fingerprint()[..16])
    );
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    calls = 0;
    assert_eq!(embed(&mut calls), first);
    assert!(calls > 0, "a file cut short is rebuilt");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

#[test]
fn model_fingerprint_follows_the_files_that_decide_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
    write("config.json", "{}");
    write("tokenizer.json", "{}");
    let missing = model_fingerprint(dir.path()).unwrap_err();
    assert!(
        missing.to_string().contains("model.safetensors"),
        "{missing}"
    );
    write("model.safetensors", "weights");
    let base = model_fingerprint(dir.path()).unwrap();
    assert_eq!(base.len(), 64);
    assert_eq!(model_fingerprint(dir.path()).unwrap(), base);
    write("README.md", "ignored");
    assert_eq!(model_fingerprint(dir.path()).unwrap(), base);
    write("model.safetensors", "weights, fine-tuned");
    let tuned = model_fingerprint(dir.path()).unwrap();
    assert_ne!(tuned, base);
    write("modules.json", "[]");
    let listed = model_fingerprint(dir.path()).unwrap();
    assert_ne!(listed, tuned);
    // A bi-encoder's prompts and its modules' files (a Dense layer's weights) decide its
    // embeddings too.
    write(
        "config_sentence_transformers.json",
        r#"{"prompts": {"query": "query: "}}"#,
    );
    let prompted = model_fingerprint(dir.path()).unwrap();
    assert_ne!(prompted, listed);
    write(
        "modules.json",
        r#"[{"idx": 0, "name": "0", "path": ""}, {"idx": 1, "name": "1", "path": "2_Dense"}]"#,
    );
    std::fs::create_dir(dir.path().join("2_Dense")).unwrap();
    write("2_Dense/model.safetensors", "projection");
    let dense = model_fingerprint(dir.path()).unwrap();
    write("2_Dense/model.safetensors", "projection, fine-tuned");
    assert_ne!(model_fingerprint(dir.path()).unwrap(), dense);
}

/// A corpus that repeats the positive of q0 (with other spacing) and a likely candidate under
/// other ids: neither copy is mined.
#[test]
fn texts_repeated_under_other_ids_are_not_mined() {
    let mut docs = corpus().docs;
    for text in [format!("  {}  ", DOCS[0]), DOCS[1].to_string()] {
        docs.push(Doc {
            id: format!("copy{}", docs.len()),
            title: String::new(),
            text,
        });
    }
    let corpus = Corpus::new(docs).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opts = MineOptions {
        first_stage: FirstStage::Bm25,
        negatives: 5,
        ..MineOptions::default()
    };
    let (rows, report) = mine(
        &corpus,
        &judgements(),
        None,
        &opts,
        cache.path(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.dropped_repeated_text, 2, "{report:?}");
    let france = &rows[0];
    let trimmed: Vec<&str> = france.hard_negatives.iter().map(|n| n.trim()).collect();
    assert!(
        !trimmed.contains(&DOCS[0]),
        "a copy of the positive: {trimmed:?}"
    );
    assert_eq!(
        trimmed.iter().filter(|&&n| n == DOCS[1]).count(),
        1,
        "{trimmed:?}"
    );
}
