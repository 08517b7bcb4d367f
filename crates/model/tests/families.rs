//! Every encoder family against transformers, on the tiny random-weight checkpoints in
//! `tests/families/` (made by `tests/families/generate.py`; its README says how):
//! - the ids our tokenization gives, and the logits transformers computes from them, to 1e-4;
//! - one training step: the listwise loss finerank trains with, and every weight's gradient;
//! - the export: a model changed by that step, saved, reads back in transformers with our scores.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use finerank_model::{DeviceChoice, Kind, LoadOptions, Model};
use finerank_text::{Encoded, TextTokenizer};
use serde_json::Value;
use tch::Tensor;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/families")
        .join(name)
}

fn cpu() -> LoadOptions {
    LoadOptions {
        device: DeviceChoice::Cpu,
        ..LoadOptions::default()
    }
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_i64().expect("an integer"))
        .collect()
}

struct Case {
    dir: PathBuf,
    exp: Value,
    inputs: Vec<Encoded>,
}

/// The fixture's pairs, tokenized by us; the ids must be transformers' own.
fn case(name: &str) -> Case {
    let dir = fixture(name);
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let max_len = exp["max_length"].as_u64().unwrap() as usize;
    let pad = exp["pad_token_id"].as_i64().unwrap();
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
        let want = ints(&exp["input_ids"][i]);
        assert_eq!(input.ids, want[..input.ids.len()], "{name} pair {i}: ids");
        assert!(
            want[input.ids.len()..].iter().all(|&id| id == pad),
            "{name} pair {i}: length"
        );
    }
    Case { dir, exp, inputs }
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
    }
}

fn logits(model: &Model, inputs: &[Encoded]) -> Vec<f64> {
    model.infer(inputs).iter().map(|r| r[0] as f64).collect()
}

/// The loss finerank's fine-tuning minimises: over each group (relevant passage first), the
/// softmax cross-entropy of the relevant one, averaged over groups.
fn listwise_loss(logits: &Tensor, groups: &[i64]) -> Tensor {
    let losses: Vec<Tensor> = logits
        .split_with_sizes(groups, 0)
        .iter()
        .map(|g| -g.log_softmax(0, tch::Kind::Float).get(0))
        .collect();
    Tensor::stack(&losses, 0).mean(tch::Kind::Float)
}

