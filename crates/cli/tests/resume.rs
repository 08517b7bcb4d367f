//! `finerank finetune --resume`: a run killed mid-training continues from its saved state and
//! registers the model an uninterrupted run registers.
mod casehold;
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use casehold::{prepare_casehold, shared};
use common::{command, finerank, text};

/// A registered model's weights file, byte for byte.
fn weights(home: &Path, id: &str) -> Vec<u8> {
    std::fs::read(home.join("models").join(id).join("model.safetensors")).unwrap()
}

#[test]
fn a_killed_finetune_resumes_to_the_model_an_uninterrupted_run_makes() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let data = home.join("data");
    prepare_casehold(
        home,
        &data,
        &["--train", "48", "--valid", "16", "--test", "0"],
    );
    let (train, valid) = (data.join("train.jsonl"), data.join("valid.jsonl"));
    let base = shared("fixtures/tiny-bert-cross-encoder");
    let args = [
        "finetune",
        "--train",
        train.to_str().unwrap(),
        "--valid",
        valid.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--min-train-queries",
        "8",
        "--min-valid-queries",
        "8",
        "--train-epochs",
        "3",
        "--train-batch-size",
        "8",
        "--learning-rate",
        "1e-3",
        "--max-length",
        "64",
        "--eval-every",
        "3",
        "--early-stopping-patience",
        "0",
    ];

    // Killed as soon as its state is first saved (at step 3 of 18), as a crash would kill it.
    let mut child = command(home)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("run ") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no run id printed"
        );
    }
    let id = line["run ".len()..].split(':').next().unwrap().to_string();
    let state = home.join("resume").join(&id).join("state.json");
    let started = Instant::now();
    while !state.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no state saved"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !home.join("models").join(&id).exists(),
        "the run finished before it was killed"
    );

    let resumed = finerank(home, &[&args[..], &["--resume", &id]].concat());
    let all = text(&resumed);
    assert!(resumed.status.success(), "{all}");
    assert!(all.contains("continuing from step "), "{all}");
    assert!(all.contains(&format!("registered {id}")), "{all}");
    assert!(!home.join("resume").join(&id).exists(), "{all}");

    let plain = finerank(home, &args);
    assert!(plain.status.success(), "{}", text(&plain));
    let record: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    let plain_id = record["id"].as_str().unwrap();
    assert!(
        weights(home, &id) == weights(home, plain_id),
        "the resumed run registered other weights"
    );

    // Nothing saved under an id: said so, with nothing trained.
    let again = finerank(home, &[&args[..], &["--resume", &id]].concat());
    assert!(!again.status.success());
    assert!(
        text(&again).contains("nothing to resume"),
        "{}",
        text(&again)
    );
}
