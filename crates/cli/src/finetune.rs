//! `finerank finetune`: train a model and register it.
use std::path::PathBuf;
use std::process::ExitCode;

use finerank_engine::{BaseDtype, Kind, Registry, DEFAULT_MODEL};
use finerank_train::{
    resume_dir, resume_step, run_job, Export, FinetuneJob, HyperOverrides, Outcome,
};

use crate::progress::TrainProgress;
use crate::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Training file: JSONL of {query, relevant_passages, hard_negatives}.
    #[arg(long)]
    train: PathBuf,
    /// Validation file, same format. Without one, a tenth of the training queries is held out.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Base model: the default model's name, a fine-tuned id, a checkpoint directory or a
    /// Hugging Face model id (org/name[@revision]), as for --model.
    #[arg(long, env = "FINERANK_MODEL", default_value = DEFAULT_MODEL)]
    base: String,
    /// Train as this kind instead of the base checkpoint's own.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// A readable name for the registry (the id is generated).
    #[arg(long)]
    name: Option<String>,
    /// Cohere's hyperparameters; unset ones get defaults for the model and data.
    #[command(flatten)]
    hyper: HyperOverrides,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokens per input (bi-encoder: each text; cross-encoder: the pair). Default 384.
    #[arg(long)]
    max_length: Option<usize>,
    /// Evaluate on validation every N steps (default: about four times a run).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Stop after N steps (for quick trials).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Lower Cohere's minimum of 256 training queries (for experiments only).
    #[arg(long)]
    min_train_queries: Option<usize>,
    /// Lower Cohere's minimum of 64 validation queries (for experiments only).
    #[arg(long)]
    min_valid_queries: Option<usize>,
    /// Continue the interrupted run ID (printed when it started) from its last validation, to
    /// the model it would have made. Give the arguments it started with: another base model,
    /// other data or settings are refused.
    #[arg(long, value_name = "ID")]
    resume: Option<String>,
    /// What an LLM reranker (Qwen3, mxbai-rerank-v2) is trained to judge, in place of its model
    /// card's instruction; the model scores by it from then on. Refused for other models.
    #[arg(long)]
    instruction: Option<String>,
    /// With --lora-rank, what is registered: the adapters merged into the base's weights, or a
    /// PEFT adapter directory over the base.
    #[arg(long, value_enum, default_value_t = Export::Merged)]
    export: Export,
    /// With --lora-rank, how the frozen base weights of the adapted projections are held: bf16
    /// halves their memory and, under bf16 arithmetic (--precision bf16, the default on a GPU),
    /// changes nothing computed. auto: bf16 on a GPU, f32 on a CPU.
    #[arg(long, value_enum, default_value = "auto")]
    base_dtype: BaseDtypeArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BaseDtypeArg {
    Auto,
    F32,
    Bf16,
}

impl From<BaseDtypeArg> for BaseDtype {
    fn from(d: BaseDtypeArg) -> BaseDtype {
        match d {
            BaseDtypeArg::Auto => BaseDtype::Auto,
            BaseDtypeArg::F32 => BaseDtype::F32,
            BaseDtypeArg::Bf16 => BaseDtype::Bf16,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    CrossEncoder,
    BiEncoder,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::CrossEncoder => Kind::CrossEncoder,
            KindArg::BiEncoder => Kind::BiEncoder,
        }
    }
}

impl Args {
    pub fn job(self, ctx: &Ctx) -> FinetuneJob {
        FinetuneJob {
            id: None,
            base: self.base,
            kind: self.kind.map(Kind::from),
            name: self.name,
            train: self.train,
            valid: self.valid,
            hyper: self.hyper,
            seed: self.seed,
            max_len: self.max_length,
            eval_every: self.eval_every,
            max_steps: self.max_steps,
            device: ctx.device,
            precision: ctx.precision,
            base_dtype: self.base_dtype.into(),
            min_train_queries: self.min_train_queries,
            min_valid_queries: self.min_valid_queries,
            resume_dir: None,
            instruction: self.instruction,
            export: self.export,
        }
    }
}

/// Trains with a progress bar and returns the registered model's record.
pub fn train(ctx: &Ctx, job: &FinetuneJob) -> anyhow::Result<finerank_engine::ModelRecord> {
    let registry = ctx.registry()?;
    let mut progress = TrainProgress::new();
    let result = run_job(job, &registry, &mut |e| progress.on_event(e), &|| false);
    progress.finish();
    let (record, review) = result?;
    for w in &review.warnings {
        eprintln!("warning: {w}");
    }
    let outcome: Outcome = serde_json::from_value(record.metrics.clone())?;
    match (&outcome.calibration, &outcome.calibration_skipped) {
        (Some(c), _) => {
            let r = c
                .fitted_on
                .as_ref()
                .expect("a fitted calibration carries its report");
            eprintln!(
                "calibration: ECE {:.3} -> {:.3} (the default mapping, then {c}, cross-fitted \
                 on {} validation pairs)",
                r.ece_before, r.ece_after, r.pairs
            );
        }
        (None, Some(reason)) => eprintln!(
            "calibration: skipped ({reason}); the model scores with its kind's default mapping"
        ),
        (None, None) => {}
    }
    Ok(record)
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    ctx.precision.training()?;
    let resume = a.resume.clone();
    let mut job = a.job(ctx);
    let id = resume.clone().unwrap_or_else(Registry::new_id);
    let dir = resume_dir(&ctx.registry()?, &id)?;
    if resume.is_none() {
        eprintln!(
            "run {id}: its state is saved at each validation in {}; if it is interrupted, run \
             the same command with --resume {id} to continue it",
            dir.display()
        );
    } else if resume_step(&dir).map_err(anyhow::Error::msg)?.is_none() {
        anyhow::bail!(
            "nothing to resume for {id}: no saved state in {} (a run saves at its first \
             validation, and its state goes once its model is registered)",
            dir.display()
        );
    }
    job.id = Some(id);
    job.resume_dir = Some(dir);
    let record = train(ctx, &job)?;
    eprintln!("registered {} ({})", record.id, record.name);
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(ExitCode::SUCCESS)
}
