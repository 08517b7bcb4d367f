//! Every family against transformers, on the tiny random-weight checkpoints in `tests/families/`
//! (made by `tests/families/generate*.py`; its README says how):
//! - the ids our tokenization gives, and the logits transformers computes from them, to 1e-4;
//! - one training step: the listwise loss finerank trains with, and every weight's gradient;
//! - the export: a model changed by that step, saved, reads back in transformers with our scores.
mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_close, cpu, expected, fixture, listwise_loss, logits, padded_batch, pairs, python,
};
use finerank_model::{Kind, Model};
use finerank_text::{ChunkPolicy, Encoded, PairFormat, PromptTemplate, TextTokenizer};
use serde_json::Value;
use tch::Tensor;

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
    let (exp, inputs) = pairs(&dir);
    Case { dir, exp, inputs }
}

/// transformers' logits for `inputs` from the checkpoint at `dir`.
fn transformers_logits(dir: &Path, inputs: &[Encoded], pad: i64) -> Vec<f64> {
    let batch = padded_batch(inputs, pad);
    let logits = python("hf_logits.py", &[dir.to_str().unwrap()], &batch);
    serde_json::from_value(logits).unwrap()
}

fn check_cross_encoder(name: &str) {
    check_scores(name, case(name));
}

/// The checks above on a fixture's pairs as `case` tokenized them.
fn check_scores(name: &str, Case { dir, exp, inputs }: Case) {
    let model = Model::load(&dir, &cpu()).unwrap();
    assert_eq!(model.kind(), Kind::CrossEncoder);

    // Scores.
    let got = logits(&model, &inputs);
    let logit_diff = assert_close(
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
    let loss_diff = (loss.double_value(&[]) - want).abs();
    assert!(
        loss_diff < 1e-4,
        "{name}: loss {} vs {want}",
        loss.double_value(&[])
    );
    loss.backward();
    let reference: Vec<(String, Tensor)> =
        Tensor::read_safetensors(dir.join("grads.safetensors")).unwrap();
    let vars = model.var_store().variables();
    let (mut checked, mut grad_diff) = (0, 0f64);
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
        grad_diff = grad_diff.max(diff);
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
    let export_diff = assert_close(
        &format!("{name} export read by transformers"),
        &transformers_logits(&saved, &inputs, pad),
        &changed,
        1e-4,
    );
    // The README's parity table (`cargo test -p finerank-model --test families -- --nocapture`).
    eprintln!(
        "parity {name}: logits {logit_diff:.1e}, loss {loss_diff:.1e}, gradients \
         {grad_diff:.1e}, export {export_diff:.1e}"
    );
}

/// An edit of a fixture's `config.json`.
type Edit = fn(&mut Value);

/// A copy of fixture `name` with `edit` applied to its config.json.
fn edited(name: &str, edit: Edit) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    let path = tmp.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    tmp
}

