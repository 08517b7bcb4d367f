//! LoRA adapters against PEFT (0.21.2, `tests/families/peft_lora.py`) on the BERT cross-encoder
//! fixture: from the same weights, one training step's loss and the gradient of every trainable
//! tensor; PEFT reads finerank's adapter export with finerank's scores, and transformers its
//! merged export. Then, without Python, every family: adapters on its projections, what stays
//! trainable, and both exports read back.
mod common;

use std::path::Path;

use common::{
    assert_close, cpu, decoder_inputs, expected, fixture, listwise_loss, logits, padded_batch,
    pairs, python, train_b_a_little,
};
use finerank_model::{
    seeded, BaseDtype, Kind, LoadOptions, Lora, Model, Precision, ADAPTER_CONFIG,
};
use serde_json::Value;
use tch::Tensor;

fn lora(targets: &[&str]) -> Lora {
    Lora {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        targets: targets.iter().map(|t| t.to_string()).collect(),
    }
}

fn with_lora(dir: &Path, lora: Lora) -> Model {
    let opts = LoadOptions {
        lora: Some(lora),
        ..cpu()
    };
    seeded(7, || Model::load(dir, &opts)).unwrap()
}

fn trainable(model: &Model) -> Vec<String> {
    let mut names: Vec<String> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

/// One SGD step of every trainable tensor, from the gradients it holds.
fn sgd_step(model: &Model) {
    tch::no_grad(|| {
        for (_, mut var) in model.var_store().variables() {
            if var.requires_grad() {
                let step = var.grad() * 0.5;
                let _ = var.f_sub_(&step).unwrap();
            }
        }
    });
}

/// Saves `model`'s adapter under `dir`; its directory and its `adapter_config.json`.
fn export_adapter(model: &Model, dir: &Path) -> (std::path::PathBuf, Value) {
    let adapter = dir.join("adapter");
    model.save_adapter(&adapter).unwrap();
    let config = std::fs::read_to_string(adapter.join(ADAPTER_CONFIG)).unwrap();
    (adapter, serde_json::from_str(&config).unwrap())
}

fn numbers(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn bert_lora_matches_peft() {
    let dir = fixture("bert-cross-encoder");
    let (exp, inputs) = pairs(&dir);
    let model = with_lora(&dir, lora(&[]));
    let base = numbers(&exp["logits"]);
    assert_close("fresh adapters", &logits(&model, &inputs), &base, 1e-5);
    for (name, a) in model.var_store().variables() {
        if name.ends_with(".lora_A.weight") {
            // PEFT's kaiming_uniform_(a=sqrt(5)): uniform in ±1/sqrt(in), here in = 32 or 37.
            let bound = 1.0 / (a.size()[1] as f64).sqrt();
            let max = a.abs().max().double_value(&[]);
            assert!(
                max <= bound && max > bound / 2.0,
                "{name}: {max} vs {bound}"
            );
        }
    }
    // The same seed draws the same adapters.
    let again = with_lora(&dir, lora(&[]));
    for (name, a) in again.var_store().variables() {
        assert!(a.equal(&model.var_store().variables()[&name]), "{name}");
    }
    train_b_a_little(&model);
    let tmp = tempfile::tempdir().unwrap();
    let start = tmp.path().join("start");
    model.save_adapter(&start).unwrap();

    // One step from the same weights, dropout off on both sides.
    let groups: Vec<i64> = serde_json::from_value(exp["groups"].clone()).unwrap();
    let loss = listwise_loss(&model.forward_t(&inputs, false), &groups);
    loss.backward();
    let pad = exp["pad_token_id"].as_i64().unwrap();
    let mut batch = padded_batch(&inputs, pad);
    batch["groups"] = groups.into();
    let grads_file = tmp.path().join("peft-grads.safetensors");
    let args = [
        dir.to_str().unwrap(),
        start.to_str().unwrap(),
        grads_file.to_str().unwrap(),
    ];
    let peft = python("peft_lora.py", &args, &batch);
    let loss_diff = (loss.double_value(&[]) - peft["loss"].as_f64().unwrap()).abs();
    assert!(loss_diff < 1e-5, "loss off by {loss_diff}");
    let reference = Tensor::read_safetensors(&grads_file).unwrap();
    let vars = model.var_store().variables();
    let mut grad_diff = 0f64;
    for (key, grad) in &reference {
        let name = key.strip_prefix("base_model.model.").unwrap();
        let ours = vars[name].grad();
        let scale = grad.abs().max().double_value(&[]).max(1.0);
        let diff = (&ours - grad).abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * scale, "gradient of {name} off by {diff}");
        grad_diff = grad_diff.max(diff);
    }
    // PEFT trains what finerank trains: the adapters and the head (classifier, pooler).
    let mut peft_trained: Vec<String> = reference
        .iter()
        .map(|(k, _)| k["base_model.model.".len()..].to_string())
        .collect();
    peft_trained.sort();
    assert_eq!(peft_trained, trainable(&model));

    // After the step, both exports score as finerank does: the adapter in PEFT, the merged
    // checkpoint in transformers, and each back in finerank.
    sgd_step(&model);
    let stepped = logits(&model, &inputs);
    assert!(stepped.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3));
    let (adapter, merged) = (tmp.path().join("adapter"), tmp.path().join("merged"));
    model.save_adapter(&adapter).unwrap();
    model.save(&merged, None).unwrap();
    let args = [dir.to_str().unwrap(), adapter.to_str().unwrap()];
    let peft = python("peft_lora.py", &args, &padded_batch(&inputs, pad));
    let adapter_diff = assert_close("PEFT", &numbers(&peft["logits"]), &stepped, 1e-4);
    let hf = python(
        "hf_logits.py",
        &[merged.to_str().unwrap()],
        &padded_batch(&inputs, pad),
    );
    let merged_diff = assert_close("merged", &numbers(&hf), &stepped, 1e-4);
    for export in [&adapter, &merged] {
        let again = Model::load(export, &cpu()).unwrap();
        assert_close("reloaded", &logits(&again, &inputs), &stepped, 1e-5);
    }
    eprintln!(
        "lora parity bert: loss {loss_diff:.1e}, gradients {grad_diff:.1e}, PEFT reading the \
         adapter {adapter_diff:.1e}, transformers reading the merged model {merged_diff:.1e}"
    );
}

