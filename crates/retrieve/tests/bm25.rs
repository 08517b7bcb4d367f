//! BM25 search and its on-disk cache; no model needed.
use std::path::Path;

use finerank_data::{Corpus, Doc, Judgements, Query};
use finerank_retrieve::{bm25_run, to_eval, Bm25Index};

const DOCS: [(&str, &str); 6] = [
    ("Paris", "Paris is the capital and largest city of France."),
    (
        "Mitochondria",
        "The mitochondria is the powerhouse of the cell.",
    ),
    ("Bananas", "Bananas are yellow and rich in potassium."),
    (
        "Apple orchards",
        "An apple tree grows in an orchard; apples ripen in autumn.",
    ),
    ("Berlin", "Berlin is the capital of Germany."),
    (
        "",
        "Rust: a language empowering everyone to build reliable software.",
    ),
];

fn corpus() -> Corpus {
    corpus_of(&DOCS)
}

fn corpus_of(docs: &[(&str, &str)]) -> Corpus {
    Corpus::new(
        docs.iter()
            .enumerate()
            .map(|(i, (title, text))| Doc {
                id: format!("d{i}"),
                title: title.to_string(),
                text: text.to_string(),
            })
            .collect(),
    )
    .unwrap()
}

fn build(corpus: &Corpus, cache: &Path) -> (Bm25Index, usize) {
    let mut calls = 0;
    let index = Bm25Index::open_or_build(corpus, cache, &mut |_, _| calls += 1).unwrap();
    (index, calls)
}

fn docs(index: &Bm25Index, query: &str) -> Vec<usize> {
    index.search(query, 10).iter().map(|h| h.doc).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn finds_the_obvious_document_best_first() {
    let cache = tempfile::tempdir().unwrap();
    let (index, _) = build(&corpus(), cache.path());
    let hits = index.search("What is the capital of France?", 10);
    assert_eq!(hits[0].doc, 0, "{hits:?}");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(hits.iter().all(|h| h.score > 0.0));
    // Titles are indexed; words match whatever their case and inflection.
    assert_eq!(docs(&index, "orchards")[0], 3);
    assert_eq!(docs(&index, "banana"), [2]);
    assert_eq!(docs(&index, "ripening"), [3]);
    assert_eq!(docs(&index, "GERMANY"), [4]);
    assert_eq!(index.search("capital", 1).len(), 1);
    assert!(index.search("capital", 0).is_empty());
}

#[test]
fn any_text_is_a_safe_query() {
    let cache = tempfile::tempdir().unwrap();
    let (index, _) = build(&corpus(), cache.path());
    // Query-parser syntax would fail on or reinterpret these; here they are only words.
    assert_eq!(docs(&index, "\"capital\" of: France")[0], 0);
    assert_eq!(docs(&index, "title:Berlin AND (Germany")[0], 4);
    assert_eq!(docs(&index, "rust: reliable* software~2 ^3")[0], 5);
    for nothing in [
        "",
        "   ",
        "\"",
        ":",
        "\"\":::()[]{}^~*?!+-",
        "the of and is",
        "AND OR NOT",
    ] {
        assert!(index.search(nothing, 10).is_empty(), "{nothing:?}");
    }
    assert!(index.search("zebra quantum", 10).is_empty());
    let many = index.search_many(&["capital France", "", "bananas"], 3);
    assert_eq!(many[0], index.search("capital France", 3));
    assert!(many[1].is_empty());
    assert_eq!(many[2][0].doc, 2);
}

#[test]
fn a_second_open_reuses_the_cached_index() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let (first, calls) = build(&corpus, cache.path());
    assert!(calls > 0, "a build reports progress");
    let (second, calls) = build(&corpus, cache.path());
    assert_eq!(calls, 0, "a cache hit builds nothing");
    assert_eq!(second.search("capital", 10), first.search("capital", 10));
    let prefix = &corpus.fingerprint()[..16];
    assert_eq!(entries(cache.path()), [format!("bm25-{prefix}")]);
    // Another corpus gets its own index.
    let mut other = DOCS.to_vec();
    other.pop();
    let other = corpus_of(&other);
    let (_, calls) = build(&other, cache.path());
    assert!(calls > 0);
    assert_eq!(entries(cache.path()).len(), 2);
}

#[test]
fn a_crashed_build_is_ignored_and_cleaned() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let name = format!("bm25-{}", &corpus.fingerprint()[..16]);
    // What a killed builder leaves: a half-written index under its temporary name. No process
    // has pid i32::MAX (Linux caps pids far lower).
    let crashed = cache.path().join(format!(".{name}.{}.0.tmp", i32::MAX));
    std::fs::create_dir(&crashed).unwrap();
    std::fs::write(crashed.join("meta.json"), "{ half").unwrap();
    let (index, calls) = build(&corpus, cache.path());
    assert!(calls > 0);
    assert_eq!(docs(&index, "capital France")[0], 0);
    assert_eq!(entries(cache.path()), [name]);
}

#[test]
fn a_damaged_index_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let dir = cache
        .path()
        .join(format!("bm25-{}", &corpus.fingerprint()[..16]));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("meta.json"), "not an index").unwrap();
    let (index, calls) = build(&corpus, cache.path());
    assert!(calls > 0);
    assert_eq!(docs(&index, "Germany"), [4]);
}

#[test]
fn concurrent_builders_both_get_a_whole_index() {
    let cache = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let results: Vec<Vec<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| docs(&build(&corpus, cache.path()).0, "capital")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| r == &results[0] && r.len() == 2));
    assert_eq!(
        entries(cache.path()).len(),
        1,
        "{:?}",
        entries(cache.path())
    );
}

#[test]
fn bm25_run_feeds_retrieval_metrics() {
    let cache = tempfile::tempdir().unwrap();
    let (index, _) = build(&corpus(), cache.path());
    let judgements = Judgements {
        queries: vec![
            Query {
                id: "q1".into(),
                text: "capital city".into(),
            },
            Query {
                id: "q2".into(),
                text: "yellow fruit".into(),
            },
        ],
        grades: vec![vec![(0, 2), (4, 1)], vec![(2, 1), (3, 0)]],
    };
    let run = bm25_run(&index, &judgements, 3);
    assert_eq!(run.len(), 2);
    assert!(run[0].len() <= 3 && run[0][0].doc == 0);
    let eval = to_eval(&judgements, &run);
    assert_eq!(eval[0].relevant, [2, 1]);
    assert_eq!(eval[0].grades[0], 2);
    assert_eq!(eval[1].scores.len(), run[1].len());
}