/// Each edit makes fixture `name` a checkpoint finerank cannot read exactly: it is refused with
/// an error naming every string in the case's list (the file, the key, what is supported).
fn assert_refused(name: &str, cases: &[(&str, Edit, &[&str])]) {
    assert!(
        Model::load(edited(name, |_| {}).path(), &cpu()).is_ok(),
        "{name} loads unedited"
    );
    for (what, edit, wanted) in cases {
        let err = match Model::load(edited(name, *edit).path(), &cpu()) {
            Ok(_) => panic!("{name}, {what}: loaded a checkpoint it cannot read exactly"),
            Err(e) => e.to_string(),
        };
        for w in *wanted {
            assert!(
                err.contains(w),
                "{name}, {what}: {err:?} does not name {w:?}"
            );
        }
    }
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

#[test]
fn bert_matches_transformers() {
    check_cross_encoder("bert-cross-encoder");
}

#[test]
fn xlmr_matches_transformers() {
    check_cross_encoder("xlm-roberta-cross-encoder");
}

// MPNet

#[test]
fn mpnet_values_it_does_not_implement_are_refused_naming_the_key() {
    assert_refused(
        "mpnet-cross-encoder",
        &[
            (
                "an approximate GELU",
                |c| c["hidden_act"] = "gelu_new".into(),
                &["config.json", "hidden_act", "gelu_new", "exact GELU"],
            ),
            (
                "a bucket table smaller than the 32 buckets transformers looks up",
                |c| c["relative_attention_num_buckets"] = 16.into(),
                &["config.json", "relative_attention_num_buckets", "16", "32"],
            ),
        ],
    );
}

// ModernBERT

/// What the fixture's config does not exercise, against transformers reading the same edited
/// checkpoint.
#[test]
fn modernbert_options_match_transformers() {
    let Case { exp, inputs, .. } = case("modernbert-cross-encoder");
    let pad = exp["pad_token_id"].as_i64().unwrap();
    let variants: [(&str, Edit); 3] = [
        ("cls pooling", |c| {
            c["classifier_pooling"] = "cls".into();
        }),
        ("tanh GELU", |c| {
            c["hidden_activation"] = "gelu_pytorch_tanh".into();
            c["classifier_activation"] = "gelu_pytorch_tanh".into();
        }),
        // As Hub checkpoints written before transformers 5 have it.
        ("legacy layout keys", |c| {
            c.as_object_mut().unwrap().remove("layer_types");
            c.as_object_mut().unwrap().remove("rope_parameters");
            c["global_attn_every_n_layers"] = 3.into();
            c["local_rope_theta"] = 500.0.into();
            c["local_attention"] = 6.into();
        }),
    ];
    for (what, edit) in variants {
        let dir = edited("modernbert-cross-encoder", edit);
        let ours = logits(&Model::load(dir.path(), &cpu()).unwrap(), &inputs);
        assert!(
            ours.iter()
                .zip(numbers(&exp["logits"]))
                .any(|(a, b)| (a - b).abs() > 1e-4),
            "modernbert {what}: the edit changed no score"
        );
        // Tighter than the fixture's 1e-4: tanh GELU moves these scores by only about 2e-4.
        assert_close(
            &format!("modernbert {what}"),
            &ours,
            &transformers_logits(dir.path(), &inputs, pad),
            1e-5,
        );
    }
}

#[test]
fn modernbert_options_it_does_not_implement_are_refused_naming_the_key() {
    assert_refused(
        "modernbert-cross-encoder",
        &[
            (
                "a SiLU MLP",
                |c| {
                    c["hidden_activation"] = "silu".into();
                },
                &["config.json", "hidden_activation", "silu", "exact GELU"],
            ),
            (
                "max pooling",
                |c| {
                    c["classifier_pooling"] = "max".into();
                },
                &["config.json", "classifier_pooling", "max", "\"mean\""],
            ),
            (
                "scaled rotary embeddings",
                |c| {
                    c["rope_parameters"]["sliding_attention"]["rope_type"] = "linear".into();
                },
                &[
                    "config.json",
                    "rope_parameters.sliding_attention.rope_type",
                    "linear",
                    "default rotary",
                ],
            ),
            (
                "a third kind of layer",
                |c| {
                    c["layer_types"][1] = "chunked_attention".into();
                },
                &[
                    "config.json",
                    "layer_types",
                    "chunked_attention",
                    "\"sliding_attention\"",
                ],
            ),
        ],
    );
}

// DeBERTa-v2/v3

/// DeBERTa-v2 options finerank does not port are refused, not scored wrong: the convolution
/// beside the first layer (DeBERTa-v2-xlarge and -xxlarge have one) and other activations.
#[test]
fn deberta_options_it_does_not_implement_are_refused_naming_the_key() {
    assert_refused(
        "deberta-v3-cross-encoder",
        &[
            (
                "a convolution beside the first layer",
                |c| c["conv_kernel_size"] = 3.into(),
                &["config.json", "conv_kernel_size 3", "conv_kernel_size 0"],
            ),
            (
                "an approximate GELU",
                |c| c["hidden_act"] = "gelu_new".into(),
                &["config.json", "hidden_act \"gelu_new\"", "exact GELU"],
            ),
            (
                "a tanh pooler",
                |c| c["pooler_hidden_act"] = "tanh".into(),
                &["config.json", "pooler_hidden_act \"tanh\"", "exact GELU"],
            ),
        ],
    );
}

// GTE

#[test]
fn gte_matches_transformers() {
    check_cross_encoder("gte-cross-encoder");
}

#[test]
fn gte_refuses_what_it_does_not_implement() {
    let supported = "finerank implements";
    assert_refused(
        "gte-cross-encoder",
        &[
            (
                "log-n attention scaling",
                |c| c["logn_attention_scale"] = true.into(),
                &["config.json", "logn_attention_scale true", supported],
            ),
            (
                "RMS norms",
                |c| c["layer_norm_type"] = "rms_norm".into(),
                &["config.json", "layer_norm_type \"rms_norm\"", supported],
            ),
            (
                "absolute positions",
                |c| c["position_embedding_type"] = "absolute".into(),
                &[
                    "config.json",
                    "position_embedding_type \"absolute\"",
                    supported,
                ],
            ),
            (
                "separate q, k and v weights",
                |c| c["pack_qkv"] = false.into(),
                &["config.json", "pack_qkv false", supported],
            ),
            (
                "an approximate GELU",
                |c| c["hidden_act"] = "gelu_new".into(),
                &["config.json", "hidden_act \"gelu_new\"", supported],
            ),
            (
                "mixed NTK scaling",
                |c| {
                    c["rope_scaling"] =
                        serde_json::json!({"type": "ntk", "factor": 8.0, "mixed_b": 0.5})
                },
                &["config.json", "rope_scaling {", supported],
            ),
            (
                "linear rope scaling",
                |c| c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0}),
                &["config.json", "rope_scaling {", supported],
            ),
        ],
    );
}

