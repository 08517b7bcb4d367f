use std::path::{Path, PathBuf};

use finerank_data::*;
use serde_json::Value;

const CASEHOLD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/casehold/train.jsonl"
);

fn casehold_rows() -> Vec<Value> {
    std::fs::read_to_string(CASEHOLD)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn problem(err: DataError) -> Problem {
    match err {
        DataError::Invalid(p) => p,
        other => panic!("expected a data problem, got {other}"),
    }
}

#[test]
fn casehold_defaults_reproduce_the_tutorial_split() {
    let dir = tempfile::tempdir().unwrap();
    let summary = prepare(
        Path::new(CASEHOLD),
        &Mapping::casehold(),
        &PrepareOptions::default(),
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        (summary.train, summary.valid, summary.test, summary.skipped),
        (256, 154, 10, 2000 - 420)
    );
    assert_eq!(summary.files.len(), 3);

    let train = read_train(&dir.path().join("train.jsonl")).unwrap();
    let valid = read_train(&dir.path().join("valid.jsonl")).unwrap();
    let test = read_test(&dir.path().join("test.jsonl")).unwrap();
    assert_eq!((train.len(), valid.len(), test.len()), (256, 154, 10));

    let raw = casehold_rows();
    let holding = |row: &Value, i: usize| row[format!("holding_{i}")].as_str().unwrap().to_string();
    let label = raw[0]["label"].as_u64().unwrap() as usize;
    assert_eq!(train[0].query, raw[0]["citing_prompt"].as_str().unwrap());
    assert_eq!(train[0].relevant_passages, vec![holding(&raw[0], label)]);
    assert_eq!(train[0].hard_negatives.len(), 4);
    assert!(!train[0].hard_negatives.contains(&holding(&raw[0], label)));
    assert_eq!(valid[0].query, raw[256]["citing_prompt"].as_str().unwrap());

    let t = &test[0];
    let r = &raw[410];
    assert_eq!(t.query, r["citing_prompt"].as_str().unwrap());
    assert_eq!(
        t.documents,
        (0..5).map(|i| holding(r, i)).collect::<Vec<_>>()
    );
    assert_eq!(t.gold_indices, vec![r["label"].as_u64().unwrap() as usize]);
}

#[test]
fn seeded_ratios_are_deterministic_and_disjoint() {
    let opts = PrepareOptions {
        split: Split::Ratios {
            train: 0.8,
            valid: 0.1,
            test: 0.1,
        },
        shuffle_seed: Some(7),
        limit: Some(500),
    };
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let summary =
            prepare(Path::new(CASEHOLD), &Mapping::casehold(), &opts, dir.path()).unwrap();
        let train = read_train(&dir.path().join("train.jsonl")).unwrap();
        let valid = read_train(&dir.path().join("valid.jsonl")).unwrap();
        let test = read_test(&dir.path().join("test.jsonl")).unwrap();
        (
            summary.train,
            summary.valid,
            summary.test,
            summary.skipped,
            train,
            valid,
            test,
        )
    };
    let a = run();
    let b = run();
    assert_eq!((a.0, a.1, a.2, a.3), (400, 50, 50, 0));
    assert_eq!((&a.4, &a.5, &a.6), (&b.4, &b.5, &b.6));

    let raw = casehold_rows();
    let first_500: Vec<&str> = raw[..500]
        .iter()
        .map(|r| r["citing_prompt"].as_str().unwrap())
        .collect();
    let mut queries: Vec<&str> = a.4.iter().map(|r| r.query.as_str()).collect();
    queries.extend(a.5.iter().map(|r| r.query.as_str()));
    queries.extend(a.6.iter().map(|r| r.query.as_str()));
    // Shuffled: not file order, but exactly the first 500 rows, each once.
    assert_ne!(queries, first_500);
    let mut sorted = queries.clone();
    sorted.sort_unstable();
    let mut expected = first_500.clone();
    expected.sort_unstable();
    assert_eq!(sorted, expected);

    let other_seed = PrepareOptions {
        shuffle_seed: Some(8),
        ..opts.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    prepare(
        Path::new(CASEHOLD),
        &Mapping::casehold(),
        &other_seed,
        dir.path(),
    )
    .unwrap();
    assert_ne!(read_train(&dir.path().join("train.jsonl")).unwrap(), a.4);
}

#[test]
fn csv_input_matches_jsonl_input() {
    let dir = tempfile::tempdir().unwrap();
    let raw = casehold_rows();
    let mut csv = csv::Writer::from_path(dir.path().join("casehold.csv")).unwrap();
    csv.write_record([
        "example_id",
        "citing_prompt",
        "holding_0",
        "holding_1",
        "holding_2",
        "holding_3",
        "holding_4",
        "label",
    ])
    .unwrap();
    for row in &raw[..30] {
        let mut record = vec![row["example_id"].to_string()];
        record.push(row["citing_prompt"].as_str().unwrap().to_string());
        record.extend((0..5).map(|i| row[format!("holding_{i}")].as_str().unwrap().to_string()));
        record.push(row["label"].to_string());
        csv.write_record(&record).unwrap();
    }
    csv.flush().unwrap();
    drop(csv);

    let jsonl = write(
        dir.path(),
        "casehold.jsonl",
        &std::fs::read_to_string(CASEHOLD).unwrap(),
    );
    let opts = PrepareOptions {
        split: Split::Counts {
            train: 20,
            valid: 5,
            test: 5,
        },
        shuffle_seed: Some(1),
        limit: Some(30),
    };
    let (out_csv, out_jsonl) = (dir.path().join("from_csv"), dir.path().join("from_jsonl"));
    prepare(
        &dir.path().join("casehold.csv"),
        &Mapping::casehold(),
        &opts,
        &out_csv,
    )
    .unwrap();
    prepare(&jsonl, &Mapping::casehold(), &opts, &out_jsonl).unwrap();
    for name in ["train.jsonl", "valid.jsonl", "test.jsonl"] {
        assert_eq!(
            std::fs::read(out_csv.join(name)).unwrap(),
            std::fs::read(out_jsonl.join(name)).unwrap(),
            "{name}"
        );
    }

    let from_csv = read_raw(&dir.path().join("casehold.csv"), &Mapping::casehold()).unwrap();
    assert_eq!(from_csv.len(), 30);
    assert_eq!(from_csv[0].line, 2, "the header is line 1");
}

#[test]
fn candidate_list_mapping_reads_json_lists_in_jsonl_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = Mapping::CandidateList {
        query: "q".into(),
        candidates: "docs".into(),
        label: "answer".into(),
    };
    let jsonl = write(
        dir.path(),
        "raw.jsonl",
        "{\"q\": \"capital of France\", \"docs\": [\"Berlin\", \"Paris\", \"Rome\"], \"answer\": 1}\n\n{\"q\": \"2+2\", \"docs\": \"[\\\"4\\\", \\\"5\\\"]\", \"answer\": \"0\"}\n",
    );
    let examples = read_raw(&jsonl, &mapping).unwrap();
    assert_eq!(examples.len(), 2);
    assert_eq!(examples[0].candidates, ["Berlin", "Paris", "Rome"]);
    assert_eq!(examples[0].gold, [1]);
    assert_eq!(
        (
            examples[1].candidates.len(),
            examples[1].gold.clone(),
            examples[1].line
        ),
        (2, vec![0], 3)
    );

    let csv = write(
        dir.path(),
        "raw.csv",
        "q,docs,answer\ncapital of France,\"[\"\"Berlin\"\", \"\"Paris\"\"]\",1.0\n",
    );
    let examples = read_raw(&csv, &mapping).unwrap();
    assert_eq!(examples[0].candidates, ["Berlin", "Paris"]);
    assert_eq!(examples[0].gold, [1]);

    assert_eq!(
        example_to_train(&examples[0]),
        TrainRow {
            query: "capital of France".into(),
            relevant_passages: vec!["Paris".into()],
            hard_negatives: vec!["Berlin".into()]
        }
    );
    assert_eq!(
        examples_to_test(&examples),
        vec![TestRow {
            query: "capital of France".into(),
            documents: vec!["Berlin".into(), "Paris".into()],
            gold_indices: vec![1]
        }]
    );
}

