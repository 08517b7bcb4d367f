use std::collections::HashSet;
use std::path::{Path, PathBuf};

use finerank_data::*;

const CASEHOLD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/casehold");

const CORPUS: &str = r#"{"_id": "d1", "title": "Cats", "text": "Cats purr."}
{"_id": "d2", "text": "Dogs bark."}
{"_id": 3, "title": "", "text": "Birds sing.", "metadata": {"url": "x"}}
"#;
const QUERIES: &str = r#"{"_id": "q1", "text": "what purrs"}
{"_id": "q2", "text": "what barks", "metadata": {}}
{"_id": "q3", "text": "never judged"}
"#;
const QRELS: &str = "query-id\tcorpus-id\tscore\nq2\td2\t2\nq1\td1\t1\nq1\t3\t0\n";

/// A BEIR folder with split `test`; `None` leaves a file out.
fn beir(corpus: Option<&str>, queries: Option<&str>, qrels: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("qrels")).unwrap();
    for (name, text) in [
        ("corpus.jsonl", corpus),
        ("queries.jsonl", queries),
        ("qrels/test.tsv", qrels),
    ] {
        if let Some(text) = text {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
    }
    dir
}

fn problem(err: DataError) -> Problem {
    match err {
        DataError::Invalid(p) => p,
        other => panic!("expected a data problem, got {other}"),
    }
}

/// The problem `read_beir(dir, "test")` reports.
fn beir_problem(dir: &tempfile::TempDir) -> Problem {
    problem(read_beir(dir.path(), "test").unwrap_err())
}

/// Asserts the problem names the file, the line and a fix, and returns it for further checks.
fn assert_at(p: &Problem, file: &str, line: Option<usize>, fix: &str) {
    assert!(p.file.ends_with(file), "{p}");
    assert_eq!(p.line, line, "{p}");
    assert!(p.fix.contains(fix), "{p}");
}

fn doc(id: &str, title: &str, text: &str) -> Doc {
    Doc {
        id: id.into(),
        title: title.into(),
        text: text.into(),
    }
}

#[test]
fn reads_a_beir_folder_with_integer_ids_extra_fields_and_grade_zero() {
    let dir = beir(Some(CORPUS), Some(QUERIES), Some(QRELS));
    let Beir { corpus, judgements } = read_beir(dir.path(), "test").unwrap();
    assert_eq!(corpus.len(), 3);
    assert_eq!(corpus.docs[1], doc("d2", "", "Dogs bark."));
    assert_eq!(corpus.get("3"), Some(2));
    assert_eq!(corpus.get("d9"), None);
    assert_eq!(corpus.docs[0].full_text(), "Cats Cats purr.");
    assert_eq!(corpus.docs[2].full_text(), "Birds sing.");
    // Judged queries only, in order of first appearance in the qrels.
    let ids: Vec<&str> = judgements.queries.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(ids, ["q2", "q1"]);
    assert_eq!(judgements.queries[1].text, "what purrs");
    assert_eq!(judgements.grades, vec![vec![(1, 2)], vec![(0, 1), (2, 0)]]);
    assert_eq!(judgements.relevant(1), vec![0]);
}

#[test]
fn qrels_header_is_optional_and_trec_qrels_are_read() {
    for qrels in ["q1\td1\t1\n", "q1 0 d1 1\n", "q1\t0\td1\t1\n"] {
        let dir = beir(Some(CORPUS), Some(QUERIES), Some(qrels));
        let judgements = read_beir(dir.path(), "test").unwrap().judgements;
        assert_eq!(judgements.grades, vec![vec![(0, 1)]], "{qrels:?}");
    }
}

#[test]
fn qrels_naming_an_unknown_document_is_an_error() {
    let dir = beir(Some(CORPUS), Some(QUERIES), Some("q1\td1\t1\nq1\td7\t1\n"));
    let p = beir_problem(&dir);
    assert_at(&p, "qrels/test.tsv", Some(2), "corpus.jsonl");
    assert!(p.message.contains("`d7`"), "{p}");
}

#[test]
fn qrels_naming_an_unknown_query_is_an_error() {
    let dir = beir(
        Some(CORPUS),
        Some(QUERIES),
        Some("query-id\tcorpus-id\tscore\nq9\td1\t1\n"),
    );
    let p = beir_problem(&dir);
    assert_at(&p, "qrels/test.tsv", Some(2), "queries.jsonl");
    assert!(p.message.contains("`q9`"), "{p}");
}

