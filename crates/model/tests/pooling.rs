//! Bi-encoders against sentence-transformers: beyond mean pooling, on tiny checkpoints that it
//! saved itself (`tests/families/generate.py`): CLS pooling (the bge family), a Dense
//! projection, and the query and document prompts each declares; and MPNet on its real weights.
mod common;

use std::path::Path;

use common::{cpu, expected, fixture, python};
use finerank_model::{Kind, Model, Role};
use finerank_text::{Encoded, TextTokenizer};
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The model's prompt for `role`, then the text, cut to `max_len`: as finerank's engine reads a
/// bi-encoder's inputs (`Reranker::encode_for`).
fn prompted(tok: &TextTokenizer, model: &Model, role: Role, text: &str, max_len: usize) -> Encoded {
    let (prompt, mut ids) = tok.prompted_tokens(model.prompt(role), text);
    ids.truncate(max_len - tok.special_tokens(false) - prompt.len());
    let all: Vec<u32> = prompt.into_iter().chain(ids).collect();
    tok.single_from_tokens(&all)
}

fn assert_rows_close(what: &str, got: &[Vec<f32>], want: &[Vec<f64>]) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what} {i}: width");
        for (a, b) in g.iter().zip(w) {
            assert!((*a as f64 - b).abs() < 1e-4, "{what} {i}: {g:?} vs {w:?}");
        }
    }
}

/// sentence-transformers' embeddings of `texts` read from `dir`, after the prompt named.
fn sentence_transformers(dir: &Path, prompt_name: Option<&str>, texts: &[String]) -> Vec<Vec<f64>> {
    let mut args = vec![dir.to_str().unwrap()];
    args.extend(prompt_name);
    rows(&python("st_embed.py", &args, &serde_json::json!(texts)))
}

fn check_bi_encoder(name: &str) {
    let dir = fixture(name);
    let exp = expected(&dir);
    let model = Model::load(&dir, &cpu()).unwrap();
    assert_eq!(model.kind(), Kind::BiEncoder);
    assert_eq!(model.prompt(Role::Query), exp["prompts"]["query"], "{name}");
    assert_eq!(
        model.prompt(Role::Document),
        exp["prompts"]["document"],
        "{name}"
    );
    let max_len = exp["max_seq_length"].as_u64().unwrap() as usize;
    assert_eq!(
        model.window(),
        max_len,
        "{name}: the window sentence-transformers reads with"
    );

    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let sides = [
        (Role::Query, "query", "queries"),
        (Role::Document, "document", "documents"),
    ];
    for (role, prompt_name, texts) in sides {
        let texts = strings(&exp[texts]);
        let inputs: Vec<Encoded> = texts
            .iter()
            .map(|t| prompted(&tok, &model, role, t, max_len))
            .collect();
        for (i, input) in inputs.iter().enumerate() {
            let want: Vec<i64> = exp[format!("{prompt_name}_input_ids")][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(input.ids, want, "{name} {prompt_name} {i}: ids");
        }
        let want = rows(&exp[format!("{prompt_name}_embeddings")]);
        assert_rows_close(
            &format!("{name} {prompt_name}"),
            &model.infer(&inputs),
            &want,
        );
    }

    // Training reaches the Dense layer, and what is saved is what sentence-transformers reads.
    let texts = strings(&exp["documents"]);
    let inputs: Vec<Encoded> = texts
        .iter()
        .map(|t| prompted(&tok, &model, Role::Document, t, max_len))
        .collect();
    let before = model.infer(&inputs);
    let anchor = tch::Tensor::from_slice(&before[0]).view([1, -1]);
    let loss = (model.forward_t(&inputs, false) * anchor).sum(tch::Kind::Float);
    loss.backward();
    tch::no_grad(|| {
        for (_, mut var) in model.var_store().variables() {
            let step = var.grad() * 0.5;
            let _ = var.f_sub_(&step).unwrap();
        }
    });
    let after = model.infer(&inputs);
    assert_ne!(after, before, "{name}: the step changed nothing");
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("saved");
    model.save(&saved, None).unwrap();
    assert_eq!(Model::load(&saved, &cpu()).unwrap().infer(&inputs), after);
    let theirs = sentence_transformers(&saved, Some("document"), &texts);
    assert_rows_close(
        &format!("{name} export read by sentence-transformers"),
        &after,
        &theirs,
    );
}

#[test]
fn cls_pooling_and_an_instruction_prompt_match_sentence_transformers() {
    check_bi_encoder("bert-cls-bi-encoder");
}

#[test]
fn a_dense_projection_and_e5_prompts_match_sentence_transformers() {
    check_bi_encoder("bert-dense-bi-encoder");
}

/// The real weights: all-mpnet-base-v2, which `scripts/fetch-mpnet.sh` puts in `.cache/models`.
/// Without it the test says so and passes.
#[test]
fn all_mpnet_embeddings_match_sentence_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/all-mpnet-base-v2");
    if !dir.join("model.safetensors").exists() {
        eprintln!(
            "skipped: {} is absent; scripts/fetch-mpnet.sh fetches it",
            dir.display()
        );
        return;
    }
    // Lengths that reach the log-spaced relative buckets (16, 32, 64 tokens apart) and the last
    // one (128), in one padded batch.
    let long = "The lessee shall keep the premises in good repair, pay the rent on the first day \
                of each month, and give the lessor sixty days' written notice before leaving. "
        .repeat(6);
    let texts = [
        "Paris is the capital and largest city of France.",
        "What is the powerhouse of the cell?",
        "The district court granted summary judgment in favor of the defendant, holding that \
         the contract was unenforceable because it lacked consideration.",
        long.as_str(),
    ];
    let model = Model::load(&dir, &cpu()).unwrap();
    assert_eq!(model.kind(), Kind::BiEncoder);
    assert_eq!(model.window(), 384);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let inputs: Vec<Encoded> = texts
        .iter()
        .map(|t| tok.encode_single(t, model.window()))
        .collect();
    assert!(
        inputs[3].len() > 130,
        "the long text reaches the last bucket"
    );
    let got = model.infer(&inputs);
    let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    let want = sentence_transformers(&dir, None, &texts);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
        let dot: f32 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
        let norms = g.iter().map(|a| a * a).sum::<f32>().sqrt()
            * w.iter().map(|b| b * b).sum::<f32>().sqrt();
        let cosine = dot / norms;
        assert!(cosine >= 0.9999, "text {i}: cosine {cosine}");
    }
}