// LLM rerankers: Qwen3-Reranker, and mxbai-rerank-v2 on Qwen2

/// An LLM reranker fixture's pairs in `template`, the reranker's own prompt, each with its
/// instruction (the default where none), cut as the reranker's code cuts them: the first window of
/// our chunking. The ids must be that code's own.
fn llm_case(name: &str, template: PromptTemplate) -> Case {
    let dir = fixture(name);
    let exp = expected(&dir);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(exp["prefix"], template.prefix.as_str());
    assert_eq!(exp["suffix"], template.suffix.as_str());
    assert_eq!(exp["default_instruction"], template.instruction.as_str());
    let format = PairFormat::Prompt(template);
    let policy = ChunkPolicy {
        max_chunks: Some(1),
        ..ChunkPolicy::new(exp["max_length"].as_u64().unwrap() as usize)
    };
    let inputs: Vec<Encoded> = exp["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let format = match p["instruction"].as_str() {
                Some(instruction) => format.with_instruction(instruction),
                None => format.clone(),
            };
            let query = p["query"].as_str().unwrap();
            let chunks = format.chunk(&tok, query, &[p["document"].as_str().unwrap()], &policy);
            assert!(!chunks.query_truncated);
            chunks.inputs.into_iter().next().unwrap()
        })
        .collect();
    for (i, input) in inputs.iter().enumerate() {
        assert_eq!(
            input.ids,
            ints(&exp["input_ids"][i]),
            "{name} pair {i}: ids"
        );
    }
    Case { dir, exp, inputs }
}

fn qwen3_case() -> Case {
    llm_case("qwen3-reranker", PromptTemplate::qwen3_reranker())
}

