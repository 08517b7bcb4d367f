use std::path::{Path, PathBuf};

use finerank_data::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn problem(err: DataError) -> Problem {
    match err {
        DataError::Invalid(p) => p,
        other => panic!("expected a data problem, got {other}"),
    }
}

#[test]
fn read_train_accepts_absent_negatives_and_skips_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        b"{\"query\": \"q\", \"relevant_passages\": [\"a\"], \"hard_negatives\": [\"b\"]}\r\n\n  \n{\"query\": \"r\", \"relevant_passages\": [\"c\"]}\n",
    );
    let rows = read_train(&path).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[1],
        TrainRow {
            query: "r".into(),
            relevant_passages: vec!["c".into()],
            hard_negatives: vec![]
        }
    );
}

#[test]
fn read_train_stops_at_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"query": "q", "relevant_passages": ["a"]}"#;
    let cases: [(&str, &str); 5] = [
        (r#"{"query": "q", "relevant_pass"#, "truncated"),
        (
            r#"{"query": 3, "relevant_passages": ["a"]}"#,
            "must be a string",
        ),
        (r#"{"query": " ", "relevant_passages": ["a"]}"#, "empty"),
        (
            r#"{"query": "q", "relevant_passages": "a"}"#,
            "list of strings",
        ),
        (r#"{"query": "q"}"#, "missing field `relevant_passages`"),
    ];
    for (bad, expect) in cases {
        let path = write(
            dir.path(),
            "train.jsonl",
            format!("{good}\n{good}\n{bad}\n{bad}\n").as_bytes(),
        );
        let p = problem(read_train(&path).unwrap_err());
        assert_eq!(p.line, Some(3), "{p}");
        assert!(p.message.contains(expect), "{p}");
        assert!(!p.fix.is_empty());
        assert!(p
            .to_string()
            .starts_with(&format!("{}:3: ", path.display())));
    }
    let path = write(dir.path(), "empty.jsonl", b"\n\n");
    assert_eq!(problem(read_train(&path).unwrap_err()).line, None);
    let path = write(
        dir.path(),
        "latin1.jsonl",
        b"{\"query\": \"caf\xe9\", \"relevant_passages\": [\"a\"]}\n",
    );
    let p = problem(read_train(&path).unwrap_err());
    assert_eq!(p.line, Some(1));
    assert!(p.message.contains("0xe9 at position 15"), "{p}");
    assert!(matches!(
        read_train(&dir.path().join("nope.jsonl")),
        Err(DataError::Io { .. })
    ));
}

#[test]
fn read_test_checks_gold_indices() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"query": "q", "documents": ["a", "b"], "gold_indices": [1]}"#;
    let path = write(dir.path(), "test.jsonl", format!("{good}\n").as_bytes());
    assert_eq!(
        read_test(&path).unwrap(),
        vec![TestRow {
            query: "q".into(),
            documents: vec!["a".into(), "b".into()],
            gold_indices: vec![1]
        }]
    );
    for (bad, expect) in [
        (
            r#"{"query": "q", "documents": ["a", "b"], "gold_indices": [2]}"#,
            "out of range",
        ),
        (
            r#"{"query": "q", "documents": ["a", "b"], "gold_indices": []}"#,
            "no relevant",
        ),
        (
            r#"{"query": "q", "documents": ["a", "b"], "gold_indices": [-1]}"#,
            "not a non-negative integer",
        ),
        (
            r#"{"query": "", "documents": ["a", "b"], "gold_indices": [0]}"#,
            "empty",
        ),
        (
            r#"{"query": "q", "documents": [], "gold_indices": [0]}"#,
            "empty",
        ),
    ] {
        let path = write(
            dir.path(),
            "test.jsonl",
            format!("{good}\n{bad}\n").as_bytes(),
        );
        let p = problem(read_test(&path).unwrap_err());
        assert_eq!(p.line, Some(2));
        assert!(p.message.contains(expect), "{p}");
    }
}

#[test]
fn read_documents_handles_json_arrays_and_line_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "docs.json",
        br#"["first", "second, with a comma", ""]"#,
    );
    assert_eq!(
        read_documents(&path).unwrap(),
        ["first", "second, with a comma", ""]
    );
    let path = write(dir.path(), "docs.json", b"[\"a\",\n 3]");
    assert!(problem(read_documents(&path).unwrap_err())
        .message
        .contains("document 1"));
    let path = write(dir.path(), "docs.json", b"{\"a\": 1}");
    assert!(problem(read_documents(&path).unwrap_err())
        .message
        .contains("array"));
    let path = write(dir.path(), "docs.json", b"[\"a\",\n\"b\"");
    assert_eq!(problem(read_documents(&path).unwrap_err()).line, Some(2));

    let path = write(dir.path(), "docs.txt", b"one\r\n\nthree\n");
    assert_eq!(read_documents(&path).unwrap(), ["one", "", "three"]);
    let path = write(dir.path(), "docs.txt", b"one\ntwo");
    assert_eq!(read_documents(&path).unwrap(), ["one", "two"]);
    let path = write(dir.path(), "docs.txt", b"");
    assert!(problem(read_documents(&path).unwrap_err())
        .message
        .contains("empty"));
    let path = write(dir.path(), "docs.txt", b"ok\nna\xefve\n");
    assert_eq!(problem(read_documents(&path).unwrap_err()).line, Some(2));
}

#[test]
fn write_jsonl_replaces_atomically_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.jsonl");
    std::fs::write(&path, "old\n").unwrap();
    let rows = vec![
        TrainRow {
            query: "q".into(),
            relevant_passages: vec!["a".into()],
            hard_negatives: vec![],
        },
        TrainRow {
            query: "r\n".into(),
            relevant_passages: vec!["b".into()],
            hard_negatives: vec!["c".into()],
        },
    ];
    write_jsonl(&path, &rows).unwrap();
    assert_eq!(read_train(&path).unwrap(), rows);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["rows.jsonl"]);
    // Readable by others like any file the user writes, not private like the temp file was.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_ne!(mode & 0o777, 0o600, "mode {mode:o}");

    let missing_dir = dir.path().join("no/such/dir/rows.jsonl");
    assert!(matches!(
        write_jsonl(&missing_dir, &rows),
        Err(DataError::Io { .. })
    ));
}
