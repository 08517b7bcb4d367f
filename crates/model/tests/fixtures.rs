//! The forward pass reproduces Hugging Face transformers on the shared fixtures, from ids that our
//! own tokenization produces, and a saved model reloads to the same outputs.
mod common;

use std::path::{Path, PathBuf};

use common::{cpu, cpu_in, pairs};
use finerank_model::{DeviceChoice, Kind, LoadOptions, Model, Precision};
use finerank_text::{Encoded, TextTokenizer};
use serde_json::Value;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

fn check_cross_encoder(name: &str) {
    let dir = shared(&format!("fixtures/{name}"));
    let (exp, inputs) = pairs(&dir);
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
    let (_, inputs) = pairs(&dir);
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
    for name in ["config.json", "tokenizer.json"] {
        let src = shared("fixtures/tiny-bert-cross-encoder").join(name);
        std::fs::copy(src, tmp.path().join(name)).unwrap();
    }
    std::fs::write(tmp.path().join("model.safetensors.index.json"), "{}").unwrap();
    let err = Model::load(tmp.path(), &cpu()).err().unwrap().to_string();
    for wanted in [
        "model.safetensors.index.json",
        "sharded",
        "Merge the shards",
    ] {
        assert!(err.contains(wanted), "{err:?} does not name {wanted:?}");
    }
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
    let bf16 = Model::load(&dir, &cpu_in(Precision::Bf16)).unwrap();
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

/// A copy of the default model whose small files can be edited; the weights are linked.
fn editable_default_model() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = default_model();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let dest = tmp.path().join(path.file_name().unwrap());
        if path.file_name().unwrap() == "model.safetensors" {
            std::os::unix::fs::symlink(&path, &dest).unwrap();
        } else if path.is_dir() {
            std::fs::create_dir(&dest).unwrap();
            for f in std::fs::read_dir(&path).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, dest.join(f.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
    tmp
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn checkpoints_it_cannot_read_exactly_are_refused_naming_the_field() {
    type Edit = fn(&Path);
    let cases: [(&str, Edit, &[&str]); 6] = [
        (
            "a module it does not implement",
            |d| {
                edit_json(&d.join("modules.json"), |v| {
                    v.as_array_mut().unwrap().push(serde_json::json!(
                        {"idx": 3, "name": "3", "path": "3_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}
                    ))
                })
            },
            &[
                "modules.json",
                "sentence_transformers.models.LayerNorm",
                "Dense",
            ],
        ),
        (
            "max pooling",
            |d| {
                edit_json(&d.join("1_Pooling/config.json"), |v| {
                    v["pooling_mode_max_tokens"] = true.into();
                    v["pooling_mode_mean_tokens"] = false.into();
                })
            },
            &[
                "1_Pooling/config.json",
                "pooling_mode_max_tokens",
                "mean",
                "CLS",
            ],
        ),
        (
            "last-token pooling, as sentence-transformers 6 writes it",
            |d| {
                std::fs::write(
                    d.join("1_Pooling/config.json"),
                    r#"{"embedding_dimension": 384, "pooling_mode": "lasttoken", "include_prompt": true}"#,
                )
                .unwrap()
            },
            &[
                "1_Pooling/config.json",
                "\"pooling_mode\": \"lasttoken\"",
                "mean",
            ],
        ),
        (
            "relative positions",
            |d| {
                edit_json(&d.join("config.json"), |v| {
                    v["position_embedding_type"] = "relative_key".into()
                })
            },
            &[
                "config.json",
                "position_embedding_type",
                "relative_key",
                "absolute",
            ],
        ),
        (
            "an approximate GELU",
            |d| {
                edit_json(&d.join("config.json"), |v| {
                    v["hidden_act"] = "gelu_new".into()
                })
            },
            &["config.json", "hidden_act", "gelu_new", "exact GELU"],
        ),
        (
            "a classifier without its head",
            |d| {
                edit_json(&d.join("config.json"), |v| {
                    v["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
                    v["num_labels"] = 1.into();
                })
            },
            &[
                "model.safetensors",
                "classifier",
                "is missing",
                "architectures",
            ],
        ),
    ];
    for (what, edit, wanted) in cases {
        let dir = editable_default_model();
        assert!(
            Model::load(dir.path(), &cpu()).is_ok(),
            "{what}: the unedited copy loads"
        );
        edit(dir.path());
        let err = match Model::load(dir.path(), &cpu()) {
            Ok(_) => panic!("{what}: loaded a checkpoint it cannot read exactly"),
            Err(e) => e.to_string(),
        };
        for w in wanted {
            assert!(err.contains(w), "{what}: {err:?} does not name {w:?}");
        }
    }
}

/// sentence-transformers 6 writes the pooling mode as one string; mean pooling written so is
/// the same model as with the older flags.
#[test]
fn mean_pooling_reads_in_either_format() {
    let dir = editable_default_model();
    let tok = TextTokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
    let inputs = [tok.encode_single("The rent is due on the first of the month.", 256)];
    let before = Model::load(dir.path(), &cpu()).unwrap().infer(&inputs);
    for mode in [r#""mean""#, r#"["mean"]"#] {
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            format!(
                r#"{{"embedding_dimension": 384, "pooling_mode": {mode}, "include_prompt": true}}"#
            ),
        )
        .unwrap();
        let model = Model::load(dir.path(), &cpu()).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(model.infer(&inputs), before, "{mode}");
    }
}

#[test]
fn saving_keeps_the_source_modules_and_dtype() {
    let dir = editable_default_model();
    let weights = dir.path().join("model.safetensors");
    let half: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(tch::Kind::Half)))
        .collect();
    std::fs::remove_file(&weights).unwrap();
    tch::Tensor::write_safetensors(&half, &weights).unwrap();
    // A source without Normalize, with a prompt in its sentence-transformers config.
    edit_json(&dir.path().join("modules.json"), |v| {
        v.as_array_mut().unwrap().pop();
    });
    edit_json(&dir.path().join("config_sentence_transformers.json"), |v| {
        v["prompts"] = serde_json::json!({"query": "query: "})
    });
    let model = Model::load(dir.path(), &cpu()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("saved");
    model.save(&dest, Some(128)).unwrap();

    let saved = tch::Tensor::read_safetensors(dest.join("model.safetensors")).unwrap();
    assert_eq!(saved.len(), half.len());
    for (name, t) in &saved {
        assert_eq!(t.kind(), tch::Kind::Half, "{name} changed dtype");
    }
    for file in [
        "modules.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ] {
        let read = |d: &Path| std::fs::read_to_string(d.join(file)).unwrap();
        assert_eq!(
            read(&dest),
            read(dir.path()),
            "{file} differs from the source's"
        );
    }
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(dest.join("sentence_bert_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(st["max_seq_length"], 128);
    assert_eq!(Model::load(&dest, &cpu()).unwrap().window(), 128);
}

/// int8 projections (`--precision int8`): the default model's embeddings stay within cosine
/// 0.997 of fp32, do not depend on their batch, rank the documents of a query as fp32 does, each projection is quantized
/// once and kept, the fp32 model is untouched, and int8 refuses to train.
#[test]
fn int8_stays_close_ranks_as_fp32_and_refuses_to_train() {
    let dir = default_model();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let texts = [
        "a party seeking a writ of mandamus must show a clear right to relief",
        "mandamus issues only where the petitioner has a clear and indisputable right to relief",
        "the statute of limitations for a breach of contract claim is six years",
        "holding that the district court lacked jurisdiction over the appeal",
        "Paris is the capital of France",
    ];
    let inputs: Vec<Encoded> = texts.iter().map(|t| tok.encode_single(t, 64)).collect();
    let f32_model = Model::load(&dir, &cpu()).unwrap();
    let before = f32_model.infer(&inputs);
    let int8 = Model::load(&dir, &cpu_in(Precision::Int8)).unwrap();
    assert!(int8.describe_device().contains("int8"));
    let got = int8.infer(&inputs);
    for (g, want) in got.iter().zip(&before) {
        let c = cosine(g, want);
        println!("int8 against fp32: cosine {c}");
        // Measured 0.9986 to 0.9990 (0.989 to 0.995 with one activation scale per tensor):
        // close to fp32, but not equal, or int8 never ran.
        assert!(c >= 0.997 && g != want, "cosine {c}");
    }
    // Each token is quantized on its own range, so a text's embedding does not depend on the
    // texts batched with it, but where fp32's own last-bit differences flip a rounding (up to
    // 5.4e-4 measured; one scale per tensor, asymmetric, moved it by 2.1e-2).
    for (i, input) in inputs.iter().enumerate() {
        let alone = &int8.infer(std::slice::from_ref(input))[0];
        let moved = alone
            .iter()
            .zip(&got[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("int8, text {i} alone against in the batch: {moved}");
        assert!(moved < 2e-3, "{moved}");
    }
    // The query's documents, in the same order.
    let order = |e: &[Vec<f32>]| {
        let mut docs: Vec<usize> = (1..e.len()).collect();
        docs.sort_by(|&a, &b| cosine(&e[0], &e[b]).total_cmp(&cosine(&e[0], &e[a])));
        docs
    };
    assert_eq!(order(&got), order(&before));
    // BERT's four products a layer (query, key and value as one), quantized on first use and
    // reused after.
    assert_eq!(int8.int8_projections(), 4 * 6);
    assert_eq!(int8.infer(&inputs), got);
    assert_eq!(int8.int8_projections(), 4 * 6);
    assert_eq!(f32_model.infer(&inputs), before);

    let err = Model::load(
        &dir,
        &LoadOptions {
            frozen_layers: 2,
            ..cpu_in(Precision::Int8)
        },
    )
    .err()
    .expect("int8 refuses a model built to train")
    .to_string();
    assert!(err.contains("int8 serves and evaluates only"), "{err}");
    assert!(Precision::Int8.training().is_err());
}