#[test]
fn posneg_mapping_takes_strings_lists_and_absent_negatives() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = Mapping::PosNeg {
        query: "question".into(),
        positives: vec!["answer".into()],
        negatives: vec!["wrong".into(), "also_wrong".into()],
    };
    let jsonl = write(
        dir.path(),
        "raw.jsonl",
        concat!(
            r#"{"question": "q1", "answer": "a1", "wrong": ["n1", "n2"], "also_wrong": "n3"}"#,
            "\n",
            r#"{"question": "q2", "answer": ["a2", "a3"]}"#,
            "\n",
        ),
    );
    let examples = read_raw(&jsonl, &mapping).unwrap();
    assert_eq!(examples[0].candidates, ["a1", "n1", "n2", "n3"]);
    assert_eq!(examples[0].gold, [0]);
    assert_eq!(examples[1].candidates, ["a2", "a3"]);
    assert_eq!(examples[1].gold, [0, 1]);
    let row = example_to_train(&examples[0]);
    assert_eq!(
        (row.relevant_passages, row.hard_negatives),
        (
            vec!["a1".to_string()],
            vec!["n1".to_string(), "n2".into(), "n3".into()]
        )
    );

    // In CSV a cell holding a JSON list is that list, other text is one passage, an empty cell is none.
    let csv = write(dir.path(), "raw.csv", "question,answer,wrong,also_wrong\nq1,a1,\"[\"\"n1\"\",\"\"n2\"\"]\",\nq2,[1] a bracketed answer,n9,\n");
    let examples = read_raw(&csv, &mapping).unwrap();
    assert_eq!(examples[0].candidates, ["a1", "n1", "n2"]);
    assert_eq!(examples[1].candidates, ["[1] a bracketed answer", "n9"]);
    assert_eq!(examples[1].line, 3);
}

