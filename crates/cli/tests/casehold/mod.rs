//! The shared files the command-line tests read, and CaseHOLD prepared from them.
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{finerank, text};

/// A file of `../shared`, which every developer and CI run can read.
pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

/// `finerank prepare` of the shared CaseHOLD training rows into `data`, with `split`'s counts
/// (e.g. `["--train", "48", "--valid", "16", "--test", "0"]`), failing the test if it fails.
pub fn prepare_casehold(home: &Path, data: &Path, split: &[&str]) -> Output {
    let input = shared("data/casehold/train.jsonl").display().to_string();
    let out = data.display().to_string();
    let args = [&["prepare", "--input", &input, "--out", &out][..], split].concat();
    let output = finerank(home, &args);
    assert!(output.status.success(), "{}", text(&output));
    output
}