/// bf16 base weights: the adapted projections' frozen weights take half their bytes and nothing
/// else changes size or dtype. Under bf16 autocast, which rounds an fp32 weight to bf16 for each
/// product anyway, a step's loss and gradients are those of fp32 base weights to 1e-6; against
/// plain fp32 they are bf16's usual distance off (within 1e-2). The adapter export is fp32, and
/// the merged export folds the adapters into the checkpoint's fp32 weights (to 1e-6), not into
/// their bf16 copies.
#[test]
fn bf16_base_weights_halve_the_base_and_change_nothing_computed() {
    let dir = fixture("bert-cross-encoder");
    let (exp, inputs) = pairs(&dir);
    let groups: Vec<i64> = serde_json::from_value(exp["groups"].clone()).unwrap();
    let load = |precision, base_dtype| {
        let opts = LoadOptions {
            lora: Some(lora(&[])),
            precision,
            base_dtype,
            ..cpu()
        };
        seeded(7, || Model::load(&dir, &opts)).unwrap()
    };
    let plain = load(Precision::F32, BaseDtype::F32);
    let mixed = load(Precision::Bf16, BaseDtype::F32);
    let halved = load(Precision::Bf16, BaseDtype::Bf16);
    // The same adapters in all three (`train_b_a_little` draws in the store's hash order).
    train_b_a_little(&plain);
    let adapters = plain.var_store().variables();
    for m in [&mixed, &halved] {
        tch::no_grad(|| {
            for (name, mut var) in m.var_store().variables() {
                if name.contains(".lora_") {
                    var.copy_(&adapters[&name]);
                }
            }
        });
    }
    assert!(halved.describe_device().ends_with("bf16 base weights"));

    let bytes = |m: &Model| -> usize {
        let vars = m.var_store().variables();
        vars.values()
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
    };
    let vars = halved.var_store().variables();
    let adapted: Vec<String> = vars
        .keys()
        .filter_map(|n| n.strip_suffix(".lora_A.weight"))
        .map(|m| format!("{m}.weight"))
        .collect();
    assert!(!adapted.is_empty());
    let projections: usize = adapted.iter().map(|n| vars[n].numel() * 4).sum();
    assert_eq!(bytes(&halved), bytes(&mixed) - projections / 2);
    for (name, t) in &vars {
        let want = match adapted.contains(name) {
            true => tch::Kind::BFloat16,
            false => tch::Kind::Float,
        };
        assert_eq!(t.kind(), want, "{name}");
    }

    let step = |m: &Model| {
        let loss = listwise_loss(&m.forward_t(&inputs, false), &groups);
        loss.backward();
        loss.double_value(&[])
    };
    let (plain_loss, mixed_loss, halved_loss) = (step(&plain), step(&mixed), step(&halved));
    eprintln!("bf16 base weights: loss {halved_loss} against {mixed_loss} with fp32 base weights, {plain_loss} in plain fp32");
    assert!(
        (mixed_loss - halved_loss).abs() <= 1e-6,
        "{mixed_loss} vs {halved_loss}"
    );
    assert!(
        (plain_loss - halved_loss).abs() <= 1e-2,
        "{plain_loss} vs {halved_loss}"
    );
    let mixed_vars = mixed.var_store().variables();
    for (name, t) in &vars {
        if t.requires_grad() {
            let want = mixed_vars[name].grad();
            let scale = want.abs().max().double_value(&[]).max(1.0);
            let diff = (t.grad() - &want).abs().max().double_value(&[]);
            assert!(diff <= 1e-6 * scale, "gradient of {name} off by {diff}");
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let (adapter, _) = export_adapter(&halved, tmp.path());
    for (name, t) in Tensor::read_safetensors(adapter.join("adapter_model.safetensors")).unwrap() {
        assert_eq!(t.kind(), tch::Kind::Float, "{name}");
    }
    let read = |m: &Model, name: &str| {
        let to = tmp.path().join(name);
        m.save(&to, None).unwrap();
        Tensor::read_safetensors(to.join("model.safetensors")).unwrap()
    };
    let want: std::collections::HashMap<String, Tensor> =
        read(&mixed, "mixed").into_iter().collect();
    for (name, t) in read(&halved, "halved") {
        assert_eq!(t.kind(), want[&name].kind(), "{name}");
        let diff = (&t - &want[&name]).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "merged {name} off by {diff}");
    }
}

/// bf16 base weights are refused where they would meet fp32 arithmetic, and without adapters.
#[test]
fn bf16_base_weights_need_lora_and_bf16_arithmetic() {
    let dir = fixture("bert-cross-encoder");
    for (lora, precision, says) in [
        (Some(lora(&[])), Precision::F32, "--precision bf16"),
        (None, Precision::Bf16, "--lora-rank"),
    ] {
        let opts = LoadOptions {
            lora,
            precision,
            base_dtype: BaseDtype::Bf16,
            ..cpu()
        };
        let err = Model::load(&dir, &opts).err().expect("refused").to_string();
        assert!(err.contains(says), "{err}");
    }
}

/// Every cross-encoder family: a fresh adapter on each projection scores as the base, only the
/// adapters and the head train, and both exports read back with the adapted model's scores.
#[test]
fn every_family_takes_adapters() {
    for name in [
        "bert-cross-encoder",
        "xlm-roberta-cross-encoder",
        "modernbert-cross-encoder",
        "deberta-v3-cross-encoder",
        "mpnet-cross-encoder",
        "gte-cross-encoder",
    ] {
        let dir = fixture(name);
        let (exp, inputs) = pairs(&dir);
        let model = with_lora(&dir, lora(&[]));
        assert_close(
            name,
            &logits(&model, &inputs),
            &numbers(&exp["logits"]),
            1e-4,
        );
        let trained = trainable(&model);
        let adapters = trained.iter().filter(|n| n.contains(".lora_")).count();
        assert!(adapters >= 8, "{name}: {adapters} adapter tensors");
        assert!(
            trained.iter().any(|n| n.starts_with("classifier")),
            "{name}"
        );
        train_b_a_little(&model);
        let adapted = logits(&model, &inputs);
        let tmp = tempfile::tempdir().unwrap();
        for export in ["adapter", "merged"] {
            let path = tmp.path().join(export);
            match export {
                "adapter" => model.save_adapter(&path).unwrap(),
                _ => model.save(&path, None).unwrap(),
            }
            let again = Model::load(&path, &cpu()).unwrap();
            assert_close(name, &logits(&again, &inputs), &adapted, 1e-4);
        }
    }
}

#[test]
fn targets_pick_projections_and_unknown_ones_are_named() {
    let dir = fixture("bert-cross-encoder");
    let model = with_lora(&dir, lora(&["query", "intermediate.dense"]));
    let adapted: Vec<String> = trainable(&model)
        .into_iter()
        .filter_map(|n| n.strip_suffix(".lora_A.weight").map(str::to_string))
        .collect();
    assert_eq!(
        adapted,
        [
            "bert.encoder.layer.0.attention.self.query",
            "bert.encoder.layer.0.intermediate.dense",
            "bert.encoder.layer.1.attention.self.query",
            "bert.encoder.layer.1.intermediate.dense",
        ]
    );
    let opts = LoadOptions {
        lora: Some(lora(&["query", "q_proj"])),
        ..cpu()
    };
    let err = Model::load(&dir, &opts).err().unwrap().to_string();
    for want in [
        "q_proj",
        "attention.self.query",
        "intermediate.dense",
        "output.dense",
    ] {
        assert!(err.contains(want), "{err:?} does not name {want}");
    }
    assert!(!err.contains("pooler"), "{err:?}: the head is no target");
}

/// A bi-encoder trains its adapters alone, and exports them for PEFT's feature extraction.
#[test]
fn a_bi_encoder_exports_its_adapters_alone() {
    let dir = fixture("bert-dense-bi-encoder");
    let model = with_lora(&dir, lora(&["value"]));
    assert_eq!(model.kind(), Kind::BiEncoder);
    assert!(trainable(&model).iter().all(|n| n.contains(".lora_")));
    train_b_a_little(&model);
    let tmp = tempfile::tempdir().unwrap();
    let (adapter, config) = export_adapter(&model, tmp.path());
    assert_eq!(config["task_type"], "FEATURE_EXTRACTION");
    assert_eq!(config["modules_to_save"], Value::Null);
    let tok = finerank_text::TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let inputs = vec![tok.encode_single("a query about contracts", 32)];
    let again = Model::load(&adapter, &cpu()).unwrap();
    assert_eq!(again.infer(&inputs), model.infer(&inputs));
}

/// Partial freezing: the embeddings and the first layers stay as they are.
#[test]
fn frozen_layers_freeze_the_embeddings_and_the_layers_below() {
    let opts = LoadOptions {
        frozen_layers: 1,
        ..cpu()
    };
    let model = Model::load(&fixture("bert-cross-encoder"), &opts).unwrap();
    for (name, var) in model.var_store().variables() {
        let frozen = name.contains(".embeddings.") || name.contains(".layer.0.");
        assert_eq!(var.requires_grad(), !frozen, "{name}");
    }
}

/// Two adapters over one loaded base share its encoder weights, score as each loaded alone, and
/// leave the base scoring as it did (each brings its own head).
#[test]
fn adapters_over_one_base_share_its_weights() {
    let dir = fixture("bert-cross-encoder");
    let (_, inputs) = pairs(&dir);
    let base = Model::load(&dir, &cpu()).unwrap();
    let before = logits(&base, &inputs);
    let tmp = tempfile::tempdir().unwrap();
    let mut served = Vec::new();
    for (i, targets) in [&["query"][..], &["value", "dense"][..]].iter().enumerate() {
        let model = with_lora(&dir, lora(targets));
        train_b_a_little(&model);
        tch::no_grad(|| {
            let mut head = model.var_store().variables()["classifier.bias"].shallow_clone();
            let _ = head.g_add_scalar_(1.0 + i as f64);
        });
        let adapter = tmp.path().join(format!("adapter-{i}"));
        model.save_adapter(&adapter).unwrap();
        assert_eq!(
            Model::adapter_base(&adapter)
                .unwrap()
                .unwrap()
                .canonicalize()
                .unwrap(),
            dir.canonicalize().unwrap()
        );
        let over = Model::load_adapter_over(&adapter, &cpu(), &base).unwrap();
        let alone = Model::load(&adapter, &cpu()).unwrap();
        assert_close(
            "shared",
            &logits(&over, &inputs),
            &logits(&alone, &inputs),
            1e-6,
        );
        served.push(over);
    }
    let name = "bert.encoder.layer.0.attention.self.key.weight";
    let ptr = |m: &Model| m.var_store().variables()[name].data_ptr();
    assert!(
        served.iter().all(|m| ptr(m) == ptr(&base)),
        "the base is copied"
    );
    assert_eq!(logits(&base, &inputs), before);
    let other = fixture("xlm-roberta-cross-encoder");
    let err = Model::load_adapter_over(
        &tmp.path().join("adapter-0"),
        &cpu(),
        &Model::load(&other, &cpu()).unwrap(),
    );
    assert!(err
        .err()
        .unwrap()
        .to_string()
        .contains("not an adapter over"));
}

/// An LLM reranker's adapters: on every attention and feed-forward projection, with nothing
/// else trainable (its score comes from the language model's own output rows, which stay as they
/// are); its adapter export is PEFT's CAUSAL_LM kind, which PEFT reads over the causal LM with
/// finerank's scores, and its merged export scores the same.
#[test]
fn a_qwen3_reranker_takes_adapters_and_peft_reads_them() {
    llm_reranker_takes_adapters("qwen3-reranker");
}

/// The same on the Qwen2 decoder (biased q, k and v projections, whose biases stay frozen as PEFT
/// leaves them), scored by its "1" and "0" rows of the tied embeddings.
#[test]
fn an_mxbai_reranker_takes_adapters_and_peft_reads_them() {
    llm_reranker_takes_adapters("mxbai-rerank-v2");
}

fn llm_reranker_takes_adapters(name: &str) {
    let dir = fixture(name);
    let exp = expected(&dir);
    let inputs = decoder_inputs(&exp);
    let model = with_lora(&dir, lora(&[]));
    assert_close(
        name,
        &logits(&model, &inputs),
        &numbers(&exp["logits"]),
        1e-4,
    );
    let trained = trainable(&model);
    assert!(trained.iter().all(|n| n.contains(".lora_")), "{trained:?}");
    for projection in [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ] {
        let a = format!("{projection}.lora_A.weight");
        assert!(
            trained.iter().any(|n| n.ends_with(&a)),
            "{projection}: {trained:?}"
        );
    }
    train_b_a_little(&model);
    let adapted = logits(&model, &inputs);
    let tmp = tempfile::tempdir().unwrap();
    let (adapter, config) = export_adapter(&model, tmp.path());
    assert_eq!(config["task_type"], "CAUSAL_LM");
    let pad = exp["pad_token_id"].as_i64().unwrap();
    let peft = python(
        "peft_lora.py",
        &[dir.to_str().unwrap(), adapter.to_str().unwrap()],
        &padded_batch(&inputs, pad),
    );
    let diff = assert_close(
        &format!("{name} adapter in PEFT"),
        &numbers(&peft["logits"]),
        &adapted,
        1e-4,
    );
    eprintln!("parity {name} LoRA: PEFT scoring finerank's adapter {diff:.1e}");
    let again = Model::load(&adapter, &cpu()).unwrap();
    assert_close(
        &format!("{name} adapter reloaded"),
        &logits(&again, &inputs),
        &adapted,
        1e-4,
    );
    let merged = tmp.path().join("merged");
    model.save(&merged, None).unwrap();
    let again = Model::load(&merged, &cpu()).unwrap();
    assert_close(
        &format!("{name} merged"),
        &logits(&again, &inputs),
        &adapted,
        1e-4,
    );
}
