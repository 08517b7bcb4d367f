//! One fine-tuning run end to end: review the data, train, and publish the model in the registry.
use std::path::{Path, PathBuf};

use finerank_data::{validate, Problem, Review, TrainRow, ValidateOptions};
use finerank_engine::{
    now_rfc3339, resolve, BaseDtype, DeviceChoice, EngineError, Kind, LoadOptions, ModelRecord,
    Precision, Registry, RegistryError, Reranker,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{finetune, FinetuneConfig, HyperOverrides, Hyperparameters, Resume, TrainEvent};

/// Passages a bi-encoder or pairs a cross-encoder read when the user sets no `--max-length`:
/// long enough for CaseHOLD-style citing contexts, short enough to train on a CPU.
pub const DEFAULT_MAX_LEN: usize = 384;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinetuneJob {
    /// Registry id to publish under (`<uuid>-ft`); minted when `None`.
    pub id: Option<String>,
    /// Base model reference: the default model's name, a `<uuid>-ft` id or a checkpoint directory.
    pub base: String,
    pub kind: Option<Kind>,
    pub name: Option<String>,
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    pub hyper: HyperOverrides,
    pub seed: u64,
    pub max_len: Option<usize>,
    pub eval_every: Option<usize>,
    pub max_steps: Option<usize>,
    #[serde(skip)]
    pub device: DeviceChoice,
    #[serde(skip)]
    pub precision: Precision,
    /// With LoRA: how the frozen base weights are held (bf16 by default on a GPU).
    #[serde(skip)]
    pub base_dtype: BaseDtype,
    /// Cohere's minimums (256 training and 64 validation queries) unless overridden.
    pub min_train_queries: Option<usize>,
    pub min_valid_queries: Option<usize>,
    /// Where the run saves its state at each validation (usually [`resume_dir`]). A run started
    /// on a directory that holds the state of an interrupted run of the same job continues from
    /// it; one of another job is refused. The directory goes once the model is published, and
    /// stays after a failure or a cancellation, for the caller to resume or delete. `None`: the
    /// run saves nothing and cannot be resumed.
    #[serde(default)]
    pub resume_dir: Option<PathBuf>,
    /// What an LLM reranker is trained to judge, in place of its own instruction; saved with
    /// the model (`instruction.json`), which then scores by it. Refused for other models.
    #[serde(default)]
    pub instruction: Option<String>,
    /// What a LoRA run publishes: the merged model, or the adapter alone.
    #[serde(default)]
    pub export: Export,
}

/// What a run that trained LoRA adapters saves. A full fine-tune always saves the whole model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Export {
    /// The adapters folded into the base's weights: a plain checkpoint of the base's size, which
    /// transformers and sentence-transformers load as before.
    #[default]
    Merged,
    /// A PEFT adapter directory (`adapter_config.json`, `adapter_model.safetensors`): the
    /// adapters and a cross-encoder's head, a small fraction of the model, loaded over the base
    /// it names by finerank and by PEFT.
    Adapter,
}