/// transformers' logits for `inputs` from the checkpoint at `dir`.
fn transformers_logits(dir: &Path, inputs: &[Encoded], pad: i64) -> Vec<f64> {
    let len = inputs.iter().map(Encoded::len).max().unwrap();
    let pad_to = |e: &Encoded| {
        let mut ids = e.ids.clone();
        ids.resize(len, pad);
        ids
    };
    let mask = |e: &Encoded| (0..len).map(|i| (i < e.len()) as i64).collect::<Vec<_>>();
    let batch = serde_json::json!({
        "input_ids": inputs.iter().map(pad_to).collect::<Vec<_>>(),
        "attention_mask": inputs.iter().map(mask).collect::<Vec<_>>(),
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(root.join("../../.venv/bin/python"))
        .arg(root.join("tests/families/hf_logits.py"))
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hf_logits.py failed");
    serde_json::from_slice::<Vec<f64>>(&out.stdout).unwrap()
}

fn check_cross_encoder(name: &str) {
    let Case { dir, exp, inputs } = case(name);
    let model = Model::load(&dir, &cpu()).unwrap();
    assert_eq!(model.kind(), Kind::CrossEncoder);

    // Scores.
    let got = logits(&model, &inputs);
    assert_close(
        &format!("{name} logits"),
        &got,
        &numbers(&exp["logits"]),
        1e-4,
    );
    // One input at a time gives the same logits: padding must not leak into the result.
    for (i, input) in inputs.iter().enumerate() {
        let alone = logits(&model, std::slice::from_ref(input))[0];
        assert!(
            (alone - got[i]).abs() < 1e-5,
            "{name} pair {i}: padding changed the logit"
        );
    }

    // One training step: the loss, then every weight's gradient (dropout off on both sides).
    let groups = ints(&exp["groups"]);
    let loss = listwise_loss(&model.forward_t(&inputs, false), &groups);
    let want = exp["loss"].as_f64().unwrap();
    assert!(
        (loss.double_value(&[]) - want).abs() < 1e-4,
        "{name}: loss {} vs {want}",
        loss.double_value(&[])
    );
    loss.backward();
    let reference: Vec<(String, Tensor)> =
        Tensor::read_safetensors(dir.join("grads.safetensors")).unwrap();
    let vars = model.var_store().variables();
    let mut checked = 0;
    for (var_name, grad) in &reference {
        let var = vars
            .get(var_name)
            .unwrap_or_else(|| panic!("{name}: no weight {var_name} to compare gradients with"));
        let ours = var.grad();
        assert!(ours.defined(), "{name}: {var_name} got no gradient");
        let scale = grad.abs().max().double_value(&[]).max(1.0);
        let diff = (&ours - grad).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4 * scale,
            "{name}: gradient of {var_name} off by {diff}"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        vars.len(),
        "{name}: every weight's gradient is checked"
    );

    // The export: one SGD step changes every weight; transformers reads what we save with our
    // scores, and so do we.
    tch::no_grad(|| {
        for (_, mut var) in model.var_store().variables() {
            let step = var.grad() * 0.5;
            let _ = var.f_sub_(&step).unwrap();
        }
    });
    let changed = logits(&model, &inputs);
    assert!(
        changed.iter().zip(&got).any(|(a, b)| (a - b).abs() > 1e-3),
        "{name}: the step changed nothing"
    );
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("saved");
    model.save(&saved, None).unwrap();
    let again = Model::load(&saved, &cpu()).unwrap();
    assert_eq!(logits(&again, &inputs), changed, "{name}: reload");
    let pad = exp["pad_token_id"].as_i64().unwrap();
    assert_close(
        &format!("{name} export read by transformers"),
        &transformers_logits(&saved, &inputs, pad),
        &changed,
        1e-4,
    );
}

#[test]
fn modernbert_matches_transformers() {
    check_cross_encoder("modernbert-cross-encoder");
}

#[test]
fn deberta_v3_matches_transformers() {
    check_cross_encoder("deberta-v3-cross-encoder");
}

#[test]
fn mpnet_matches_transformers() {
    check_cross_encoder("mpnet-cross-encoder");
}

// GTE

#[test]
fn gte_matches_transformers() {
    check_cross_encoder("gte-cross-encoder");
}

/// A config value that changes the arithmetic and that finerank does not implement is refused,
/// naming the file, the key, and what is supported.
#[test]
fn gte_refuses_what_it_does_not_implement() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "logn_attention_scale",
            Value::Bool(true),
            "logn_attention_scale true",
        ),
        (
            "layer_norm_type",
            "rms_norm".into(),
            "layer_norm_type \"rms_norm\"",
        ),
        (
            "position_embedding_type",
            "absolute".into(),
            "position_embedding_type \"absolute\"",
        ),
        ("pack_qkv", Value::Bool(false), "pack_qkv false"),
        ("hidden_act", "gelu_new".into(), "hidden_act \"gelu_new\""),
        (
            "rope_scaling",
            serde_json::json!({"type": "ntk", "factor": 8.0, "mixed_b": 0.5}),
            "rope_scaling {",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "linear", "factor": 2.0}),
            "rope_scaling {",
        ),
    ];
    let src = fixture("gte-cross-encoder");
    for (key, value, said) in cases {
        let dir = tempfile::tempdir().unwrap();
        for name in ["model.safetensors", "tokenizer.json"] {
            std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
        }
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap())
                .unwrap();
        config[*key] = value.clone();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let err = match Model::load(dir.path(), &cpu()) {
            Ok(_) => panic!("{key} {value} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with(&format!("{}: ", path.display())),
            "{key}: names the file: {err}"
        );
        assert!(err.contains(said), "{key}: names the value: {err}");
        assert!(
            err.contains("finerank implements"),
            "{key}: says what is supported: {err}"
        );
    }
}
