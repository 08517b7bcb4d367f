use std::path::{Path, PathBuf};

use finerank_data::*;

const CASEHOLD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/casehold/train.jsonl"
);

/// A stand-in tokenizer: one token per whitespace-separated word, plus [CLS] and two [SEP]s.
fn words(query: &str, passage: &str) -> usize {
    query.split_whitespace().count() + passage.split_whitespace().count() + 3
}

fn small() -> ValidateOptions {
    ValidateOptions {
        min_train_queries: 2,
        min_valid_queries: 1,
        max_len: 512,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn good(query: &str) -> String {
    format!(
        r#"{{"query": "{query}", "relevant_passages": ["yes {query}"], "hard_negatives": ["no {query}"]}}"#
    )
}

#[test]
fn prepared_casehold_passes_with_stats() {
    let dir = tempfile::tempdir().unwrap();
    prepare(
        Path::new(CASEHOLD),
        &Mapping::casehold(),
        &PrepareOptions::default(),
        dir.path(),
    )
    .unwrap();
    let review = validate(
        &dir.path().join("train.jsonl"),
        Some(&dir.path().join("valid.jsonl")),
        &ValidateOptions::default(),
        &words,
    );
    assert!(review.ok, "{:#?}", review.errors);
    let train = review.train.as_ref().unwrap();
    let valid = review.valid.as_ref().unwrap();
    assert_eq!(
        (
            train.rows,
            train.unique_queries,
            valid.rows,
            valid.unique_queries
        ),
        (256, 256, 154, 154)
    );
    assert_eq!(train.avg_relevant, 1.0);
    assert!(train.avg_hard_negatives > 3.9 && train.avg_hard_negatives <= 4.0);
    assert_eq!(
        train.pairs,
        review
            .train_rows
            .iter()
            .map(|r| r.relevant_passages.len() + r.hard_negatives.len())
            .sum::<usize>()
    );
    assert_eq!(
        train
            .length_histogram
            .iter()
            .map(|b| b.count)
            .sum::<usize>(),
        train.pairs
    );
    assert_eq!(
        train.length_histogram.last().unwrap().up_to > 512,
        train.truncated_pairs > 0
    );
    assert!(
        train.p50_pair_tokens <= train.p95_pair_tokens
            && train.p95_pair_tokens <= train.max_pair_tokens
    );
    assert_eq!(train.samples.len(), 3);
    assert_eq!(review.train_rows.len(), 256);
    assert_eq!(review.valid_rows.len(), 154);
    // One CaseHOLD row repeats a (non-gold) holding: dropped with a warning, not an error.
    assert!(
        review
            .warnings
            .iter()
            .all(|w| w.message.contains("repeated hard negative")),
        "{:#?}",
        review.warnings
    );

    let json = serde_json::to_value(&review).unwrap();
    assert!(json.get("train_rows").is_none());
    assert_eq!(json["train"]["rows"], 256);
}

#[test]
fn each_error_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = Vec::new();
    for line in [
        good("a"),                                                                            // 1
        r#"{"query": "b", "relevant_passages": ["x"], "hard_neg"#.to_string(), // 2 truncated
        r#"{"query": "c", "relevant_passages": "x"}"#.to_string(),             // 3 wrong type
        r#"{"query": "  ", "relevant_passages": ["x"]}"#.to_string(),          // 4 empty query
        r#"{"query": "e", "relevant_passages": [" "], "hard_negatives": ["y"]}"#.to_string(), // 5 no relevant
        r#"{"query": "f", "relevant_passages": ["same"], "hard_negatives": [" same "]}"#
            .to_string(), // 6 both
        r#"["not", "an", "object"]"#.to_string(),                                             // 7
    ] {
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    text.extend_from_slice(b"{\"query\": \"caf\xe9\", \"relevant_passages\": [\"x\"]}\n"); // 8 not UTF-8
    text.extend_from_slice(good("i").as_bytes()); // 9
    let train = write(dir.path(), "train.jsonl", &text);
    let review = validate(
        &train,
        None,
        &ValidateOptions {
            min_train_queries: 5,
            ..small()
        },
        &words,
    );
    assert!(!review.ok);
    let at = |line: usize| {
        review
            .errors
            .iter()
            .find(|p| p.line == Some(line))
            .unwrap_or_else(|| panic!("no error on line {line}: {:#?}", review.errors))
    };
    assert!(at(2).message.contains("truncated"), "{}", at(2));
    assert!(at(3).message.contains("list of strings"), "{}", at(3));
    assert!(at(4).message.contains("empty"), "{}", at(4));
    assert!(
        at(5).message.contains("no (non-empty) relevant passage"),
        "{}",
        at(5)
    );
    assert_eq!(at(6).fix, "remove it from hard_negatives");
    assert!(at(7).message.contains("object"), "{}", at(7));
    assert!(at(8).message.contains("UTF-8"), "{}", at(8));
    assert!(review
        .errors
        .iter()
        .all(|p| p.line != Some(1) && p.line != Some(9)));
    // Rows 1, 6 and 9 parse, so there are 3 usable queries of the 5 required.
    let few = review.errors.iter().find(|p| p.line.is_none()).unwrap();
    assert!(few.message.contains("3 usable unique queries"), "{few}");
    assert!(few.fix.contains("add at least 2 more"), "{few}");
    assert_eq!(review.errors.len(), 8);
    assert_eq!(review.train.unwrap().rows, 3);
}

#[test]
fn empty_files_and_too_few_validation_queries_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "train.jsonl", b"");
    let review = validate(&empty, None, &small(), &words);
    assert_eq!(review.errors.len(), 1);
    assert!(review.errors[0].message.contains("no rows"));

    let train = write(
        dir.path(),
        "train.jsonl",
        format!("{}\n{}\n", good("a"), good("b")).as_bytes(),
    );
    let valid = write(
        dir.path(),
        "valid.jsonl",
        format!("{}\n{}\n", good("c"), good("c")).as_bytes(),
    );
    let review = validate(
        &train,
        Some(&valid),
        &ValidateOptions {
            min_valid_queries: 2,
            ..small()
        },
        &words,
    );
    assert_eq!(review.errors.len(), 1, "{:#?}", review.errors);
    assert_eq!(review.errors[0].file, valid.display().to_string());
    assert!(review.errors[0]
        .message
        .contains("validation file has 1 usable unique queries"));
    let repeat = review
        .warnings
        .iter()
        .find(|w| w.message.contains("query of line 1 appears again"))
        .unwrap();
    assert_eq!(repeat.line, Some(2));

    let review = validate(
        &train,
        Some(&dir.path().join("missing.jsonl")),
        &small(),
        &words,
    );
    assert!(!review.ok);
    assert!(review.valid.is_none());
}

