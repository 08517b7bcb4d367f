//! A corpus as users have it (BEIR's layout, no negatives): `finerank mine` turns it into training
//! data, `finerank eval --beir` measures re-ranking of a first stage's top k, and bad collections
//! get errors that name the file, the line and the fix.
mod common;
mod models;

use std::path::{Path, PathBuf};

use common::{finerank, text};
use models::default_model_with_window;

use serde_json::Value;

/// A small BEIR folder from the first CaseHOLD rows: 40 training and 20 test queries, each with
/// its correct holding as the one relevant document, over a corpus of all their holdings.
fn casehold_beir(dir: &Path) -> PathBuf {
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/casehold/train.jsonl"),
    )
    .unwrap();
    let beir = dir.join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    let (mut corpus, mut queries) = (String::new(), String::new());
    let (mut train, mut test) = (
        String::from("query-id\tcorpus-id\tscore\n"),
        String::from("query-id\tcorpus-id\tscore\n"),
    );
    for (n, line) in raw.lines().take(60).enumerate() {
        let row: Value = serde_json::from_str(line).unwrap();
        let label = row["label"].as_u64().unwrap();
        for h in 0..5 {
            let doc = serde_json::json!({"_id": format!("d{n}-{h}"), "title": "", "text": row[format!("holding_{h}")]});
            corpus += &format!("{doc}\n");
        }
        queries += &format!(
            "{}\n",
            serde_json::json!({"_id": format!("q{n}"), "text": row["citing_prompt"]})
        );
        let qrels = if n < 40 { &mut train } else { &mut test };
        *qrels += &format!("q{n}\td{n}-{label}\t1\n");
    }
    std::fs::write(beir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(beir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(beir.join("qrels/train.tsv"), train).unwrap();
    std::fs::write(beir.join("qrels/test.tsv"), test).unwrap();
    beir
}

fn read_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn mine_writes_true_negatives_repeats_with_a_seed_and_reuses_its_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let beir = casehold_beir(tmp.path());
    let mine = |out: &str| {
        let out = tmp.path().join(out);
        let o = finerank(
            tmp.path(),
            &[
                "mine",
                "--beir",
                beir.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--negatives",
                "3",
                "--seed",
                "5",
                "--valid-share",
                "0.25",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        (out, text(&o))
    };
    let (first, log) = mine("first");
    let train = read_rows(&first.join("train.jsonl"));
    let valid = read_rows(&first.join("valid.jsonl"));
    assert_eq!((train.len(), valid.len()), (30, 10), "{log}");
    let mut full = 0;
    for row in train.iter().chain(&valid) {
        let relevant = row["relevant_passages"].as_array().unwrap();
        let negatives = row["hard_negatives"].as_array().unwrap();
        assert!(negatives.len() <= 3, "{row}");
        full += usize::from(negatives.len() == 3);
        assert!(negatives.iter().all(|n| !relevant.contains(n)), "{row}");
    }
    // The margin may leave a query short; most get all three.
    assert!(
        full >= 32,
        "{full} of 40 queries got three negatives\n{log}"
    );
    // Validation holds whole queries that training does not.
    let queries = |rows: &[Value]| rows.iter().map(|r| r["query"].clone()).collect::<Vec<_>>();
    assert!(queries(&valid).iter().all(|q| !queries(&train).contains(q)));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(first.join("mining.json")).unwrap()).unwrap();
    assert_eq!(report[0]["report"]["queries"], 30, "{report}");
    assert!(
        report[0]["report"]["dropped_positive"].as_u64().unwrap() > 0,
        "{report}"
    );

    let (second, log) = mine("second");
    for file in ["train.jsonl", "valid.jsonl"] {
        assert_eq!(
            std::fs::read(first.join(file)).unwrap(),
            std::fs::read(second.join(file)).unwrap(),
            "the same seed mined different {file}"
        );
    }
    assert!(log.contains("reused from cache"), "{log}");
}

/// `prepare --beir` is `mine --beir` at mining's defaults: the same files, byte for byte.
#[test]
fn prepare_takes_a_beir_folder_as_mine_does() {
    let tmp = tempfile::tempdir().unwrap();
    let beir = casehold_beir(tmp.path());
    let run = |command: &str| {
        let out = tmp.path().join(command);
        let args = [
            command,
            "--beir",
            beir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let o = finerank(tmp.path(), &[&args[..], &["--seed", "3"]].concat());
        assert!(o.status.success(), "{}", text(&o));
        out
    };
    let (prepared, mined) = (run("prepare"), run("mine"));
    for file in ["train.jsonl", "valid.jsonl"] {
        let bytes = std::fs::read(prepared.join(file)).unwrap();
        assert!(!bytes.is_empty(), "{file}");
        assert_eq!(bytes, std::fs::read(mined.join(file)).unwrap(), "{file}");
    }
    let o = finerank(
        tmp.path(),
        &[
            "prepare",
            "--beir",
            beir.to_str().unwrap(),
            "--ratios",
            "0.8,0.1,0.1",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("--ratios"), "{}", text(&o));
}

#[test]
fn eval_beir_reports_the_first_stage_and_each_model_with_paired_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let beir = casehold_beir(tmp.path());
    let (json, csv) = (tmp.path().join("r.json"), tmp.path().join("r.csv"));
    // The base's weights saved with a wider window, as a fine-tune may save them.
    let wide = default_model_with_window(tmp.path(), "wide", 384);
    let o = finerank(
        tmp.path(),
        &[
            "eval",
            "--beir",
            beir.to_str().unwrap(),
            "--top-k",
            "20",
            "--bootstrap",
            "200",
            "--model",
            wide.to_str().unwrap(),
            "--compare",
            "all-MiniLM-L6-v2",
            "--out",
            json.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nDCG@10"), "{}", text(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["queries"], 20);
    assert_eq!(r["top_k"], 20);
    let systems = r["systems"].as_array().unwrap();
    let names: Vec<&str> = systems
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bm25", "all-MiniLM-L6-v2", wide.to_str().unwrap()]);
    // Both models read at the smaller window.
    let windows: Vec<&Value> = systems.iter().map(|s| &s["window"]).collect();
    assert_eq!(windows, [&Value::Null, &256.into(), &256.into()]);
    let ndcg = |s: &Value| s["metrics"]["ndcg_at_10"]["mean"].as_f64().unwrap();
    // The model re-ranks BM25's candidates; on CaseHOLD's lexical-overlap holdings it must differ.
    assert_ne!(ndcg(&systems[0]), ndcg(&systems[1]));
    // The same weights read alike: no difference, and a test that says so.
    let same = &r["comparisons"].as_array().unwrap()[2];
    assert_eq!(
        same["comparison"]["ndcg_at_10"]["diff"]["mean"], 0.0,
        "{same}"
    );
    assert_eq!(same["comparison"]["ndcg_at_10"]["p_value"], 1.0, "{same}");
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 20, "{csv}");
}

#[test]
fn bad_collections_name_the_file_the_line_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let beir = casehold_beir(tmp.path());
    let qrels = beir.join("qrels/test.tsv");
    let good = std::fs::read_to_string(&qrels).unwrap();
    let cases = [
        (
            "qrels/test.tsv",
            format!("{good}q41\tnowhere\t1\n"),
            "test.tsv:22",
            "nowhere",
        ),
        (
            "qrels/test.tsv",
            format!("{good}q999\td1-1\t1\n"),
            "test.tsv:22",
            "q999",
        ),
    ];
    let refused_out = tmp.path().join("x");
    for (file, content, place, word) in cases {
        std::fs::write(beir.join(file), &content).unwrap();
        for args in [
            vec!["eval", "--beir", beir.to_str().unwrap()],
            vec![
                "mine",
                "--beir",
                beir.to_str().unwrap(),
                "--split",
                "test",
                "--out",
                refused_out.to_str().unwrap(),
            ],
        ] {
            let o = finerank(tmp.path(), &args);
            assert!(!o.status.success(), "{args:?} accepted {file}");
            let t = text(&o);
            assert!(
                t.contains(place) && t.contains(word) && t.contains("fix"),
                "{args:?}: {t}"
            );
        }
        std::fs::write(&qrels, &good).unwrap();
    }
    std::fs::write(beir.join("corpus.jsonl"), "").unwrap();
    let o = finerank(tmp.path(), &["eval", "--beir", beir.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("corpus.jsonl"), "{}", text(&o));
    // Nothing was written for the refused runs.
    assert!(!refused_out.exists());
}

#[test]
fn review_flags_training_data_without_negatives_with_the_mining_command() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..8)
        .map(|i| format!("{{\"query\": \"q{i}\", \"relevant_passages\": [\"p{i}\"]}}\n"))
        .collect();
    let train = tmp.path().join("train.jsonl");
    std::fs::write(&train, rows).unwrap();
    let o = finerank(
        tmp.path(),
        &[
            "validate",
            "--train",
            train.to_str().unwrap(),
            "--min-train-queries",
            "1",
        ],
    );
    let t = text(&o);
    assert!(t.contains("no training row has hard negatives"), "{t}");
    assert!(t.contains("finerank mine --beir"), "{t}");
}

/// Cohere rows (some with negatives of their own, most without) and a corpus file: each row
/// gets mined negatives, keeps its own first, and no relevant passage comes back as a negative.
#[test]
fn mine_takes_cohere_rows_with_a_corpus_and_keeps_their_own_negatives() {
    let tmp = tempfile::tempdir().unwrap();
    let beir = casehold_beir(tmp.path());
    let corpus: Vec<Value> = read_rows(&beir.join("corpus.jsonl"));
    let text_of = |id: &str| {
        corpus.iter().find(|d| d["_id"] == id).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let queries = read_rows(&beir.join("queries.jsonl"));
    let qrels = std::fs::read_to_string(beir.join("qrels/train.tsv")).unwrap();
    let rows: String = qrels
        .lines()
        .skip(1)
        .enumerate()
        .map(|(i, line)| {
            let cols: Vec<&str> = line.split('\t').collect();
            let query = queries.iter().find(|q| q["_id"] == cols[0]).unwrap()["text"].clone();
            let own: Vec<&str> = if i == 0 { vec!["my own negative"] } else { vec![] };
            format!(
                "{}\n",
                serde_json::json!({"query": query, "relevant_passages": [text_of(cols[1])], "hard_negatives": own})
            )
        })
        .collect();
    let train = tmp.path().join("rows.jsonl");
    std::fs::write(&train, rows).unwrap();
    let out = tmp.path().join("mined");
    let o = finerank(
        tmp.path(),
        &[
            "mine",
            "--train",
            train.to_str().unwrap(),
            "--corpus",
            beir.join("corpus.jsonl").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--negatives",
            "2",
            "--valid-share",
            "0",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mined = read_rows(&out.join("train.jsonl"));
    assert_eq!(mined.len(), 40);
    let first = mined
        .iter()
        .find(|r| r["hard_negatives"][0] == "my own negative")
        .unwrap();
    assert_eq!(
        first["hard_negatives"].as_array().unwrap().len(),
        3,
        "{first}"
    );
    for row in &mined {
        let relevant = &row["relevant_passages"][0];
        assert!(
            !row["hard_negatives"].as_array().unwrap().contains(relevant),
            "{row}"
        );
    }
    assert!(!out.join("valid.jsonl").exists());
}
