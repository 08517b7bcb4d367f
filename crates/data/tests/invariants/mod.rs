//! What must hold when the dataset readers and the validator meet any bytes at all. Two drivers
//! search for a counterexample: the property tests (tests/properties.rs, proptest, shrinking to
//! a small failing file) and the fuzz targets under fuzz/ (libFuzzer, guided by coverage), which
//! include this file by path, so the invariants are stated once.
//!
//! Each `check_*` writes its input into `dir`, runs the readers on it, and panics on a violation:
//! a reader may reject anything, but only with a problem that points into the file and says
//! what to do, and what it accepts must make sense.
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use finerank_data::{
    example_to_train, read_beir, read_documents, read_raw, read_test, read_train, validate,
    write_beir, write_jsonl, DataError, FileStats, Mapping, Problem, ValidateOptions,
};
use serde::Serialize;

/// The training, test and document-list readers on `bytes`. Accepted rows are well formed and
/// come back unchanged from `write_jsonl` and the same reader.
pub fn check_jsonl_readers(dir: &Path, bytes: &[u8]) {
    let path = write(dir, "rows.jsonl", bytes);
    if let Some(rows) = accepted(read_train(&path), &path, bytes) {
        for row in &rows {
            assert!(!row.query.trim().is_empty(), "{row:?}");
            let relevant = &row.relevant_passages;
            assert!(relevant.iter().any(|p| !p.trim().is_empty()), "{row:?}");
        }
        assert_round_trip(dir, &rows, read_train);
    }
    if let Some(rows) = accepted(read_test(&path), &path, bytes) {
        for row in &rows {
            let gold = &row.gold_indices;
            assert!(!gold.is_empty(), "{row:?}");
            assert!(gold.iter().all(|&i| i < row.documents.len()), "{row:?}");
            assert!(
                (1..gold.len()).all(|i| !gold[..i].contains(&gold[i])),
                "{row:?}"
            );
        }
        assert_round_trip(dir, &rows, read_test);
    }
    // The extension picks the layout: one document per line, or a JSON array.
    for name in ["documents.txt", "documents.json"] {
        let path = write(dir, name, bytes);
        if let Some(documents) = accepted(read_documents(&path), &path, bytes) {
            assert!(!documents.is_empty());
        }
    }
}

/// The BEIR reader on `bytes` cut at NUL bytes into corpus.jsonl, queries.jsonl and
/// qrels/test.tsv. A rejection names one of the three files (and a line it has) and a fix; an
/// accepted collection gives every judged query a relevant document in the corpus, and comes back
/// unchanged from `write_beir` and `read_beir`.
pub fn check_beir_reader(dir: &Path, bytes: &[u8]) {
    let mut parts = bytes.splitn(3, |&b| b == 0);
    std::fs::create_dir_all(dir.join("qrels")).expect("creating qrels/");
    let files: Vec<(PathBuf, &[u8])> = ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"]
        .iter()
        .map(|name| {
            let part = parts.next().unwrap_or_default();
            (write(dir, name, part), part)
        })
        .collect();
    let beir = match read_beir(dir, "test") {
        Ok(beir) => beir,
        Err(DataError::Invalid(problem)) => {
            let (path, part) = files
                .iter()
                .find(|(path, _)| problem.file == path.display().to_string())
                .unwrap_or_else(|| panic!("the problem names no input file: {problem}"));
            check_problem(&problem, path, part);
            return;
        }
        Err(e @ DataError::Io { .. }) => panic!("the harness could not read its files: {e}"),
    };
    let j = &beir.judgements;
    assert!(!beir.corpus.is_empty());
    assert_eq!(j.queries.len(), j.grades.len());
    for (i, grades) in j.grades.iter().enumerate() {
        assert!(
            grades.iter().all(|&(d, _)| d < beir.corpus.len()),
            "{grades:?}"
        );
        assert!(
            !j.relevant(i).is_empty(),
            "query {} has no relevant document",
            j.queries[i].id
        );
    }
    let again = dir.join("round-trip");
    write_beir(&again, &beir.corpus, &j.queries, &[("test", j)]).expect("writing what was read");
    let back = read_beir(&again, "test").expect("re-reading what was written");
    assert_eq!(back.corpus.docs, beir.corpus.docs);
    assert_eq!(&back.judgements, j);
}