fn mxbai_case() -> Case {
    llm_case("mxbai-rerank-v2", PromptTemplate::mxbai_rerank_v2())
}

#[test]
fn qwen3_reranker_matches_transformers() {
    let case = qwen3_case();
    let model = Model::load(&case.dir, &cpu()).unwrap();
    // The score's sigmoid is the card's P("yes"), log_softmax over the "no" and "yes" logits.
    let p_yes: Vec<f64> = logits(&model, &case.inputs)
        .iter()
        .map(|l| 1.0 / (1.0 + (-l).exp()))
        .collect();
    let diff = assert_close("qwen3 P(yes)", &p_yes, &numbers(&case.exp["scores"]), 1e-4);
    eprintln!("parity qwen3-reranker: P(yes) {diff:.1e}");
    check_scores("qwen3-reranker", case);
}

#[test]
fn qwen3_values_it_does_not_implement_are_refused_naming_the_key() {
    let supported = "finerank implements";
    assert_refused(
        "qwen3-reranker",
        &[
            (
                "another kind of layer",
                |c| c["layer_types"][1] = "chunked_attention".into(),
                &[
                    "config.json",
                    "layer_types \"chunked_attention\"",
                    supported,
                ],
            ),
            (
                "scaled rotary embeddings",
                |c| c["rope_parameters"]["rope_type"] = "yarn".into(),
                &[
                    "config.json",
                    "rope_parameters.rope_type \"yarn\"",
                    "default rotary",
                ],
            ),
            (
                "legacy rope scaling",
                |c| c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0}),
                &["config.json", "rope_scaling {", "default rotary"],
            ),
            (
                "biased projections",
                |c| c["attention_bias"] = true.into(),
                &["config.json", "attention_bias true", supported],
            ),
            (
                "another activation",
                |c| c["hidden_act"] = "gelu".into(),
                &["config.json", "hidden_act \"gelu\"", "SiLU"],
            ),
            (
                "a classification head in place of the language model's",
                |c| c["architectures"] = serde_json::json!(["Qwen3ForSequenceClassification"]),
                &["config.json", "architectures", "Qwen3ForCausalLM"],
            ),
        ],
    );
}

/// Tied embeddings (Qwen3-Reranker-0.6B's), as transformers reads them: with no `lm_head` in the
/// checkpoint, the answer rows are the embedding table's; beside a distinct `lm_head`, the flag
/// is overruled and that head scores (transformers then warns that it does not tie them).
#[test]
fn qwen3_tied_embeddings_match_transformers() {
    let Case { exp, inputs, .. } = qwen3_case();
    let pad = exp["pad_token_id"].as_i64().unwrap();
    let untied = numbers(&exp["logits"]);
    let dir = edited("qwen3-reranker", |c| c["tie_word_embeddings"] = true.into());
    let ours = logits(&Model::load(dir.path(), &cpu()).unwrap(), &inputs);
    assert_close("qwen3 tied beside an lm_head", &ours, &untied, 1e-4);
    let theirs = transformers_logits(dir.path(), &inputs, pad);
    assert_close("qwen3 tied beside an lm_head", &ours, &theirs, 1e-5);

    let weights = dir.path().join("model.safetensors");
    let kept: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name != "lm_head.weight")
        .collect();
    Tensor::write_safetensors(&kept, &weights).unwrap();
    let model = Model::load(dir.path(), &cpu()).unwrap();
    let ours = logits(&model, &inputs);
    assert!(
        ours.iter().zip(&untied).all(|(a, b)| (a - b).abs() > 1e-3),
        "qwen3 tied: the embeddings' rows changed no score"
    );
    let theirs = transformers_logits(dir.path(), &inputs, pad);
    assert_close("qwen3 tied", &ours, &theirs, 1e-5);
    // Saved tied, as transformers saves it: no lm_head.
    let out = tempfile::tempdir().unwrap();
    model.save(&out.path().join("saved"), None).unwrap();
    let saved = Tensor::read_safetensors(out.path().join("saved/model.safetensors")).unwrap();
    assert!(saved.iter().all(|(name, _)| name != "lm_head.weight"));
}