#[test]
fn duplicate_ids_name_both_lines() {
    let corpus = format!("{CORPUS}\n{{\"_id\": \"d2\", \"text\": \"again\"}}\n");
    let p = beir_problem(&beir(Some(&corpus), Some(QUERIES), Some(QRELS)));
    assert_at(&p, "corpus.jsonl", Some(5), "its own `_id`");
    assert!(p.message.contains("line 2"), "{p}");

    // Integer and string ids are the same id.
    let queries =
        format!("{{\"_id\": 7, \"text\": \"a\"}}\n{QUERIES}{{\"_id\": \"7\", \"text\": \"b\"}}\n");
    let p = beir_problem(&beir(Some(CORPUS), Some(&queries), Some(QRELS)));
    assert_at(&p, "queries.jsonl", Some(5), "its own `_id`");
    assert!(p.message.contains("line 1"), "{p}");
}

#[test]
fn corpus_new_names_a_duplicate_id() {
    let docs = vec![doc("a", "", "x"), doc("b", "", "y"), doc("a", "", "z")];
    let p = problem(Corpus::new(docs).unwrap_err());
    assert!(
        p.message.contains("`a`") && p.message.contains("0 and 2"),
        "{p}"
    );
    assert!(!p.fix.is_empty());
}

#[test]
fn empty_files_are_errors() {
    for (corpus, queries, qrels, file) in [
        ("\n \n", QUERIES, QRELS, "corpus.jsonl"),
        (CORPUS, "", QRELS, "queries.jsonl"),
        (CORPUS, QUERIES, "", "qrels/test.tsv"),
        (
            CORPUS,
            QUERIES,
            "query-id\tcorpus-id\tscore\n",
            "qrels/test.tsv",
        ),
    ] {
        let p = beir_problem(&beir(Some(corpus), Some(queries), Some(qrels)));
        assert_at(&p, file, None, "one");
        assert!(p.message.contains("no"), "{p}");
    }
}

#[test]
fn a_query_without_a_relevant_document_is_an_error() {
    let qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t0\nq2\td2\t0\n";
    let p = beir_problem(&beir(Some(CORPUS), Some(QUERIES), Some(qrels)));
    assert_at(&p, "qrels/test.tsv", Some(3), "grade of 1 or more");
    assert!(
        p.message
            .starts_with("query `q2` has no relevant document in "),
        "{p}"
    );
    assert!(p.message.contains("qrels/test.tsv"), "{p}");
}

#[test]
fn a_pair_judged_twice_is_an_error() {
    let qrels = "q1\td1\t1\nq2\td2\t1\nq1\td1\t0\n";
    let p = beir_problem(&beir(Some(CORPUS), Some(QUERIES), Some(qrels)));
    assert_at(
        &p,
        "qrels/test.tsv",
        Some(3),
        "one line per (query, document)",
    );
    assert!(p.message.contains("line 1"), "{p}");
}

#[test]
fn a_grade_must_be_a_non_negative_integer() {
    for grade in ["-1", "1.5", "high"] {
        let qrels = format!("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t{grade}\n");
        let p = beir_problem(&beir(Some(CORPUS), Some(QUERIES), Some(&qrels)));
        assert_at(&p, "qrels/test.tsv", Some(3), "whole number");
        assert!(p.message.contains(grade), "{p}");
    }
    // A first line with a numeric but bad grade is not taken for a header.
    let p = beir_problem(&beir(Some(CORPUS), Some(QUERIES), Some("q1\td1\t1.5\n")));
    assert_at(&p, "qrels/test.tsv", Some(1), "whole number");
}

#[test]
fn qrels_lines_need_three_or_four_columns_like_the_first() {
    let p = beir_problem(&beir(Some(CORPUS), Some(QUERIES), Some("q1\td1\n")));
    assert_at(
        &p,
        "qrels/test.tsv",
        Some(1),
        "query-id<TAB>corpus-id<TAB>score",
    );
    let p = beir_problem(&beir(
        Some(CORPUS),
        Some(QUERIES),
        Some("q1\td1\t1\nq2 0 d2 1\n"),
    ));
    assert_at(&p, "qrels/test.tsv", Some(2), "like the first");
    assert!(p.message.contains("4 columns"), "{p}");
}

