//! What the model crate's test files share.
#![allow(dead_code)] // Each test binary uses its own part.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use finerank_model::{DeviceChoice, LoadOptions, Model, Precision};
use finerank_text::{Encoded, TextTokenizer};
use serde_json::Value;
use tch::Tensor;

/// A tiny checkpoint of `tests/families/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/families")
        .join(name)
}

pub fn cpu() -> LoadOptions {
    LoadOptions {
        device: DeviceChoice::Cpu,
        ..LoadOptions::default()
    }
}

/// On the CPU in `precision`.
pub fn cpu_in(precision: Precision) -> LoadOptions {
    LoadOptions { precision, ..cpu() }
}

/// Runs `tests/families/<script>` with `args` under the `.venv` Python, `input` as JSON on its
/// stdin, and returns the JSON it prints.
pub fn python(script: &str, args: &[&str], input: &Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(root.join("../../.venv/bin/python"))
        .arg(root.join("tests/families").join(script))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A fixture's `expected.json`: what transformers computed on it.
pub fn expected(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

/// A cross-encoder fixture's `expected.json` and its pairs as our tokenization reads them,
/// checked against the ids transformers gave (padded with `pad_token_id`, 0 where the file
/// does not say, as the shared fixtures do).
pub fn pairs(dir: &Path) -> (Value, Vec<Encoded>) {
    let exp = expected(dir);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let max_len = exp["max_length"].as_u64().unwrap() as usize;
    let pad = exp["pad_token_id"].as_i64().unwrap_or(0);
    let inputs: Vec<Encoded> = exp["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            tok.encode_pair_longest_first(
                p["query"].as_str().unwrap(),
                p["document"].as_str().unwrap(),
                max_len,
            )
        })
        .collect();
    for (i, input) in inputs.iter().enumerate() {
        let want: Vec<i64> = exp["input_ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let what = dir.display();
        assert_eq!(input.ids, want[..input.ids.len()], "{what} pair {i}: ids");
        assert!(
            want[input.ids.len()..].iter().all(|&id| id == pad),
            "{what} pair {i}: length"
        );
    }
    (exp, inputs)
}

/// `inputs` as one batch for the Python helpers: `input_ids` padded with `pad` to the longest,
/// `token_type_ids` with 0, and the `attention_mask`.
pub fn padded_batch(inputs: &[Encoded], pad: i64) -> Value {
    let len = inputs.iter().map(Encoded::len).max().unwrap();
    let padded = |v: &[i64], with: i64| {
        let mut v = v.to_vec();
        v.resize(len, with);
        v
    };
    let mask = |e: &Encoded| (0..len).map(|i| (i < e.len()) as i64).collect::<Vec<_>>();
    serde_json::json!({
        "input_ids": inputs.iter().map(|e| padded(&e.ids, pad)).collect::<Vec<_>>(),
        "token_type_ids": inputs.iter().map(|e| padded(&e.type_ids, 0)).collect::<Vec<_>>(),
        "attention_mask": inputs.iter().map(mask).collect::<Vec<_>>(),
    })
}

/// Asserts every value within `tol` and returns the largest difference, for the parity table.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
    }
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

pub fn logits(model: &Model, inputs: &[Encoded]) -> Vec<f64> {
    model.infer(inputs).iter().map(|r| r[0] as f64).collect()
}

/// The loss finerank's fine-tuning minimises: over each group (relevant passage first), the
/// softmax cross-entropy of the relevant one, averaged over groups.
pub fn listwise_loss(logits: &Tensor, groups: &[i64]) -> Tensor {
    let losses: Vec<Tensor> = logits
        .split_with_sizes(groups, 0)
        .iter()
        .map(|g| -g.log_softmax(0, tch::Kind::Float).get(0))
        .collect();
    Tensor::stack(&losses, 0).mean(tch::Kind::Float)
}

/// A fresh `B` is zero, so a fresh adapter changes nothing and `A` gets no gradient. A step or
/// two of training gives `B` values; these stand in for them, so that both matrices' gradients
/// are put to the test.
pub fn train_b_a_little(model: &Model) {
    finerank_model::seeded(11, || {
        tch::no_grad(|| {
            for (name, mut var) in model.var_store().variables() {
                if name.ends_with(".lora_B.weight") {
                    var.copy_(&(var.randn_like() * 0.1));
                }
            }
        })
    });
}

/// An LLM reranker fixture's prompted inputs: `expected.json`'s `input_ids`, one row per pair.
pub fn decoder_inputs(exp: &Value) -> Vec<Encoded> {
    exp["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ids| {
            let ids: Vec<i64> = serde_json::from_value(ids.clone()).unwrap();
            Encoded {
                type_ids: vec![0; ids.len()],
                ids,
            }
        })
        .collect()
}
