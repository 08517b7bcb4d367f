//! Gradient checkpointing: a step through `forward_checkpointed` and its recompute gives the
//! loss and the gradients of a plain step with dropout off, for a fully fine-tuned cross-encoder
//! and for the Qwen decoders with LoRA. With dropout on, the two draw their masks differently
//! (a plain pass keeps one stream, which every earlier run drew from), so there the gradient is
//! checked against the checkpointed loss itself.
mod common;

use common::{cpu, decoder_inputs, expected, fixture, listwise_loss, pairs, train_b_a_little};
use finerank_model::{seeded, LoadOptions, Lora, Model};
use finerank_text::Encoded;
use tch::{Kind, Tensor};

/// One step's loss and the gradient of every trainable tensor, by name; the gradients are
/// zeroed again after, for the next step to compare.
fn step(
    model: &Model,
    inputs: &[Encoded],
    groups: &[i64],
    train: bool,
    checkpointed: bool,
) -> (f64, Vec<(String, Tensor)>) {
    let loss = seeded(5, || {
        let loss = match checkpointed {
            false => {
                let loss = listwise_loss(&model.forward_t(inputs, train), groups);
                loss.backward();
                loss
            }
            true => {
                let (out, recompute) = model.forward_checkpointed(inputs, train);
                let loss = listwise_loss(&out, groups);
                loss.backward();
                recompute.backward();
                loss
            }
        };
        loss.double_value(&[])
    });
    let mut grads: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, mut t)| {
            let g = t.grad().copy();
            t.zero_grad();
            (n, g)
        })
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (loss, grads)
}

/// The checkpointed step against the plain one: the loss and every gradient within `tol` of
/// its largest entry (at least 1), and at least one gradient not zero.
fn assert_same_step(what: &str, model: &Model, inputs: &[Encoded], groups: &[i64], train: bool) {
    let (loss, plain) = step(model, inputs, groups, train, false);
    let (again, checkpointed) = step(model, inputs, groups, train, true);
    assert!(
        (loss - again).abs() <= 1e-5,
        "{what}: loss {loss} vs {again}"
    );
    assert_eq!(plain.len(), checkpointed.len());
    let mut moved = false;
    for ((name, p), (_, c)) in plain.iter().zip(&checkpointed) {
        let scale = p.abs().max().double_value(&[]).max(1.0);
        let diff = (p - c).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-5 * scale,
            "{what}: gradient of {name} off by {diff}"
        );
        moved |= p.abs().max().double_value(&[]) > 0.0;
    }
    assert!(moved, "{what}: no gradient at all");
}

/// With dropout on, a checkpointed pass draws each layer's masks from the step's seed, in the
/// first pass and again in the recompute, so for one seed its loss is a smooth function of the
/// weights, and the gradient it leaves must be that function's: a central difference along the
/// gradient matches the gradient's norm. A layer recomputed with other masks than it first drew
/// leaves a gradient off by tens of percent.
fn assert_gradient_is_the_losses(what: &str, model: &Model, inputs: &[Encoded], groups: &[i64]) {
    let (_, grads) = step(model, inputs, groups, true, true);
    let norm = grads
        .iter()
        .map(|(_, g)| g.square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    assert!(norm > 0.0, "{what}: no gradient at all");
    let shift = |by: f64| {
        tch::no_grad(|| {
            let mut vars = model.var_store().variables();
            for (name, g) in &grads {
                let v = vars.get_mut(name).unwrap();
                let _ = v.f_add_(&(g * (by / norm))).unwrap();
            }
        })
    };
    let eps = 1e-2;
    shift(eps);
    let (up, _) = step(model, inputs, groups, true, true);
    shift(-2.0 * eps);
    let (down, _) = step(model, inputs, groups, true, true);
    shift(eps);
    let slope = (up - down) / (2.0 * eps);
    assert!(
        (slope - norm).abs() <= 0.02 * norm,
        "{what}: the loss moves at {slope} along the gradient, whose norm is {norm}"
    );
}

#[test]
fn a_checkpointed_bert_step_is_the_plain_step() {
    let dir = fixture("bert-cross-encoder");
    let (exp, inputs) = pairs(&dir);
    let groups: Vec<i64> = serde_json::from_value(exp["groups"].clone()).unwrap();
    let model = Model::load(&dir, &cpu()).unwrap();
    assert_same_step("bert, dropout off", &model, &inputs, &groups, false);
    assert_gradient_is_the_losses("bert, dropout on", &model, &inputs, &groups);
    // With dropout on, the same seed makes the same step, and the masks are really drawn.
    let (a, _) = step(&model, &inputs, &groups, true, true);
    let (b, _) = step(&model, &inputs, &groups, true, true);
    let (off, _) = step(&model, &inputs, &groups, false, true);
    assert_eq!(a, b);
    assert!(
        (a - off).abs() > 1e-6,
        "dropout changed nothing: {a} vs {off}"
    );
}

/// Both Qwen decoders: Qwen3-Reranker and mxbai-rerank-v2 (Qwen2).
#[test]
fn a_checkpointed_llm_lora_step_is_the_plain_step() {
    for name in ["qwen3-reranker", "mxbai-rerank-v2"] {
        let dir = fixture(name);
        let exp = expected(&dir);
        let inputs = decoder_inputs(&exp);
        let opts = LoadOptions {
            lora: Some(Lora {
                rank: 4,
                alpha: 8.0,
                dropout: 0.1,
                targets: Vec::new(),
            }),
            ..cpu()
        };
        let model = seeded(7, || Model::load(&dir, &opts)).unwrap();
        train_b_a_little(&model);
        let groups = [inputs.len() as i64];
        assert_same_step(
            &format!("{name} LoRA, dropout off"),
            &model,
            &inputs,
            &groups,
            false,
        );
        assert_gradient_is_the_losses(
            &format!("{name} LoRA, dropout on"),
            &model,
            &inputs,
            &groups,
        );
    }
}
