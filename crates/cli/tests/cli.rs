//! The command line as a user meets it: good runs print JSON, bad files get errors that name the
//! file, the line and the fix, and nothing half-written is left behind.
mod common;

use std::path::{Path, PathBuf};

use common::{finerank, text};

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

const GOOD: &str = r#"{"query": "q1", "relevant_passages": ["p"], "hard_negatives": ["n"]}"#;

/// Each bad training file, the line its error must name, and a word of the message.
fn bad_training_files() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    vec![
        (
            "truncated.jsonl",
            format!("{GOOD}\n{{\"query\": \"q2\", \"relevant_pass").into_bytes(),
            ":2",
            "JSON",
        ),
        (
            "wrong-type.jsonl",
            format!("{GOOD}\n{{\"query\": 5, \"relevant_passages\": [\"p\"]}}\n").into_bytes(),
            ":2",
            "query",
        ),
        (
            "empty-query.jsonl",
            format!("{GOOD}\n{{\"query\": \"  \", \"relevant_passages\": [\"p\"]}}\n").into_bytes(),
            ":2",
            "query",
        ),
        (
            "not-utf8.jsonl",
            [
                GOOD.as_bytes(),
                b"\n{\"query\": \"caf\xe9\", \"relevant_passages\": [\"p\"]}\n",
            ]
            .concat(),
            ":2",
            "UTF-8",
        ),
        ("empty.jsonl", Vec::new(), "empty.jsonl", "empty"),
    ]
}

#[test]
fn validate_and_finetune_refuse_bad_files_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, bytes, place, word) in bad_training_files() {
        let path = write(tmp.path(), name, &bytes);
        for args in [
            vec![
                "validate",
                "--train",
                path.as_str(),
                "--model",
                &shared("fixtures/tiny-bert-cross-encoder")
                    .display()
                    .to_string(),
            ],
            vec![
                "finetune",
                "--train",
                path.as_str(),
                "--base",
                &shared("fixtures/tiny-bert-cross-encoder")
                    .display()
                    .to_string(),
            ],
        ] {
            let out = finerank(tmp.path(), &args);
            let all = text(&out);
            assert!(!out.status.success(), "{name} {}: accepted\n{all}", args[0]);
            assert!(
                all.contains(name) && all.contains(place),
                "{name} {}: error does not point at {place}\n{all}",
                args[0]
            );
            assert!(
                all.to_lowercase().contains(&word.to_lowercase()),
                "{name} {}: no {word:?} in\n{all}",
                args[0]
            );
            assert!(
                all.contains("fix"),
                "{name} {}: no fix suggested\n{all}",
                args[0]
            );
        }
    }
    assert!(
        std::fs::read_dir(tmp.path().join("models"))
            .unwrap()
            .next()
            .is_none(),
        "a failed finetune registered a model"
    );
}

#[test]
fn prepare_refuses_bad_raw_rows_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let row = |label: &str| {
        format!(
            r#"{{"citing_prompt": "c", "holding_0": "a", "holding_1": "b", "holding_2": "c", "holding_3": "d", "holding_4": "e"{label}}}"#
        )
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "missing-label.jsonl",
            format!("{}\n{}\n", row(r#", "label": 1"#), row("")).into_bytes(),
            ":2",
        ),
        (
            "bad-label.jsonl",
            format!("{}\n", row(r#", "label": 9"#)).into_bytes(),
            ":1",
        ),
        (
            "not-utf8.jsonl",
            [row(r#", "label": 1"#).as_bytes(), b"\n\xff\xfe\n"].concat(),
            ":2",
        ),
        ("empty.jsonl", Vec::new(), "empty.jsonl"),
    ];
    for (name, bytes, place) in cases {
        let path = write(tmp.path(), name, &bytes);
        let out_dir = tmp.path().join(format!("out-{name}"));
        let out = finerank(
            tmp.path(),
            &[
                "prepare",
                "--input",
                &path,
                "--out",
                &out_dir.display().to_string(),
            ],
        );
        let all = text(&out);
        assert!(!out.status.success(), "{name}: accepted\n{all}");
        assert!(
            all.contains(name) && all.contains(place),
            "{name}: error does not point at {place}\n{all}"
        );
        assert!(
            !out_dir.exists(),
            "{name}: output written despite the error"
        );
    }
}

#[test]
fn rerank_prints_ranked_json_and_refuses_bad_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = write(
        tmp.path(),
        "docs.json",
        br#"["The cell's powerhouse.", "Paris is the capital of France.", "Bananas."]"#,
    );
    let out = finerank(
        tmp.path(),
        &[
            "rerank",
            "--query",
            "capital of france",
            "--documents",
            &docs,
            "--top-n",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 1);
    assert!(
        results[0]["relevance_score"].as_f64().unwrap()
            >= results[1]["relevance_score"].as_f64().unwrap()
    );

    let empty = write(tmp.path(), "empty.txt", b"");
    let bad = write(tmp.path(), "bad.txt", b"fine\n\xffnot utf8\n");
    for (file, place) in [(&empty, "empty.txt"), (&bad, "bad.txt:2")] {
        let out = finerank(tmp.path(), &["rerank", "--query", "q", "--documents", file]);
        assert!(
            !out.status.success() && text(&out).contains(place),
            "{}",
            text(&out)
        );
    }
    let out = finerank(
        tmp.path(),
        &["rerank", "--query", " ", "--documents", &docs],
    );
    assert!(
        !out.status.success() && text(&out).contains("query"),
        "{}",
        text(&out)
    );
    let out = finerank(
        tmp.path(),
        &[
            "rerank",
            "--model",
            "nope",
            "--query",
            "q",
            "--documents",
            &docs,
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("unknown model"),
        "{}",
        text(&out)
    );
}

#[test]
fn prepare_validate_and_eval_with_comparison() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = finerank(
        tmp.path(),
        &[
            "prepare",
            "--input",
            &shared("data/casehold/train.jsonl").display().to_string(),
            "--out",
            &data.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            summary["train"].as_u64(),
            summary["valid"].as_u64(),
            summary["test"].as_u64()
        ),
        (Some(256), Some(154), Some(10))
    );

    let train = data.join("train.jsonl").display().to_string();
    let valid = data.join("valid.jsonl").display().to_string();
    let out = finerank(
        tmp.path(),
        &["validate", "--train", &train, "--valid", &valid, "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let review: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["ok"], true);
    assert_eq!(review["train"]["unique_queries"], 256);
    assert_eq!(review["train"]["samples"].as_array().unwrap().len(), 3);

    let test = data.join("test.jsonl").display().to_string();
    let tiny = shared("fixtures/tiny-bert-cross-encoder")
        .display()
        .to_string();
    let out = finerank(
        tmp.path(),
        &[
            "eval",
            "--test",
            &test,
            "--compare",
            &tiny,
            "--json",
            "--bootstrap",
            "200",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["metrics"]["queries"], 10);
    let p = report["comparison"]["mcnemar_p"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    let acc = &report["metrics"]["accuracy_at_1"];
    assert!(
        acc["ci_low"].as_f64() <= acc["mean"].as_f64()
            && acc["mean"].as_f64() <= acc["ci_high"].as_f64()
    );
}