impl Export {
    /// Refuses an adapter export of a run that trains no adapters.
    pub fn check(self, hyper: &HyperOverrides) -> Result<(), String> {
        match self == Export::Adapter && hyper.lora().is_none() {
            true => Err("an adapter export needs LoRA adapters to export: set lora_rank".into()),
            false => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the training data has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Data(Vec<Problem>),
    #[error("{0}")]
    Config(String),
    #[error("training failed: {0}")]
    Train(String),
    /// `resume_dir` holds the saved state of a run with another base model, data or settings:
    /// the fields that differ.
    #[error("{}", crate::resume::mismatch_message(.dir, .fields))]
    ResumeMismatch { dir: PathBuf, fields: Vec<String> },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn sha256_file(path: &Path) -> Result<String, JobError> {
    let bytes = std::fs::read(path).map_err(|source| JobError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Where the resume state of job `id` lives in `registry`: `<home>/resume/<id>`. It is beside
/// `staging/`, not in it, because opening the registry clears staging.
pub fn resume_dir(registry: &Registry, id: &str) -> Result<PathBuf, JobError> {
    if !Registry::is_id(id) {
        return Err(EngineError::from(RegistryError::BadId(id.into())).into());
    }
    Ok(registry.home().join("resume").join(id))
}

/// What the registry records of a run's settings: the hyperparameters (LoRA's and
/// `frozen_layers` only when used), the run's own settings, and for LoRA what was exported.
fn record_hyperparameters(cfg: &FinetuneConfig, export: Export) -> serde_json::Value {
    let mut record = serde_json::to_value(&cfg.hyper).expect("hyperparameters serialize");
    let fields = record
        .as_object_mut()
        .expect("hyperparameters are an object");
    if cfg.hyper.lora_rank > 0 {
        // Shown whole for a LoRA run, defaults included.
        fields.insert("lora_alpha".into(), cfg.hyper.lora_alpha.into());
        fields.insert("lora_dropout".into(), cfg.hyper.lora_dropout.into());
        let targets = &cfg.hyper.lora_target_modules;
        fields.insert("lora_target_modules".into(), serde_json::json!(targets));
        fields.insert("export".into(), serde_json::json!(export));
    }
    fields.insert("seed".into(), cfg.seed.into());
    fields.insert("max_length".into(), cfg.max_len.into());
    fields.insert("eval_every".into(), cfg.eval_every.into());
    fields.insert("max_steps".into(), serde_json::json!(cfg.max_steps));
    record
}

/// Without a validation file, a tenth of the training queries (at least one) is held out.
fn hold_out(mut train: Vec<TrainRow>, seed: u64) -> (Vec<TrainRow>, Vec<TrainRow>) {
    train.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
    let valid = train.split_off(train.len() - (train.len() / 10).max(1));
    (train, valid)
}

/// Reviews the data, trains, saves and publishes. Nothing reaches the registry unless every
/// step succeeded: the model is written to staging and appears in one rename at the end. With
/// `job.resume_dir`, a run interrupted by a crash, a restart or `cancelled` and started again
/// with the same job continues from its last validation, and publishes the model the
/// uninterrupted run would have (bit for bit on a CPU).
pub fn run_job(
    job: &FinetuneJob,
    registry: &Registry,
    on_event: &mut dyn FnMut(&TrainEvent),
    cancelled: &dyn Fn() -> bool,
) -> Result<(ModelRecord, Review), JobError> {
    let (base_name, base_dir) = resolve(&job.base, registry).map_err(EngineError::from)?;
    // The ranges do not depend on the defaults they override, so any kind will do here; the
    // settings are checked before the model loads with the adapters they ask for.
    Hyperparameters::defaults(Kind::CrossEncoder, 0)
        .with(&job.hyper)
        .map_err(JobError::Config)?;
    job.export.check(&job.hyper).map_err(JobError::Config)?;
    // A fresh classification head and fresh adapters are drawn at load time, from the job's
    // seed alone.
    let opts = LoadOptions {
        device: job.device,
        kind: job.kind,
        precision: job.precision,
        lora: job.hyper.lora(),
        frozen_layers: job.hyper.frozen_layers.unwrap_or(0),
        base_dtype: job.base_dtype,
    };
    let mut reranker =
        finerank_model::seeded(job.seed, || Reranker::load(&base_name, &base_dir, &opts))?;
    if let Some(instruction) = &job.instruction {
        reranker.set_instruction(instruction)?;
    }
    let kind = reranker.kind();
    let max_len = job
        .max_len
        .unwrap_or(DEFAULT_MAX_LEN)
        .min(reranker.model().max_positions());

    let defaults = ValidateOptions::default();
    let opts = ValidateOptions {
        min_train_queries: job.min_train_queries.unwrap_or(defaults.min_train_queries),
        min_valid_queries: job.min_valid_queries.unwrap_or(defaults.min_valid_queries),
        max_len,
    };
    let review = validate(
        &job.train,
        job.valid.as_deref(),
        &opts,
        &reranker.pair_counter(),
    );
    if !review.ok {
        return Err(JobError::Data(review.errors.clone()));
    }
    let (train, valid) = match job.valid {
        Some(_) => (review.train_rows.clone(), review.valid_rows.clone()),
        None => hold_out(review.train_rows.clone(), job.seed),
    };

    let hyper = Hyperparameters::defaults(kind, train.len())
        .with(&job.hyper)
        .map_err(JobError::Config)?;
    let mut cfg = FinetuneConfig::new(hyper, train.len(), max_len);
    cfg.seed = job.seed;
    cfg.max_steps = job.max_steps;
    if let Some(every) = job.eval_every {
        cfg.eval_every = every.max(1);
    }
    let train_sha256 = sha256_file(&job.train)?;
    let valid_sha256 = job.valid.as_deref().map(sha256_file).transpose()?;
    cfg.resume = job.resume_dir.as_ref().map(|dir| {
        let mut identity = serde_json::json!({
            "base_model": base_name,
            "base_model_dir": base_dir,
            "kind": kind,
            "train_sha256": train_sha256,
            "valid_sha256": valid_sha256,
        });
        // Only an LLM reranker's: states saved before instructions existed still resume.
        if let Some(instruction) = reranker.instruction() {
            identity["instruction"] = instruction.into();
        }
        Resume {
            dir: dir.clone(),
            identity,
        }
    });
    if let Some(resume) = &cfg.resume {
        let fields = crate::resume::mismatch(resume, &cfg).map_err(JobError::Train)?;
        if !fields.is_empty() {
            let dir = resume.dir.clone();
            return Err(JobError::ResumeMismatch { dir, fields });
        }
    }
    let outcome = finetune(&mut reranker, &train, &valid, &cfg, on_event, cancelled)
        .map_err(JobError::Train)?;

    let id = job.id.clone().unwrap_or_else(Registry::new_id);
    let staged = registry
        .staging_dir(&id)
        .map_err(EngineError::from)?
        .join("model");
    let bi_len = (kind == Kind::BiEncoder).then_some(max_len);
    let model = reranker.model();
    let saved = match job.export {
        Export::Merged => model.save(&staged, bi_len),
        Export::Adapter => model.save_adapter(&staged),
    };
    let saved = saved
        .map_err(|e| JobError::from(EngineError::from(e)))
        // Beside the weights, before the one rename that publishes the model.
        .and_then(|()| match &outcome.calibration {
            Some(calibration) => calibration.write(&staged).map_err(JobError::from),
            None => Ok(()),
        })
        .and_then(|()| reranker.write_instruction(&staged).map_err(JobError::from));
    if let Err(e) = saved {
        // A model that cannot be saved (a full disk) leaves nothing behind, not even its lock.
        registry.abandon(&id);
        return Err(e);
    }
    let record = ModelRecord {
        name: job
            .name
            .clone()
            .unwrap_or_else(|| format!("{base_name}-ft")),
        id,
        kind,
        base_model: base_name,
        base_model_dir: base_dir.display().to_string(),
        created_at: now_rfc3339(),
        hyperparameters: record_hyperparameters(&cfg, job.export),
        metrics: serde_json::to_value(&outcome).expect("outcome serializes"),
        train_sha256,
        valid_sha256,
    };
    if let Err(e) = registry.publish(&record) {
        registry.abandon(&record.id);
        return Err(EngineError::from(e).into());
    }
    if let Some(dir) = &job.resume_dir {
        // The model is out; a state left behind would only take disk space.
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), "could not remove a finished run's resume state: {e}");
        }
    }
    Ok((record, review))
}
