//! `finerank bench`: rerank and training throughput on CaseHOLD pairs, on this machine.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use finerank_data::{example_to_train, read_raw, Mapping, TrainRow};
use finerank_engine::{groups_of_test_rows, LoadOptions, ScoreOptions};
use finerank_train::{finetune, FinetuneConfig, HyperOverrides, Hyperparameters};

use crate::demo::casehold_dir;
use crate::evaluate::read_test_rows;
use crate::finetune::{BaseDtypeArg, KindArg};
use crate::{Ctx, ModelArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Score the model as this kind (a cross-encoder from a bi-encoder base gets a fresh head,
    /// which is as fast as a trained one).
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// CaseHOLD directory (default: the shared copy).
    #[arg(long, env = "FINERANK_CASEHOLD")]
    data: Option<PathBuf>,
    /// Test queries to rerank (5 holdings each).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Training steps to time (0: rerank only).
    #[arg(long, default_value_t = 6)]
    steps: usize,
    #[arg(long, default_value_t = 384)]
    max_length: usize,
    /// Inputs per forward pass, at most (`bench/rerank-vs-st.py` sets the reference's batch).
    #[arg(long, default_value_t = ScoreOptions::default().max_batch)]
    batch_size: usize,
    /// Also write every query's scores here (JSON), to check them against another stack.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// The timed steps' settings (LoRA among them); the defaults by kind and data size otherwise.
    #[command(flatten)]
    hyper: HyperOverrides,
    /// With --lora-rank, how the frozen base weights are held (as `finetune --base-dtype`).
    #[arg(long, value_enum, default_value = "auto")]
    base_dtype: BaseDtypeArg,
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let data = casehold_dir(a.data)?;
    if a.steps > 0 {
        ctx.precision.training()?;
    }
    let opts = LoadOptions {
        lora: a.hyper.lora(),
        frozen_layers: a.hyper.frozen_layers.unwrap_or(0),
        base_dtype: a.base_dtype.into(),
        ..ctx.load_options(a.kind.map(Into::into))
    };
    // Fresh adapters and a fresh head are drawn at load time, from seed 0 as a fine-tune's are.
    let mut reranker = finerank_model::seeded(0, || ctx.load_with(&a.model.model, &opts))?;
    let device = reranker.model().describe_device();

    let rows: Vec<_> = read_test_rows(&data.join("test.jsonl"))?
        .into_iter()
        .take(a.queries)
        .collect();
    let groups = groups_of_test_rows(&rows);
    let pairs: usize = groups.iter().map(|g| g.documents.len()).sum();
    let opts = ScoreOptions {
        max_len: Some(a.max_length),
        max_batch: a.batch_size,
        ..Default::default()
    };
    reranker.score(&groups[..groups.len().min(8)], &opts); // warm-up
    let t = Instant::now();
    let scored = reranker.score(&groups, &opts);
    let rerank_secs = t.elapsed().as_secs_f64();
    if let Some(path) = &a.scores {
        let scores: Vec<&[f32]> = scored.iter().map(|g| g.scores.as_slice()).collect();
        std::fs::write(path, serde_json::to_vec(&scores)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut result = serde_json::json!({
        "model": reranker.name(),
        "kind": reranker.kind(),
        "device": device,
        "max_length": a.max_length,
        // What the scores written to --scores are: the raw scores mapped by it.
        "calibration": reranker.calibration(),
        "rerank": { "queries": rows.len(), "pairs": pairs, "batch_size": a.batch_size,
                    "seconds": rerank_secs, "pairs_per_second": pairs as f64 / rerank_secs },
    });

    if a.steps > 0 {
        let train: Vec<TrainRow> = read_raw(&data.join("train.jsonl"), &Mapping::casehold())?
            .iter()
            .map(example_to_train)
            .collect();
        let hyper = Hyperparameters::defaults(reranker.kind(), train.len())
            .with(&a.hyper)
            .map_err(anyhow::Error::msg)?;
        let mut cfg = FinetuneConfig::new(hyper, train.len(), a.max_length);
        cfg.max_steps = Some(a.steps);
        cfg.eval_every = usize::MAX;
        let outcome = finetune(&mut reranker, &train, &[], &cfg, &mut |_| {}, &|| false)
            .map_err(anyhow::Error::msg)?;
        result["train"] = serde_json::json!({
            "steps": outcome.steps, "batch_size": cfg.hyper.train_batch_size,
            "seconds": outcome.train_seconds, "pairs_per_second": outcome.train_pairs_per_second,
        });
    }
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(ExitCode::SUCCESS)
}