/// `prepare`'s raw reader on `bytes` as CSV and as JSONL, with the CaseHOLD mapping and the two
/// other mappings pointed at CaseHOLD's columns, so CaseHOLD-like input reaches every mapping.
/// An accepted example has a query, gold indices into its candidates, and a line of the file.
pub fn check_raw_reader(dir: &Path, bytes: &[u8]) {
    let mappings = [
        Mapping::casehold(),
        Mapping::CandidateList {
            query: "citing_prompt".into(),
            candidates: "holding_0".into(),
            label: "label".into(),
        },
        Mapping::PosNeg {
            query: "citing_prompt".into(),
            positives: vec!["holding_0".into()],
            negatives: (1..5).map(|i| format!("holding_{i}")).collect(),
        },
    ];
    for name in ["raw.csv", "raw.jsonl"] {
        let path = write(dir, name, bytes);
        for mapping in &mappings {
            let Some(examples) = accepted(read_raw(&path, mapping), &path, bytes) else {
                continue;
            };
            assert!(!examples.is_empty());
            for e in &examples {
                assert!(!e.query.trim().is_empty(), "{e:?}");
                assert!(!e.gold.is_empty(), "{e:?}");
                assert!(e.gold.iter().all(|&i| i < e.candidates.len()), "{e:?}");
                assert!((1..=line_count(bytes)).contains(&e.line), "{e:?}");
                // The gold candidates become the relevant passages, and only they.
                let row = example_to_train(e);
                assert_eq!(row.relevant_passages.len(), e.gold.len(), "{e:?}");
                assert!(row.hard_negatives.len() < e.candidates.len(), "{e:?}");
            }
        }
    }
}

/// Small minimums, so short inputs can pass; a window (counted in bytes below) that CaseHOLD
/// pairs often exceed, so the histogram's overflow bucket and the truncation warning are reached.
const REVIEW: ValidateOptions = ValidateOptions {
    min_train_queries: 2,
    min_valid_queries: 1,
    max_len: 600,
};

/// The data review of a training file and an optional validation file: every problem points
/// into one of them, the rows it keeps are clean, and its statistics add up.
pub fn check_validate(dir: &Path, train_bytes: &[u8], valid_bytes: Option<&[u8]>) {
    let train = write(dir, "train.jsonl", train_bytes);
    let valid = valid_bytes.map(|b| write(dir, "valid.jsonl", b));
    let review = validate(&train, valid.as_deref(), &REVIEW, &|q, p| q.len() + p.len());

    assert_eq!(review.ok, review.errors.is_empty());
    for problem in review.errors.iter().chain(&review.warnings) {
        match (&valid, valid_bytes) {
            (Some(path), Some(bytes)) if problem.file == path.display().to_string() => {
                check_problem(problem, path, bytes)
            }
            _ => check_problem(problem, &train, train_bytes),
        }
    }
    let stats = review.train.as_ref().expect("the training file exists");
    check_stats(stats, &review.train_rows);
    assert_eq!(review.valid.is_some(), valid.is_some());
    if let Some(stats) = &review.valid {
        check_stats(stats, &review.valid_rows);
    }
}

fn check_stats(stats: &FileStats, rows: &[finerank_data::TrainRow]) {
    assert_eq!(stats.rows, rows.len(), "{stats:?}");
    assert!(stats.unique_queries <= rows.len(), "{stats:?}");
    let counted: usize = stats.length_histogram.iter().map(|b| b.count).sum();
    assert_eq!(counted, stats.pairs, "{stats:?}");
    assert!(stats.truncated_pairs <= stats.pairs, "{stats:?}");
    assert!(stats.p50_pair_tokens <= stats.p95_pair_tokens, "{stats:?}");
    assert!(stats.p95_pair_tokens <= stats.max_pair_tokens, "{stats:?}");
    // The review removed blank and repeated passages from the rows it keeps.
    for row in rows {
        for passages in [&row.relevant_passages, &row.hard_negatives] {
            let texts: Vec<&str> = passages.iter().map(|p| p.trim()).collect();
            assert!(texts.iter().all(|t| !t.is_empty()), "{row:?}");
            assert!(
                (1..texts.len()).all(|i| !texts[..i].contains(&texts[i])),
                "{row:?}"
            );
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing the input file");
    path
}

/// A reader's rows, or `None` after checking that its rejection is a problem in `path` (an I/O
/// error on a file just written is the harness's fault).
fn accepted<T>(result: Result<T, DataError>, path: &Path, bytes: &[u8]) -> Option<T> {
    match result {
        Ok(rows) => Some(rows),
        Err(DataError::Invalid(problem)) => {
            check_problem(&problem, path, bytes);
            None
        }
        Err(e @ DataError::Io { .. }) => panic!("the harness could not read its file: {e}"),
    }
}

/// A problem names `path` and, if it names a line, one that `bytes` has (counting the empty
/// line after a final newline, where a truncated JSON value ends); it says what to do.
fn check_problem(problem: &Problem, path: &Path, bytes: &[u8]) {
    assert_eq!(problem.file, path.display().to_string(), "{problem}");
    if let Some(line) = problem.line {
        assert!((1..=line_count(bytes)).contains(&line), "{problem}");
    }
    assert!(!problem.message.is_empty(), "{problem:?}");
    assert!(!problem.fix.is_empty(), "{problem:?}");
}

fn line_count(bytes: &[u8]) -> usize {
    bytes.split(|&b| b == b'\n').count()
}

fn assert_round_trip<T: Serialize + PartialEq + Debug>(
    dir: &Path,
    rows: &[T],
    read: fn(&Path) -> Result<Vec<T>, DataError>,
) {
    let path = dir.join("round-trip.jsonl");
    write_jsonl(&path, rows).expect("writing accepted rows");
    assert_eq!(read(&path).expect("re-reading written rows"), rows);
}