#[test]
fn a_document_needs_text_or_a_title() {
    let corpus = format!("{CORPUS}{{\"_id\": \"d4\", \"title\": \" \", \"text\": \"\"}}\n");
    let p = beir_problem(&beir(Some(&corpus), Some(QUERIES), Some(QRELS)));
    assert_at(&p, "corpus.jsonl", Some(4), "delete the line");
    assert!(p.message.contains("`d4`"), "{p}");

    let corpus = format!("{CORPUS}{{\"_id\": \"d4\"}}\n");
    let p = beir_problem(&beir(Some(&corpus), Some(QUERIES), Some(QRELS)));
    assert_at(&p, "corpus.jsonl", Some(4), "delete the line");

    // A title alone is a document.
    let corpus = format!("{CORPUS}{{\"_id\": \"d4\", \"title\": \"Only a title\"}}\n");
    let dir = beir(Some(&corpus), Some(QUERIES), Some(QRELS));
    let docs = read_beir(dir.path(), "test").unwrap().corpus.docs;
    assert_eq!(docs[3].full_text(), "Only a title");
}

#[test]
fn bad_json_and_bad_bytes_name_the_line() {
    let corpus = format!("{CORPUS}{{\"_id\": \"d4\", \"text\": \"cut\n");
    let p = beir_problem(&beir(Some(&corpus), Some(QUERIES), Some(QRELS)));
    assert_at(&p, "corpus.jsonl", Some(4), "complete JSON object");

    let dir = beir(Some(CORPUS), Some(QUERIES), None);
    std::fs::write(
        dir.path().join("qrels/test.tsv"),
        b"q1\td1\t1\nq2\td\xe92\t1\n",
    )
    .unwrap();
    assert_at(&beir_problem(&dir), "qrels/test.tsv", Some(2), "UTF-8");

    let p = beir_problem(&beir(
        Some("{\"_id\": null, \"text\": \"t\"}\n"),
        Some(QUERIES),
        Some(QRELS),
    ));
    assert_at(&p, "corpus.jsonl", Some(1), "give the line an id");
}

#[test]
fn a_missing_file_says_what_beir_keeps_there() {
    let p = beir_problem(&beir(None, Some(QUERIES), Some(QRELS)));
    assert_at(&p, "corpus.jsonl", None, "BEIR folder");
    assert!(p.message.contains("documents"), "{p}");

    let p = beir_problem(&beir(Some(CORPUS), None, Some(QRELS)));
    assert_at(&p, "queries.jsonl", None, "BEIR folder");
    assert!(p.message.contains("queries"), "{p}");

    let dir = beir(Some(CORPUS), Some(QUERIES), None);
    for split in ["train", "dev"] {
        std::fs::write(dir.path().join(format!("qrels/{split}.tsv")), QRELS).unwrap();
    }
    let p = beir_problem(&dir);
    assert_at(&p, "qrels/test.tsv", None, "one of those splits");
    assert!(p.message.contains("dev, train"), "{p}");

    let dir = beir(Some(CORPUS), Some(QUERIES), None);
    std::fs::remove_dir(dir.path().join("qrels")).unwrap();
    let p = beir_problem(&dir);
    assert_at(&p, "qrels/test.tsv", None, "write qrels/test.tsv");
    assert!(p.message.contains("no qrels/<split>.tsv"), "{p}");
}

fn run_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("run.trec");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_run_is_sorted_by_score_then_rank_per_judged_query() {
    let dir = beir(Some(CORPUS), Some(QUERIES), Some(QRELS));
    let Beir { corpus, judgements } = read_beir(dir.path(), "test").unwrap();
    let run = "q1 Q0 d2 2 0.5 bm25\nq1 Q0 3 1 0.5 bm25\nq3 Q0 d1 1 9 bm25\nq1 Q0 d1 3 1.25 bm25\n";
    let hits = read_run(&run_file(dir.path(), run), &corpus, &judgements).unwrap();
    // Judgement order: q2 (absent from the run), then q1; q3 is not judged and is skipped.
    assert_eq!(hits, vec![vec![], vec![(0, 1.25), (2, 0.5), (1, 0.5)]]);
}

