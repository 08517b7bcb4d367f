//! The forward pass reproduces Hugging Face transformers on the shared fixtures, from ids that our
//! own tokenization produces, and a saved model reloads to the same outputs.
use std::path::{Path, PathBuf};

use finerank_model::{DeviceChoice, Kind, LoadOptions, Model, Precision};
use finerank_text::{Encoded, TextTokenizer};
use serde_json::Value;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

fn cpu() -> LoadOptions {
    LoadOptions {
        device: DeviceChoice::Cpu,
        ..LoadOptions::default()
    }
}

fn expected(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

fn fixture_inputs(dir: &Path, exp: &Value) -> Vec<Encoded> {
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let max_len = exp["max_length"].as_u64().unwrap() as usize;
    exp["pairs"]
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
        .collect()
}

fn check_cross_encoder(name: &str) {
    let dir = shared(&format!("fixtures/{name}"));
    let exp = expected(&dir);
    let inputs = fixture_inputs(&dir, &exp);
    for (i, input) in inputs.iter().enumerate() {
        let want: Vec<i64> = exp["input_ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(input.ids, want[..input.ids.len()], "{name} pair {i}: ids");
        assert!(
            want[input.ids.len()..].iter().all(|&id| id == 0),
            "{name} pair {i}: length"
        );
    }
    let model = Model::load(&dir, &cpu()).unwrap();
    assert_eq!(model.kind(), Kind::CrossEncoder);
    let logits = model.infer(&inputs);
    for (i, want) in exp["logits"].as_array().unwrap().iter().enumerate() {
        let (got, want) = (logits[i][0], want.as_f64().unwrap() as f32);
        assert!(
            (got - want).abs() < 1e-4,
            "{name} pair {i}: logit {got} vs {want}"
        );
    }
    // One input at a time gives the same logits: padding must not leak into the result.
    for (i, input) in inputs.iter().enumerate() {
        let alone = model.infer(std::slice::from_ref(input))[0][0];
        assert!(
            (alone - logits[i][0]).abs() < 1e-5,
            "{name} pair {i}: padding changed the logit"
        );
    }
}

#[test]
fn bert_cross_encoder_matches_transformers() {
    check_cross_encoder("tiny-bert-cross-encoder");
}

#[test]
fn xlmr_cross_encoder_matches_transformers() {
    check_cross_encoder("tiny-xlmr-cross-encoder");
}

fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/default-model")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let dir = default_model();
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(shared("fixtures/minilm-embeddings.json")).unwrap(),
    )
    .unwrap();
    let model = Model::load(&dir, &cpu()).unwrap();
    assert_eq!(model.kind(), Kind::BiEncoder);
    assert_eq!(model.window(), 256);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let inputs: Vec<Encoded> = exp["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| tok.encode_single(t.as_str().unwrap(), model.window()))
        .collect();
    let got = model.infer(&inputs);
    for (i, want) in exp["embeddings"].as_array().unwrap().iter().enumerate() {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&got[i], &want);
        assert!(c >= 0.9999, "text {i}: cosine {c}");
    }
}

#[test]
fn saved_model_reloads_with_identical_outputs() {
    let dir = shared("fixtures/tiny-xlmr-cross-encoder");
    let exp = expected(&dir);
    let inputs = fixture_inputs(&dir, &exp);
    let model = Model::load(&dir, &cpu()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("saved");
    model.save(&dest, None).unwrap();
    assert!(model.save(&dest, None).is_err(), "save must not overwrite");
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("saved")],
        "no temporary directory left behind"
    );
    let again = Model::load(&dest, &cpu()).unwrap();
    assert_eq!(model.infer(&inputs), again.infer(&inputs));
}

#[test]
fn cross_encoder_from_bi_encoder_base_gets_a_fresh_head() {
    let model = Model::load(
        &default_model(),
        &LoadOptions {
            device: DeviceChoice::Cpu,
            kind: Some(Kind::CrossEncoder),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(model.kind(), Kind::CrossEncoder);
    let tok = TextTokenizer::from_file(&default_model().join("tokenizer.json")).unwrap();
    let out = model.infer(&[tok.encode_pair_longest_first("a query", "a document", 64)]);
    assert_eq!(out[0].len(), 1);
    assert!(out[0][0].is_finite());
}

#[test]
fn bad_checkpoints_are_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Model::load(tmp.path(), &cpu()).err().unwrap().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = Model::load(tmp.path(), &cpu()).err().unwrap().to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn bf16_autocast_stays_close_trains_and_leaves_no_trace() {
    let dir = default_model();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let inputs: Vec<Encoded> = ["a party seeking mandamus must serve the clerk", "paris"]
        .iter()
        .map(|t| tok.encode_single(t, 64))
        .collect();
    let f32_model = Model::load(&dir, &cpu()).unwrap();
    let before = f32_model.infer(&inputs);
    let bf16 = Model::load(
        &dir,
        &LoadOptions {
            device: DeviceChoice::Cpu,
            precision: Precision::Bf16,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(bf16.describe_device().contains("bf16"));
    let got = bf16.infer(&inputs);
    for (g, want) in got.iter().zip(&before) {
        let c = cosine(g, want);
        // bf16 keeps 8 bits of mantissa: close to fp32, but not equal, or autocast never ran.
        assert!(c >= 0.999 && g != want, "cosine {c}");
    }
    // The autocast region is closed: the fp32 model reads exactly as before.
    assert_eq!(f32_model.infer(&inputs), before);

    // Gradients flow back through the bf16 casts into the fp32 weights.
    let loss = bf16.forward_t(&inputs, true).sum(tch::Kind::Float);
    loss.backward();
    let grads: f64 = bf16
        .var_store()
        .trainable_variables()
        .iter()
        .map(|v| v.grad().abs().sum(tch::Kind::Float).double_value(&[]))
        .sum();
    assert!(grads.is_finite() && grads > 0.0, "{grads}");
    assert!(bf16
        .var_store()
        .trainable_variables()
        .iter()
        .all(|v| v.kind() == tch::Kind::Float));
}