#[test]
fn read_raw_errors_name_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"citing_prompt": "p", "holding_0": "a", "holding_1": "b", "holding_2": "c", "holding_3": "d", "holding_4": "e", "label": 2}"#;

    let path = write(
        dir.path(),
        "missing.jsonl",
        &format!("{good}\n{}\n", good.replace(r#", "label": 2"#, "")),
    );
    let p = problem(read_raw(&path, &Mapping::casehold()).unwrap_err());
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("no `label` column"), "{p}");
    assert!(
        p.fix.contains("index (0-4)") && p.fix.contains("--label-col"),
        "{p}"
    );

    let path = write(
        dir.path(),
        "range.jsonl",
        &format!(
            "{good}\n{good}\n{}\n",
            good.replace(r#""label": 2"#, r#""label": 5"#)
        ),
    );
    let p = problem(read_raw(&path, &Mapping::casehold()).unwrap_err());
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("out of range"), "{p}");

    let path = write(
        dir.path(),
        "notint.jsonl",
        &good.replace(r#""label": 2"#, r#""label": "two""#),
    );
    let p = problem(read_raw(&path, &Mapping::casehold()).unwrap_err());
    assert_eq!(p.line, Some(1));
    assert!(p.message.contains("not an index"), "{p}");

    let mut bytes = format!("{good}\n").into_bytes();
    bytes.extend_from_slice(&good.replace("\"p\"", "\"caf\u{e9}\"").into_bytes());
    let latin1 = bytes.iter().position(|&b| b == 0xc3).unwrap();
    bytes.splice(latin1..latin1 + 2, [0xe9]);
    let path = dir.path().join("latin1.jsonl");
    std::fs::write(&path, bytes).unwrap();
    let p = problem(read_raw(&path, &Mapping::casehold()).unwrap_err());
    assert_eq!(p.line, Some(2));
    assert!(
        p.message.contains("UTF-8") && p.message.contains("0xe9"),
        "{p}"
    );

    let path = write(
        dir.path(),
        "header.csv",
        "citing_prompt,holding_0,holding_1,holding_2,holding_3,holding_4,answer\np,a,b,c,d,e,1\n",
    );
    let p = problem(read_raw(&path, &Mapping::casehold()).unwrap_err());
    assert_eq!(p.line, Some(1));
    assert!(
        p.message.contains("`answer`"),
        "names the columns it found: {p}"
    );

    let path = write(dir.path(), "ragged.csv", "citing_prompt,holding_0,holding_1,holding_2,holding_3,holding_4,label\np,a,b,c,d,e,1\np,a,b\n");
    assert_eq!(
        problem(read_raw(&path, &Mapping::casehold()).unwrap_err()).line,
        Some(3)
    );

    let path = write(
        dir.path(),
        "empty_query.csv",
        "citing_prompt,holding_0,holding_1,holding_2,holding_3,holding_4,label\n  ,a,b,c,d,e,1\n",
    );
    let p = problem(read_raw(&path, &Mapping::casehold()).unwrap_err());
    assert_eq!(
        (p.line, p.message.contains("empty")),
        (Some(2), true),
        "{p}"
    );

    let path = write(dir.path(), "raw.txt", good);
    assert!(problem(read_raw(&path, &Mapping::casehold()).unwrap_err())
        .fix
        .contains(".csv"));
}

#[test]
fn oversized_split_fails_without_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PrepareOptions {
        limit: Some(100),
        ..PrepareOptions::default()
    };
    let out = dir.path().join("out");
    let p = problem(prepare(Path::new(CASEHOLD), &Mapping::casehold(), &opts, &out).unwrap_err());
    assert!(
        p.message.contains("420") && p.message.contains("only 100"),
        "{p}"
    );
    assert!(p.fix.contains("at most 100"), "{p}");
    assert!(!out.exists());

    let no_test = PrepareOptions {
        split: Split::Counts {
            train: 3,
            valid: 2,
            test: 0,
        },
        ..PrepareOptions::default()
    };
    let summary = prepare(Path::new(CASEHOLD), &Mapping::casehold(), &no_test, &out).unwrap();
    assert_eq!(summary.files.len(), 2);
    assert!(!out.join("test.jsonl").exists());
}

/// Regression (found by `any_split_is_applied_or_refused`): counts whose sum overflows a usize
/// panicked in a debug build and, wrapped to a small sum in a release build, were accepted and
/// then panicked while splitting.
#[test]
fn split_counts_past_usize_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PrepareOptions {
        split: Split::Counts {
            train: usize::MAX,
            valid: 1,
            test: 0,
        },
        limit: Some(10),
        ..PrepareOptions::default()
    };
    let out = dir.path().join("out");
    let p = problem(prepare(Path::new(CASEHOLD), &Mapping::casehold(), &opts, &out).unwrap_err());
    assert!(
        p.message
            .contains("= 18446744073709551616 examples, but only 10"),
        "{p}"
    );
    assert!(p.fix.contains("(e.g. train 9, valid 0, test 0)"), "{p}");
    assert!(!out.exists());
}