#[test]
fn run_errors_name_the_line() {
    let dir = beir(Some(CORPUS), Some(QUERIES), Some(QRELS));
    let Beir { corpus, judgements } = read_beir(dir.path(), "test").unwrap();
    for (run, line, fix) in [
        (
            "q1 Q0 d1 1 2.0 x\nq3 Q0 d8 2 1.0 x\n",
            Some(2),
            "another collection",
        ),
        (
            "q1 Q0 d1 1 2.0\n",
            Some(1),
            "query-id Q0 doc-id rank score tag",
        ),
        ("q1 Q0 d1 1 NaN x\n", Some(1), "as a number"),
        ("q1 Q0 d1 first 2 x\n", Some(1), "whole number"),
        (
            "q1 Q0 d1 1 2 x\nq1 Q0 d1 2 1 x\n",
            Some(2),
            "once per query",
        ),
        ("\n", None, "one line per retrieved document"),
    ] {
        let err = read_run(&run_file(dir.path(), run), &corpus, &judgements).unwrap_err();
        assert_at(&problem(err), "run.trec", line, fix);
    }
}

#[test]
fn write_beir_then_read_beir_gives_the_same_collection() {
    let dir = beir(Some(CORPUS), Some(QUERIES), Some(QRELS));
    let Beir { corpus, judgements } = read_beir(dir.path(), "test").unwrap();
    let queries = read_queries(&dir.path().join("queries.jsonl")).unwrap();
    let (train, _, test) = split_by_query(&judgements, 0.0, 0.5, 1);
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("copy");
    write_beir(
        &folder,
        &corpus,
        &queries,
        &[("train", &train), ("test", &test)],
    )
    .unwrap();
    for (split, expected) in [("train", &train), ("test", &test)] {
        let back = read_beir(&folder, split).unwrap();
        assert_eq!(back.corpus.docs, corpus.docs);
        assert_eq!(back.corpus.fingerprint(), corpus.fingerprint());
        assert_eq!(&back.judgements, expected);
    }
    assert_eq!(
        read_queries(&folder.join("queries.jsonl")).unwrap(),
        queries
    );
}

#[test]
fn the_fingerprint_sees_field_boundaries() {
    let a = Corpus::new(vec![doc("1", "ab", "c")]).unwrap();
    let b = Corpus::new(vec![doc("1", "a", "bc")]).unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_eq!(
        a.fingerprint(),
        Corpus::new(a.docs.clone()).unwrap().fingerprint()
    );
    assert_eq!(a.fingerprint().len(), 64);
}

#[test]
fn casehold_becomes_retrieval_over_every_distinct_holding() {
    let read = |split: &str| {
        read_raw(
            Path::new(&format!("{CASEHOLD}/{split}.jsonl")),
            &Mapping::casehold(),
        )
        .unwrap()
    };
    let (train_ex, test_ex) = (read("train"), read("test"));
    let (corpus, train, test) = casehold_retrieval(&train_ex, &test_ex).unwrap();
    assert_eq!((train.queries.len(), test.queries.len()), (2000, 200));
    assert_eq!(corpus.len(), 8965);

    let ids: HashSet<&str> = corpus.docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), corpus.len());
    let texts: HashSet<&str> = corpus.docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts.len(), corpus.len());
    assert_eq!(corpus.docs[0].id, "h0");
    assert_eq!(corpus.docs[0].text, train_ex[0].candidates[0]);

    for (split, judgements, examples) in [("train", &train, &train_ex), ("test", &test, &test_ex)] {
        for (i, e) in examples.iter().enumerate() {
            assert_eq!(judgements.queries[i].id, format!("{split}-{}", e.line));
            assert_eq!(judgements.queries[i].text, e.query);
            let relevant = judgements.relevant(i);
            assert_eq!(relevant.len(), 1);
            assert_eq!(corpus.docs[relevant[0]].text, e.candidates[e.gold[0]]);
            // Every holding of the example is in the corpus.
            assert!(e.candidates.iter().all(|c| texts.contains(c.as_str())));
        }
    }
}

#[test]
fn casehold_retrieval_rejects_examples_without_a_usable_gold() {
    let example = |candidates: &[&str], gold: Vec<usize>, line| Example {
        query: "q".into(),
        candidates: candidates.iter().map(|c| c.to_string()).collect(),
        gold,
        line,
    };
    let good = example(&["a", "b"], vec![1], 1);
    let p = problem(
        casehold_retrieval(&[good.clone(), example(&["a", "b"], vec![5], 2)], &[]).unwrap_err(),
    );
    assert_at(&p, "train", Some(2), "label");
    let p = problem(
        casehold_retrieval(
            std::slice::from_ref(&good),
            &[example(&["a", " "], vec![0], 4)],
        )
        .unwrap_err(),
    );
    assert_at(&p, "test", Some(4), "holding's text");
    let p = problem(casehold_retrieval(&[good.clone(), good], &[]).unwrap_err());
    assert_at(&p, "train", Some(1), "once");
}