/// mxbai-rerank-v2's score, the "1" logit less the "0" logit at the last token, is the
/// mxbai-rerank package's raw score; and the rest of the families' checks (padding, a training
/// step's gradients, the export read back by transformers) hold on the Qwen2 decoder, with its
/// biased projections and tied output rows.
#[test]
fn mxbai_rerank_v2_matches_transformers() {
    let case = mxbai_case();
    let model = Model::load(&case.dir, &cpu()).unwrap();
    let ours = logits(&model, &case.inputs);
    let diff = assert_close("mxbai score", &ours, &numbers(&case.exp["scores"]), 1e-4);
    eprintln!("parity mxbai-rerank-v2: score {diff:.1e}");
    check_scores("mxbai-rerank-v2", case);
}

#[test]
fn a_qwen2_checkpoint_not_marked_as_mxbai_or_not_implemented_is_refused_naming_the_key() {
    let supported = "finerank implements";
    assert_refused(
        "mxbai-rerank-v2",
        &[
            (
                "a plain Qwen2 language model",
                |c| {
                    c.as_object_mut().unwrap().remove("reranker");
                },
                &[
                    "config.json",
                    "\"reranker\": \"mxbai-rerank-v2\"",
                    "no such key",
                ],
            ),
            (
                "another reranker",
                |c| c["reranker"] = "qwen2-yes-no".into(),
                &["config.json", "\"qwen2-yes-no\"", "mxbai-rerank-base-v2"],
            ),
            (
                "a classification head in place of the language model's",
                |c| c["architectures"] = serde_json::json!(["Qwen2ForSequenceClassification"]),
                &["config.json", "architectures", "Qwen2ForCausalLM"],
            ),
            (
                "scaled rotary embeddings",
                |c| c["rope_parameters"]["rope_type"] = "yarn".into(),
                &[
                    "config.json",
                    "rope_parameters.rope_type \"yarn\"",
                    "default rotary",
                ],
            ),
            (
                "an empty sliding window",
                |c| {
                    c["use_sliding_window"] = true.into();
                    c["sliding_window"] = 0.into();
                    c["layer_types"][1] = "sliding_attention".into();
                },
                &["config.json", "sliding_window 0", supported],
            ),
        ],
    );
}

/// A sliding layer attends as a full causal one to an input no longer than its window, so the
/// window bounds the input (longer documents are cut into windows) and nothing else changes; a
/// window transformers turns off (`use_sliding_window` false) bounds nothing.
#[test]
fn a_sliding_window_bounds_the_input_and_leaves_scores_as_they_were() {
    let Case { exp, inputs, .. } = mxbai_case();
    let longest = inputs.iter().map(Encoded::len).max().unwrap();
    fn slide(c: &mut Value, on: bool) {
        c["use_sliding_window"] = on.into();
        c["sliding_window"] = 200.into();
        c["layer_types"][1] = "sliding_attention".into();
    }
    let dir = edited("mxbai-rerank-v2", |c| slide(c, true));
    let model = Model::load(dir.path(), &cpu()).unwrap();
    assert_eq!(model.max_positions(), 200);
    assert!(longest <= 200);
    let ours = logits(&model, &inputs);
    assert_close("mxbai sliding", &ours, &numbers(&exp["logits"]), 1e-4);
    let pad = exp["pad_token_id"].as_i64().unwrap();
    assert_close(
        "mxbai sliding in transformers",
        &transformers_logits(dir.path(), &inputs, pad),
        &ours,
        1e-5,
    );
    let off = edited("mxbai-rerank-v2", |c| slide(c, false));
    assert_eq!(
        Model::load(off.path(), &cpu()).unwrap().max_positions(),
        512
    );
}