#[test]
fn warnings_fix_duplicate_and_empty_passages() {
    let dir = tempfile::tempdir().unwrap();
    let text = concat!(
        r#"{"query": "a", "relevant_passages": ["r", "r ", ""], "hard_negatives": ["n", "", "n", "  ", "m"]}"#,
        "\n",
        r#"{"query": "b", "relevant_passages": ["s"]}"#,
        "\n",
    );
    let train = write(dir.path(), "train.jsonl", text.as_bytes());
    let review = validate(&train, None, &small(), &words);
    assert!(review.ok, "{:#?}", review.errors);
    assert_eq!(review.train_rows[0].relevant_passages, ["r"]);
    assert_eq!(review.train_rows[0].hard_negatives, ["n", "m"]);
    let messages: Vec<&str> = review.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "removed 1 empty relevant passage",
            "removed 1 repeated relevant passage",
            "removed 2 empty hard negatives",
            "removed 1 repeated hard negative"
        ]
    );
    assert!(review.warnings.iter().all(|w| w.line == Some(1)));
    let stats = review.train.unwrap();
    assert_eq!((stats.pairs, stats.avg_hard_negatives), (4, 1.0));
}

#[test]
fn long_pairs_warn_and_fill_the_overflow_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(100);
    let text = format!(
        "{}\n{{\"query\": \"b\", \"relevant_passages\": [\"{long}\"], \"hard_negatives\": [\"other {long}\"]}}\n",
        good("a")
    );
    let train = write(dir.path(), "train.jsonl", text.as_bytes());
    let review = validate(
        &train,
        None,
        &ValidateOptions {
            max_len: 64,
            ..small()
        },
        &words,
    );
    assert!(review.ok, "{:#?}", review.errors);
    let stats = review.train.unwrap();
    assert_eq!(
        (stats.pairs, stats.truncated_pairs, stats.max_pair_tokens),
        (4, 2, 105)
    );
    let bounds: Vec<(usize, usize)> = stats
        .length_histogram
        .iter()
        .map(|b| (b.up_to, b.count))
        .collect();
    assert_eq!(bounds, [(32, 2), (64, 0), (105, 2)]);
    assert_eq!((stats.p50_pair_tokens, stats.p95_pair_tokens), (6, 105));
    let warning = review
        .warnings
        .iter()
        .find(|w| w.fix.contains("raise max_len"))
        .unwrap();
    assert!(warning.message.contains("2 of 4"), "{warning}");
}

#[test]
fn repeated_problems_are_capped_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..25)
        .map(|i| format!("{{\"query\": \"q{i}\"}}\n"))
        .collect();
    let train = write(dir.path(), "train.jsonl", text.as_bytes());
    let review = validate(&train, None, &small(), &words);
    let missing: Vec<&Problem> = review
        .errors
        .iter()
        .filter(|p| p.message.contains("missing field"))
        .collect();
    assert_eq!(missing.len(), 20);
    let summary = review
        .errors
        .iter()
        .find(|p| p.message.starts_with("... and 5 more"))
        .unwrap();
    assert!(
        summary.message.contains("lines 21, 22, 23, 24, 25"),
        "{summary}"
    );
    assert_eq!(
        review.errors.len(),
        22,
        "20 shown, the summary and too few queries"
    );
}