#[test]
fn split_by_query_is_a_deterministic_partition() {
    let judgements = Judgements {
        queries: (0..100)
            .map(|i| Query {
                id: format!("q{i}"),
                text: format!("query {i}"),
            })
            .collect(),
        grades: (0..100).map(|i| vec![(i, 1)]).collect(),
    };
    let (train, valid, test) = split_by_query(&judgements, 0.1, 0.2, 7);
    assert_eq!(
        (train.queries.len(), valid.queries.len(), test.queries.len()),
        (70, 10, 20)
    );
    let mut seen: Vec<(Query, Vec<(usize, u32)>)> = Vec::new();
    for part in [&train, &valid, &test] {
        seen.extend(
            part.queries
                .iter()
                .cloned()
                .zip(part.grades.iter().cloned()),
        );
    }
    seen.sort_by_key(|(q, _)| q.id[1..].parse::<usize>().unwrap());
    let all: Vec<_> = judgements
        .queries
        .iter()
        .cloned()
        .zip(judgements.grades.iter().cloned())
        .collect();
    assert_eq!(seen, all);

    assert_eq!(
        split_by_query(&judgements, 0.1, 0.2, 7),
        (train.clone(), valid, test)
    );
    assert_ne!(split_by_query(&judgements, 0.1, 0.2, 8).0, train);
    // Shares beyond what is left are capped; train may end up empty.
    let (train, valid, test) = split_by_query(&judgements, 0.9, 0.5, 7);
    assert_eq!(
        (train.queries.len(), valid.queries.len(), test.queries.len()),
        (0, 50, 50)
    );
}

/// Cohere rows over a collection: a relevant passage that is a document (by its text, or by its
/// title and text) is that document; one that is not joins the collection, so mining can never
/// hand it back as a negative.
#[test]
fn judge_rows_finds_relevant_passages_in_the_corpus_or_adds_them() {
    let corpus = finerank_data::Corpus::new(vec![
        finerank_data::Doc {
            id: "a".into(),
            title: String::new(),
            text: "alpha".into(),
        },
        finerank_data::Doc {
            id: "b".into(),
            title: "Beta".into(),
            text: "text".into(),
        },
    ])
    .unwrap();
    let row = |q: &str, relevant: &[&str]| finerank_data::TrainRow {
        query: q.into(),
        relevant_passages: relevant.iter().map(|s| s.to_string()).collect(),
        hard_negatives: Vec::new(),
    };
    let rows = [
        row("q1", &["alpha", "Beta text"]),
        row("q2", &["gamma"]),
        row("q3", &["gamma"]),
    ];
    let (corpus, j) = finerank_data::judge_rows(&rows, corpus).unwrap();
    assert_eq!(corpus.len(), 3);
    assert_eq!(corpus.docs[2].id, "passage-1");
    assert_eq!(
        j.queries
            .iter()
            .map(|q| q.text.as_str())
            .collect::<Vec<_>>(),
        ["q1", "q2", "q3"]
    );
    assert_eq!(j.grades, [vec![(0, 1), (1, 1)], vec![(2, 1)], vec![(2, 1)]]);
}

/// Training rows then validation rows over one collection: the passages each call adds get ids
/// of their own, never one the collection already has.
#[test]
fn judge_rows_twice_over_one_collection_gives_every_added_passage_its_own_id() {
    let doc = |id: &str, text: &str| finerank_data::Doc {
        id: id.into(),
        title: String::new(),
        text: text.into(),
    };
    let corpus = finerank_data::Corpus::new(vec![doc("passage-2", "alpha")]).unwrap();
    let row = |q: &str, relevant: &str| finerank_data::TrainRow {
        query: q.into(),
        relevant_passages: vec![relevant.into()],
        hard_negatives: Vec::new(),
    };
    let (corpus, train) = finerank_data::judge_rows(&[row("q1", "beta")], corpus).unwrap();
    let (corpus, valid) =
        finerank_data::judge_rows(&[row("q2", "gamma"), row("q3", "beta")], corpus).unwrap();
    let ids: Vec<&str> = corpus.docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["passage-2", "passage-1", "passage-3"]);
    assert_eq!(train.grades, [vec![(1, 1)]]);
    assert_eq!(valid.grades, [vec![(2, 1)], vec![(1, 1)]]);
}
