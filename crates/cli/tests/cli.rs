//! The command line as a user meets it: good runs print JSON, bad files get errors that name the
//! file, the line and the fix, and nothing half-written is left behind.
mod casehold;
mod common;
mod models;

use std::path::Path;

use casehold::{prepare_casehold, shared};
use common::{command, finerank, text};
use models::{copy_dir, default_model_with_window, installed_default_model};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

/// Three documents, the second about France's capital, in `dir/docs.json`.
fn three_documents(dir: &Path) -> String {
    write(
        dir,
        "docs.json",
        br#"["The cell's powerhouse.", "Paris is the capital of France.", "Bananas."]"#,
    )
}

/// The first `n` shared CaseHOLD test rows, in `dir/test.jsonl`.
fn casehold_test_rows(dir: &Path, n: usize) -> String {
    let rows: String = std::fs::read_to_string(shared("data/casehold/test.jsonl"))
        .unwrap()
        .lines()
        .take(n)
        .map(|l| format!("{l}\n"))
        .collect();
    write(dir, "test.jsonl", rows.as_bytes())
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
    let docs = three_documents(tmp.path());
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

/// `--precision int8` scores (the default model ranks as in fp32 here), `eval
/// --compare-precision f32` sets it beside fp32, and int8 is refused, before anything loads, by
/// the commands that train.
#[test]
fn int8_reranks_and_is_refused_for_training() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = three_documents(tmp.path());
    let args = [
        "--precision",
        "int8",
        "rerank",
        "--query",
        "capital of france",
    ];
    let out = finerank(tmp.path(), &[&args[..], &["--documents", &docs]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["index"], 1);

    // What int8 costs on these rows: the model against itself in fp32, with the paired test.
    let test = casehold_test_rows(tmp.path(), 20);
    let args = ["--precision", "int8", "eval", "--test", &test];
    let more = ["--compare-precision", "f32", "--json", "--bootstrap", "100"];
    let out = finerank(tmp.path(), &[&args[..], &more[..]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "all-MiniLM-L6-v2 (int8)", "{report}");
    assert_eq!(report["compare_to"], "all-MiniLM-L6-v2 (f32)", "{report}");
    assert_ne!(
        report["ece"], report["baseline_ece"],
        "int8 never ran: {report}"
    );
    let diff = report["comparison"]["accuracy_at_1_diff"]["mean"]
        .as_f64()
        .unwrap();
    assert!(diff.abs() <= 0.05, "{report}");

    let train = write(tmp.path(), "train.jsonl", b"{}\n");
    for args in [
        &["--precision", "int8", "finetune", "--train", &train][..],
        &["--precision", "int8", "bench", "--steps", "1"][..],
    ] {
        let out = finerank(tmp.path(), args);
        assert!(
            !out.status.success() && text(&out).contains("int8 serves and evaluates only"),
            "{}",
            text(&out)
        );
    }
}

/// The README's form, `--ratios 0.8,0.1,0.1`, splits by shares; a wrong count is refused.
#[test]
fn prepare_splits_by_comma_separated_ratios() {
    let tmp = tempfile::tempdir().unwrap();
    let input = shared("data/casehold/train.jsonl").display().to_string();
    let run = |ratios: &str| {
        let out = tmp.path().join(ratios);
        let args = [
            "prepare", "--input", &input, "--limit", "100", "--ratios", ratios, "--out",
        ];
        finerank(
            tmp.path(),
            &[&args[..], &[&out.display().to_string()]].concat(),
        )
    };
    let out = run("0.8,0.1,0.1");
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = ["train", "valid", "test"].map(|k| summary[k].as_u64().unwrap());
    assert_eq!(counts, [80, 10, 10]);
    let out = run("0.8,0.2");
    assert!(
        !out.status.success() && text(&out).contains("--ratios takes three shares"),
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
    for field in ["ece", "baseline_ece"] {
        let ece = report[field].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ece), "{field} {ece}");
    }
    let p = report["comparison"]["mcnemar_p"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    let acc = &report["metrics"]["accuracy_at_1"];
    let [low, mean, high] = ["ci_low", "mean", "ci_high"].map(|k| {
        acc[k]
            .as_f64()
            .unwrap_or_else(|| panic!("accuracy_at_1.{k} is not a number: {acc}"))
    });
    assert!(low <= mean && mean <= high, "{acc}");
    // The default model (256 tokens) read at the tiny model's 128, as the tiny model must be.
    assert_eq!(
        (&report["window"], &report["baseline_window"]),
        (&128.into(), &128.into())
    );
}

/// A fine-tuned model saved with a wider window than its base's is compared at one window, so
/// that the difference is the models'; `--own-windows` reads each at its own, and the report
/// names the window each model read in both cases.
#[test]
fn eval_compares_two_models_at_one_window_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    // The same weights as the base, saved with 384 tokens: any difference is the window's.
    let wide = default_model_with_window(tmp.path(), "wide", 384);
    let test = casehold_test_rows(tmp.path(), 20);
    let json = tmp.path().join("report.json");
    // The table on stdout, the JSON report from `--out`.
    let eval = |extra: &[&str]| {
        let args = [
            "eval",
            "--test",
            &test,
            "--model",
            wide.to_str().unwrap(),
            "--compare",
            "all-MiniLM-L6-v2",
            "--bootstrap",
            "100",
            "--out",
            json.to_str().unwrap(),
        ];
        let out = finerank(tmp.path(), &[&args[..], extra].concat());
        assert!(out.status.success(), "{}", text(&out));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (text(&out), report)
    };

    let (table, report) = eval(&[]);
    assert_eq!(report["window"], 256, "{report}");
    assert_eq!(report["baseline_window"], 256, "{report}");
    assert!(
        table.contains("window        256      256  (tokens per input each"),
        "{table}"
    );
    // Read alike, the two are one model: the same scores, so no difference at all.
    assert_eq!(report["ece"], report["baseline_ece"], "{report}");
    let c = &report["comparison"];
    for d in [
        "accuracy_at_1_diff",
        "mrr_at_10_diff",
        "ndcg_at_10_diff",
        "map_diff",
    ] {
        assert_eq!(c[d]["mean"], 0.0, "{d}: {c}");
    }
    assert_eq!(c["mcnemar_p"], 1.0, "{c}");

    let (table, report) = eval(&["--own-windows"]);
    assert_eq!(report["window"], 384, "{report}");
    assert_eq!(report["baseline_window"], 256, "{report}");
    assert!(
        table.contains("window        256      384  (tokens per input; unequal"),
        "{table}"
    );
    // Some of these queries run past 256 tokens, so the wider read scores them otherwise.
    assert_ne!(report["ece"], report["baseline_ece"], "{report}");
}

/// The first `n` CaseHOLD training rows as Cohere-format rows, in `dir/train.jsonl`.
fn casehold_rows(home: &Path, dir: &Path, n: usize) -> String {
    let n = n.to_string();
    let out = finerank(
        home,
        &[
            "prepare",
            "--input",
            &shared("data/casehold/train.jsonl").display().to_string(),
            "--out",
            &dir.display().to_string(),
            "--train",
            &n,
            "--valid",
            "0",
            "--test",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    dir.join("train.jsonl").display().to_string()
}

#[test]
fn calibrate_fits_reports_and_writes_beside_a_checkpoint_but_not_the_default_model() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = casehold_rows(tmp.path(), &tmp.path().join("data"), 40);

    // The built-in default model is measured, never written to, by name or by directory. A copy
    // stands in for it, so that a refusal that failed could not write into the real one.
    let installed = installed_default_model();
    let default_dir = tmp.path().join("default-model");
    copy_dir(&installed, &default_dir);
    for model in ["all-MiniLM-L6-v2", default_dir.to_str().unwrap()] {
        let out = command(tmp.path())
            .env("FINERANK_DEFAULT_MODEL", &default_dir)
            .args(["calibrate", "--model", model, "--data", &rows, "--write"])
            .output()
            .unwrap();
        let all = text(&out);
        assert!(!out.status.success(), "{model}: --write accepted\n{all}");
        assert!(all.contains("default model"), "{all}");
    }
    assert!(!default_dir.join("calibration.json").exists());

    // Another copy is a checkpoint of the user's own.
    let own = tmp.path().join("own-model");
    copy_dir(&installed, &own);
    let model = own.display().to_string();
    let docs = write(
        tmp.path(),
        "docs.json",
        br#"["Paris is the capital of France.", "Bananas are yellow."]"#,
    );
    let rerank = || {
        let out = finerank(
            tmp.path(),
            &[
                "rerank",
                "--model",
                &model,
                "--query",
                "capital of france",
                "--documents",
                &docs,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["results"].clone()
    };
    let before = rerank();

    let out = finerank(
        tmp.path(),
        &["calibrate", "--model", &model, "--data", &rows, "--write"],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("before: sigmoid(") && all.contains("its kind's default"),
        "{all}"
    );
    assert!(all.contains("(2-fold cross-fitted by query)"), "{all}");
    let fitted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fitted["method"], "platt");
    assert_eq!(fitted["input"], "cosine");
    // 40 queries, each with its holding and four wrong ones.
    assert_eq!(fitted["fitted_on"]["pairs"], 200);
    assert_eq!(fitted["fitted_on"]["positives"], 40);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(own.join("calibration.json")).unwrap())
            .unwrap();
    assert_eq!(written, fitted);

    // The model now scores with it: the same order, other scores.
    let after = rerank();
    let indices = |r: &serde_json::Value| {
        r.as_array()
            .unwrap()
            .iter()
            .map(|x| x["index"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(indices(&before), indices(&after));
    assert_ne!(before, after);
    let out = finerank(
        tmp.path(),
        &["calibrate", "--model", &model, "--data", &rows],
    );
    assert!(
        text(&out).contains("its calibration.json"),
        "{}",
        text(&out)
    );
}

#[test]
fn finetune_prints_its_calibration() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    prepare_casehold(
        tmp.path(),
        &data,
        &["--train", "48", "--valid", "16", "--test", "0"],
    );
    let out = finerank(
        tmp.path(),
        &[
            "finetune",
            "--train",
            &data.join("train.jsonl").display().to_string(),
            "--valid",
            &data.join("valid.jsonl").display().to_string(),
            "--base",
            &shared("fixtures/tiny-bert-cross-encoder")
                .display()
                .to_string(),
            "--min-train-queries",
            "8",
            "--min-valid-queries",
            "8",
            "--train-epochs",
            "1",
            "--train-batch-size",
            "8",
            "--learning-rate",
            "1e-3",
            "--max-length",
            "64",
            "--seed",
            "7",
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("calibration: ECE ") && all.contains("cross-fitted on 80 validation pairs"),
        "{all}"
    );
}

/// The fit check: a fine-tune whose costliest step does not fit in memory (here, under a limit on
/// the process's data, `prlimit --data`, that loading and the data review fit in) fails before it
/// trains, with libtorch's report and the fixes, exits as an error does, and leaves no model, no
/// staging and no saved state. The trial step needs about three times the limit, so the verdict
/// does not hang on a few megabytes.
#[test]
fn a_finetune_that_does_not_fit_fails_at_once_naming_the_fixes() {
    let tmp = tempfile::tempdir().unwrap();
    let words = "the court held that the contract was void because the parties never agreed";
    let words: Vec<&str> = words.split(' ').collect();
    // Every pair is cut at the window, 128 tokens: each step reads 8 of them per query.
    let prose = |seed: usize, n: usize| -> String {
        (0..n)
            .map(|i| words[(seed + i) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rows = |n: usize, from: usize| -> String {
        (from..from + n)
            .map(|i| {
                serde_json::json!({
                    "query": format!("query {i} {}", prose(i, 40)),
                    "relevant_passages": [format!("answer {i} {}", prose(i + 1, 150))],
                    "hard_negatives": (0..7).map(|k| format!("miss {i} {k} {}", prose(i + k, 150))).collect::<Vec<_>>(),
                })
                .to_string()
                    + "\n"
            })
            .collect()
    };
    let train = write(tmp.path(), "train.jsonl", rows(128, 0).as_bytes());
    let valid = write(tmp.path(), "valid.jsonl", rows(8, 1000).as_bytes());
    let home = tmp.path().join("home");
    let finerank = command(&home);
    let mut limited = std::process::Command::new("timeout");
    limited
        .args(["120", "prlimit", "--data=1500000000"])
        .arg(finerank.get_program())
        .args(finerank.get_args())
        .envs(finerank.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env_remove("FINERANK_MODEL")
        .args(["finetune", "--train", &train, "--valid", &valid, "--base"])
        .arg(shared("fixtures/tiny-bert-cross-encoder"))
        .args(["--min-train-queries", "8", "--min-valid-queries", "8"])
        .args(["--train-batch-size", "128", "--max-length", "128"]);
    let out = limited.output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for says in [
        "the fine-tune does not fit in memory on cpu",
        "costliest batch (128 queries, 1024 inputs of up to 128 tokens)",
        "DefaultCPUAllocator: can't allocate memory",
        "--micro-batch-size",
        "--gradient-checkpointing",
        "--lora-rank",
        "--max-length",
    ] {
        assert!(all.contains(says), "{says:?} in {all}");
    }
    assert!(!all.contains("panicked"), "{all}");
    for left in ["models", "staging", "resume"] {
        let entries = std::fs::read_dir(home.join(left))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(entries, 0, "{left} holds something: {all}");
    }
}
