//! Fine-tuning jobs: what one is (Cohere's settings), and the background workers that run them.
//!
//! A job is a row of `finetuned_models`. Workers take queued rows oldest first, train with
//! `finerank_train::run_job` (which reviews the data, trains, and publishes `<id>-ft` into the
//! registry in one rename), store events and step metrics as training goes, evaluate retrieval
//! when the dataset has a corpus (`retrieval`), load the new model into the rerank worker and
//! mark it ready:
//! `STATUS_QUEUED -> STATUS_FINETUNING -> STATUS_DEPLOYING_API -> STATUS_READY`, or `STATUS_FAILED`
//! with a reason.
//!
//! The workers are threads of `finerank serve` (`--training-workers`) or of `finerank worker`
//! processes, on this machine or others that share the database. A worker claims a job under a
//! lease and renews it by heartbeat (every third of `--job-lease`); everything it writes about
//! the job is conditioned on still holding that claim (`store::Mover`). Each process also sweeps
//! the jobs whose lease expired (their worker died or was cut off) back to the queue. A job
//! cancelled by a request (`STATUS_PAUSED`), deleted, or taken over after its lease expired is
//! stopped by its worker at the next heartbeat.
//!
//! A run saves its state at each validation (`finerank_train::resume_dir`; with a shared
//! `--store`, uploaded there too, so that a worker on another machine finds it). A job that a
//! crash, a restart or a shutdown interrupted goes back to the queue (or is ready, if its model
//! had already been published) and continues from its last validation, to the model the
//! uninterrupted run would have made. A failed or paused job keeps its state until it is retried
//! ([`Jobs::retry`]) or deleted.
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use finerank_engine::{LoadOptions, ModelRecord, Registry, Reranker};
use finerank_eval::RetrievalReport;
use finerank_train::{
    fetch_state, panic_message, resume_dir, run_job, saved_step, share_state, Export, FinetuneJob,
    HyperOverrides, JobError, Outcome, TrainEvent, ValidMetrics,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::batcher::Batcher;
use crate::catalog::Catalog;
use crate::collection::{cache_dir, Collection};
use crate::config::Config;
use crate::store::{self, DatasetRow, ModelRow, Mover, Store, StoreError};
use crate::uploads::Uploads;
use crate::wake::Wake;

/// The registry id of the model that job `job` trains, as Cohere names it: `<job>-ft`.
pub fn model_of(job: &str) -> String {
    format!("{job}-ft")
}

/// How the queue event of a job that the last process left training begins, where that process
/// held the database alone (SQLite).
pub const RESTART_NOTE: &str = "interrupted by a server restart";
/// How the queue event of a job whose worker stopped renewing its lease begins.
pub const LEASE_NOTE: &str = "its worker's lease expired";
/// The event of a job cancelled by a request.
const CANCEL_NOTE: &str = "cancelled by a request; retry resumes it from its last validation";
/// How long an idle worker waits before it looks at a queue that other processes also fill.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum JobStatus {
    #[serde(rename = "STATUS_QUEUED")]
    Queued,
    #[serde(rename = "STATUS_FINETUNING")]
    Finetuning,
    #[serde(rename = "STATUS_DEPLOYING_API")]
    DeployingApi,
    #[serde(rename = "STATUS_READY")]
    Ready,
    #[serde(rename = "STATUS_FAILED")]
    Failed,
    /// Cancelled by a request: it keeps its saved state, and a retry resumes it.
    #[serde(rename = "STATUS_PAUSED")]
    Paused,
}

impl JobStatus {
    const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Finetuning,
        JobStatus::DeployingApi,
        JobStatus::Ready,
        JobStatus::Failed,
        JobStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "STATUS_QUEUED",
            JobStatus::Finetuning => "STATUS_FINETUNING",
            JobStatus::DeployingApi => "STATUS_DEPLOYING_API",
            JobStatus::Ready => "STATUS_READY",
            JobStatus::Failed => "STATUS_FAILED",
            JobStatus::Paused => "STATUS_PAUSED",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|j| j.as_str() == s)
    }
}

/// Cohere's fine-tuning settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    pub base_model: BaseModel,
    /// A dataset of type `reranker-finetune-input` in `validated` status.
    pub dataset_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<Hyperparameters>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BaseModel {
    /// Only `BASE_TYPE_RERANK`.
    pub base_type: String,
    /// The model to start from: the default model (when omitted), an alias such as `english`, or
    /// a ready fine-tuned model's `<id>-ft`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Cohere's hyperparameters; those left out get defaults for the model and the data size.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hyperparameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping_patience: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Seeds the run's data order, dropout and any fresh head (default 0). A finerank
    /// extension: the same seed, data and settings make the same model on a CPU, whatever other
    /// jobs train beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Train LoRA adapters of this rank on the encoder's projections (and a cross-encoder's
    /// head) instead of every weight; 0 or absent trains every weight. The model is saved with
    /// the adapters merged into its weights, unless `export` says `adapter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<usize>,
    /// LoRA's update is scaled by `lora_alpha / lora_rank` (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<f64>,
    /// Cohere's `LORA_TARGET_MODULES_UNSPECIFIED` or `LORA_TARGET_MODULES_QKVO_FFN` (every
    /// attention and feed-forward projection, the default), or a comma-separated list of module
    /// names as PEFT's `target_modules` has them (`query,value`, `Wqkv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_target_modules: Option<String>,
    /// Dropout on the LoRA adapters' input while training (default 0.1). A finerank extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_dropout: Option<f64>,
    /// Without LoRA: keep the embeddings and this many encoder layers from the bottom frozen. A
    /// finerank extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_layers: Option<usize>,
    /// Queries in memory at once: each step's gradients are accumulated over micro-batches of
    /// this many (0 or absent: the whole batch). The result is the whole batch's step. A
    /// finerank extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch_size: Option<usize>,
    /// Keep only each encoder layer's input in memory and recompute the layer for its
    /// gradients: less memory for about a third more compute. A finerank extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_checkpointing: Option<bool>,
    /// With `lora_rank`: what the job registers, `merged` (the default: the adapters folded into
    /// the base's weights, a plain checkpoint) or `adapter` (a PEFT adapter directory over the
    /// base, a small fraction of its size, served over the base). A finerank extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "adapter")]
    pub export: Option<Export>,
}

impl Hyperparameters {
    /// The settings as training takes them; an error names the field and what it takes.
    pub fn overrides(&self) -> Result<HyperOverrides, String> {
        Ok(HyperOverrides {
            train_epochs: self.train_epochs,
            learning_rate: self.learning_rate,
            train_batch_size: self.train_batch_size,
            early_stopping_patience: self.early_stopping_patience,
            early_stopping_threshold: self.early_stopping_threshold,
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            lora_target_modules: self
                .lora_target_modules
                .as_deref()
                .map(lora_targets)
                .transpose()?,
            frozen_layers: self.frozen_layers,
            micro_batch_size: self.micro_batch_size,
            gradient_checkpointing: self.gradient_checkpointing,
        })
    }
}

/// `lora_target_modules` as module names: Cohere's values name groups of a chat model's
/// projections; the one that means all of them maps to none named (every projection).
fn lora_targets(value: &str) -> Result<Vec<String>, String> {
    match value {
        "LORA_TARGET_MODULES_UNSPECIFIED" | "LORA_TARGET_MODULES_QKVO_FFN" => Ok(Vec::new()),
        "LORA_TARGET_MODULES_QV" | "LORA_TARGET_MODULES_QKVO" => Err(format!(
            "lora_target_modules {value:?} is not supported: rerank families fuse some of these \
             projections (ModernBERT's Wqkv, GTE's qkv_proj); name the modules instead, e.g. \
             \"query,value\" for BERT, or leave it out for every projection"
        )),
        list => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
            match names.is_empty() {
                true => Err(
                    "lora_target_modules is empty; leave it out for every projection, \
                             or name modules such as \"query,value\""
                        .into(),
                ),
                false => Ok(names),
            }
        }
    }
}

/// Where a running job is.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: Option<f64>,
}

/// A finished job's validation metrics, of the fine-tuned model and of its base.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FinetuneMetrics {
    /// accuracy_at_1, accuracy_at_3, mrr_at_10 and ndcg_at_10 of the base model.
    #[schema(value_type = Object)]
    pub base: ValidMetrics,
    /// The same for the fine-tuned model (its best checkpoint).
    #[schema(value_type = Object)]
    pub finetuned: ValidMetrics,
    pub best_step: usize,
    /// Whether a checkpoint beat the base on validation. When none did, the model is the base's
    /// weights under a new id, and says so rather than pass for an improvement.
    pub improved: bool,
    pub steps: usize,
    pub stopped_early: bool,
    pub train_seconds: f64,
    /// The hyperparameters the run used, defaults filled in.
    #[schema(value_type = Object)]
    pub hyperparameters: serde_json::Value,
    /// For a dataset with a corpus: retrieval as search sees it, on the evaluation queries. BM25's
    /// top 100 over the corpus (`systems[0]`), re-ranked by the base model (`systems[1]`) and by
    /// the fine-tuned one (`systems[2]`), each with nDCG@10, Recall@10 and @100, MRR@10 and
    /// MAP@100 and their 95% bootstrap CIs, then the paired differences (`comparisons`: B − A,
    /// with a paired-bootstrap CI and a randomization-test p-value), as `finerank eval --beir`
    /// reports them. These evaluation queries also chose the checkpoint, so the fine-tuned
    /// model's figures lean optimistic: they are not a held-out test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub retrieval: Option<RetrievalReport>,
}

impl FinetuneMetrics {
    /// What the registry recorded of a run: its outcome and the hyperparameters it used.
    fn from_record(record: ModelRecord) -> Result<FinetuneMetrics, String> {
        let outcome: Outcome = serde_json::from_value(record.metrics)
            .map_err(|e| format!("internal error: unreadable training outcome: {e}"))?;
        Ok(FinetuneMetrics {
            improved: outcome.improved(),
            base: outcome.base,
            finetuned: outcome.best,
            best_step: outcome.best_step,
            steps: outcome.steps,
            stopped_early: outcome.stopped_early,
            train_seconds: outcome.train_seconds,
            hyperparameters: record.hyperparameters,
            retrieval: None,
        })
    }
}

/// Handle on the training workers.
pub struct Jobs {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// The thread that renews this process's leases and sweeps expired ones.
    leases: Mutex<Option<JoinHandle<()>>>,
}

/// Who runs the jobs, and what they share.
pub struct Crew {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    /// The rerank worker that loads a finished model before it is ready; a process that does not
    /// serve (`finerank worker`) has none.
    pub batcher: Option<Batcher>,
    pub uploads: Arc<Uploads>,
    /// This process holds the database alone (SQLite, under the data directory's lock): a job
    /// it finds running at start is a dead process's, with no lease to wait out.
    pub sole: bool,
    /// Names this process in its claims and in the log: "serve" or "worker".
    pub role: &'static str,
}

struct Shared {
    crew: Crew,
    config: Config,
    wake: Wake,
    /// Rung to stop the lease thread, once the workers have stopped.
    beat: Wake,
    /// This process, as its claims name it: role, host, pid and a random part.
    name: String,
    /// Running jobs by id.
    running: Mutex<HashMap<String, Claim>>,
}

/// A job this process runs: its claim, and how to stop it.
struct Claim {
    owner: String,
    /// Polled by the training loop between steps.
    cancel: Arc<AtomicBool>,
    /// The last heartbeat that renewed the lease.
    renewed: Instant,
}

impl std::ops::Deref for Shared {
    type Target = Crew;

    fn deref(&self) -> &Crew {
        &self.crew
    }
}

/// This process's name in its claims: what an operator needs to find it.
fn process_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{role} {} pid {} ({})",
        host.trim(),
        std::process::id(),
        &nonce[..8]
    )
}

impl Jobs {
    /// Settles what a previous process left, then starts `config.training_workers` workers and
    /// the lease thread.
    pub fn start(crew: Crew, config: &Config) -> anyhow::Result<Jobs> {
        recover(&*crew.store, crew.catalog.registry(), crew.sole)?;
        let shared = Arc::new(Shared {
            name: process_name(crew.role),
            crew,
            config: config.clone(),
            wake: Wake::default(),
            beat: Wake::default(),
            running: Mutex::default(),
        });
        let workers = (0..config.training_workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("finetune-{i}"))
                    .spawn(move || shared.work())
            })
            .collect::<Result<_, _>>()?;
        let leases = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("leases".into())
                .spawn(move || shared.keep_leases())?
        };
        Ok(Jobs {
            shared,
            workers: Mutex::new(workers),
            leases: Mutex::new(Some(leases)),
        })
    }

    /// A job was queued.
    pub fn wake(&self) {
        self.shared.wake.ring();
    }

    /// Asks a job running in this process to stop at its next step. One running elsewhere stops
    /// at its worker's next heartbeat, which finds the job no longer under its claim.
    pub fn cancel(&self, id: &str) {
        if let Some(claim) = self.shared.running.lock().expect("running lock").get(id) {
            claim.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Pauses a queued or training job (a request's cancel); false if it is neither. Its worker
    /// stops it at its next step here, or at its next heartbeat elsewhere; its saved state stays
    /// for a retry.
    pub fn pause(&self, id: &str) -> store::Result<bool> {
        let from = [JobStatus::Queued, JobStatus::Finetuning];
        let paused = (self.shared.store).transition(
            id,
            &from,
            JobStatus::Paused,
            Some(CANCEL_NOTE),
            Mover::Anyone,
        )?;
        if paused {
            self.cancel(id);
        }
        Ok(paused)
    }

    /// Puts a failed or paused job back in the queue; false if it is neither (any more). It
    /// continues from its last validation, unless `from_scratch`, which drops the saved state
    /// first (a job whose settings or server flags changed cannot resume).
    pub fn retry(&self, id: &str, from_scratch: bool) -> anyhow::Result<bool> {
        let registry = self.shared.catalog.registry();
        let model = model_of(id);
        let note = if from_scratch {
            remove_state(registry, &model)?;
            "retried from scratch".to_string()
        } else {
            format!("retried; {}", resumes_from(registry, &model))
        };
        let from = [JobStatus::Failed, JobStatus::Paused];
        let requeued = self.shared.store.requeue(id, &from, &note, Mover::Anyone)?;
        if requeued {
            self.wake();
        }
        Ok(requeued)
    }

    /// Drops the saved training state of a deleted job. A job still training may save once more
    /// before it stops; its worker drops that when it does.
    pub fn forget(&self, id: &str) -> anyhow::Result<()> {
        remove_state(self.shared.catalog.registry(), &model_of(id))
    }

    /// Asks jobs in training to stop, and waits until they have; each goes back to the queue at
    /// once, to resume from its last validation on the next worker that takes it. Training looks
    /// for cancellation between steps, so this can take as long as an evaluation; the wait is
    /// not optional, since libtorch tears itself down at exit under any thread still using it,
    /// and the leases are renewed until it ends. A supervisor that loses patience and kills the
    /// process loses nothing: the jobs go back to the queue when their leases expire (at once at
    /// the next start, on SQLite).
    pub fn shutdown(&self) {
        self.shared.wake.stop();
        let running: Vec<String> = self
            .shared
            .running
            .lock()
            .expect("running lock")
            .keys()
            .cloned()
            .collect();
        for id in &running {
            self.cancel(id);
        }
        let workers: Vec<_> = self
            .workers
            .lock()
            .expect("workers lock")
            .drain(..)
            .collect();
        if !running.is_empty() {
            tracing::warn!(
                "waiting for {} fine-tune(s) to stop at their next step",
                running.len()
            );
        }
        for worker in workers {
            let _ = worker.join();
        }
        self.shared.beat.stop();
        let leases = self.leases.lock().expect("leases lock").take();
        if let Some(leases) = leases {
            let _ = leases.join();
        }
    }
}

/// Settles what a process that died left unfinished. A deleted model whose files or training
/// state are still there (the process died between deleting the row and the files, or a job
/// deleted while it trained published its model) loses them now. A process that holds the
/// database alone settles every job left running ([`settle`]); with a shared database, jobs
/// wait for their lease to expire.
fn recover(store: &dyn Store, registry: &Registry, sole: bool) -> anyhow::Result<()> {
    for id in store.deleted_models()? {
        let model = model_of(&id);
        match registry.delete(&model) {
            Ok(true) => tracing::warn!(%model, "removed the files of a deleted model"),
            Ok(false) => {}
            Err(e) => tracing::error!(%model, "could not remove the files of a deleted model: {e}"),
        }
        if let Err(e) = remove_state(registry, &model) {
            tracing::error!(%model, "could not remove the training state of a deleted model: {e}");
        }
    }
    if sole {
        for (id, status) in store.running_jobs()? {
            settle(store, registry, &id, status, Mover::Anyone, RESTART_NOTE)?;
        }
    }
    Ok(())
}

/// Settles a job whose worker is gone: back to the queue, to resume from its last validation,
/// with an event that says `why`; or ready, if its model was already published (the registry
/// only ever holds whole models). Returns whether it moved (`by` may find it moved on).
fn settle(
    store: &dyn Store,
    registry: &Registry,
    id: &str,
    status: JobStatus,
    by: Mover,
    why: &str,
) -> anyhow::Result<bool> {
    let model = model_of(id);
    let (moved, to) = match registry.get(&model).ok().flatten() {
        Some((record, _)) => {
            // The process may have died between publishing and storing the metrics; the
            // registry's record has them.
            match FinetuneMetrics::from_record(record) {
                Ok(metrics) => store.set_metrics(id, by, &metrics)?,
                Err(e) => tracing::error!(%id, "{e}"),
            }
            // It may also have died while removing the run's state, after publishing.
            if let Err(e) = remove_state(registry, &model) {
                tracing::error!(%model, "could not remove a published model's training state: {e}");
            }
            let moved = store.transition(id, &[status], JobStatus::Ready, None, by)?;
            (moved, JobStatus::Ready)
        }
        None => {
            let note = format!("{why}; {}", resumes_from(registry, &model));
            (store.requeue(id, &[status], &note, by)?, JobStatus::Queued)
        }
    };
    if moved {
        tracing::warn!(%id, "a job left {} ({why}) is now {}", status.as_str(), to.as_str());
    }
    Ok(moved)
}

/// Where the job training `model` goes on from, by the state it saved, in words.
fn resumes_from(registry: &Registry, model: &str) -> String {
    match saved_step(registry, model) {
        Ok(Some(step)) => format!("resumes from step {step}"),
        Ok(None) => "starts from the beginning: no validation had saved its state yet".into(),
        Err(e) => format!("cannot resume ({e})"),
    }
}

/// Removes the training state the job of `model` saved, if any (in the shared store too).
fn remove_state(registry: &Registry, model: &str) -> anyhow::Result<()> {
    finerank_train::remove_state(registry, model).map_err(anyhow::Error::msg)
}

impl Shared {
    fn work(&self) {
        crate::threads::background(&self.config);
        // Other processes queue jobs too (a replica took the request), and do not ring this bell.
        let poll = (!self.sole).then_some(POLL);
        self.wake.work("job", poll, || {
            let Some((row, owner, cancel)) = self.claim()? else {
                return Ok::<_, StoreError>(false);
            };
            self.run(&row, &owner, &cancel);
            self.running.lock().expect("running lock").remove(&row.id);
            let status = self.store.model(&row.id)?.map(|m| m.status);
            if matches!(status, None | Some(JobStatus::Ready)) {
                // Deleted while it trained, or done: the state it saved goes, in the shared
                // store too (training removed the local one with a published model).
                let model = model_of(&row.id);
                if let Err(e) = remove_state(self.catalog.registry(), &model) {
                    tracing::error!(id = %row.id, "could not remove a job's training state: {e}");
                }
            }
            Ok(true)
        });
    }

    /// Takes the next queued job unless shutting down, under a claim of its own. Claiming and
    /// registering the job as running happen under one lock, so shutdown either sees the job
    /// (and requeues and cancels it) or the worker sees the shutdown and claims nothing.
    #[allow(clippy::type_complexity)]
    fn claim(&self) -> store::Result<Option<(ModelRow, String, Arc<AtomicBool>)>> {
        let mut running = self.running.lock().expect("running lock");
        if self.wake.stopped() {
            return Ok(None);
        }
        let owner = format!("{} claim {}", self.name, uuid::Uuid::new_v4().simple());
        let Some(row) = self.store.claim_job(&owner, self.config.job_lease)? else {
            return Ok(None);
        };
        tracing::info!(id = %row.id, "{owner} took the job");
        let cancel = Arc::new(AtomicBool::new(false));
        let claim = Claim {
            owner: owner.clone(),
            cancel: cancel.clone(),
            renewed: Instant::now(),
        };
        running.insert(row.id.clone(), claim);
        Ok(Some((row, owner, cancel)))
    }

    fn run(&self, row: &ModelRow, owner: &str, cancel: &AtomicBool) {
        let id = &row.id;
        // A panic in training must not leave the job running forever.
        let outcome = catch_unwind(AssertUnwindSafe(|| self.train(row, owner, cancel)))
            .unwrap_or_else(|panic| {
                Err(format!(
                    "internal error: training panicked: {}",
                    panic_message(&*panic)
                ))
            });
        let result = match outcome {
            Ok(metrics) => self.deploy(id, owner, &metrics),
            // Stopped by a shutdown: back to the queue, for the next worker to resume.
            Err(_) if self.wake.stopped() && cancel.load(Ordering::Relaxed) => {
                let resumes = resumes_from(self.catalog.registry(), &model_of(id));
                let note = match self.sole {
                    true => {
                        format!("the server shut down during training; {resumes} at the next start")
                    }
                    false => format!("{} shut down during training; {resumes}", self.name),
                };
                let from = [JobStatus::Finetuning];
                (self.store)
                    .requeue(id, &from, &note, Mover::Holder(owner))
                    .map(drop)
            }
            // A job no longer this worker's (cancelled, deleted, taken over) refuses the write.
            Err(reason) => self.fail(id, owner, JobStatus::Finetuning, &reason),
        };
        if let Err(e) = result {
            tracing::error!(%id, "could not record the end of the job: {e}");
        }
    }

    /// The lease thread: renews the leases of the jobs this process runs, stops those no longer
    /// its own, and settles jobs whose lease expired, until the workers have stopped.
    fn keep_leases(&self) {
        let interval = self.config.job_lease / 3;
        loop {
            self.renew_leases();
            match self.reap() {
                Ok(true) => self.wake.ring(),
                Ok(false) => {}
                Err(e) => tracing::error!("could not sweep the expired leases: {e:#}"),
            }
            if !self.beat.sleep(interval) {
                return;
            }
        }
    }

    fn renew_leases(&self) {
        let claims: Vec<(String, String)> = (self.running.lock().expect("running lock").iter())
            .map(|(id, claim)| (id.clone(), claim.owner.clone()))
            .collect();
        for (id, owner) in claims {
            let renewed = self.store.renew_lease(&id, &owner, self.config.job_lease);
            let mut running = self.running.lock().expect("running lock");
            let Some(claim) = running.get_mut(&id).filter(|c| c.owner == owner) else {
                continue;
            };
            match renewed {
                Ok(true) => claim.renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(%id, "the job is no longer this worker's (cancelled, deleted, or taken over after its lease expired): stopping it");
                    claim.cancel.store(true, Ordering::Relaxed);
                }
                // Past its lease, another worker may have the job: this one stops.
                Err(e) if claim.renewed.elapsed() >= self.config.job_lease => {
                    tracing::error!(%id, "could not renew the job's lease for as long as it lasts ({e}): stopping it");
                    claim.cancel.store(true, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(%id, "could not renew the job's lease: {e}"),
            }
        }
    }

    /// Settles every job whose lease expired; true if one went back to the queue.
    fn reap(&self) -> anyhow::Result<bool> {
        let mut requeued = false;
        for (id, status, owner) in self.store.expired_leases()? {
            let why = format!("{LEASE_NOTE} ({owner})");
            let registry = self.catalog.registry();
            requeued |= settle(
                &*self.store,
                registry,
                &id,
                status,
                Mover::Reaper(&owner),
                &why,
            )?;
        }
        Ok(requeued)
    }

    fn dataset(&self, row: &ModelRow) -> Result<DatasetRow, String> {
        let id = &row.settings.dataset_id;
        self.store
            .dataset(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("dataset {id} no longer exists"))
    }

    fn job(&self, row: &ModelRow, dataset: &DatasetRow) -> Result<FinetuneJob, String> {
        let settings = &row.settings;
        let base = self.base(row)?;
        let (train, valid) = self
            .uploads
            .fetch(&dataset.id)
            .and_then(|()| self.uploads.training_files(dataset))
            .map_err(|e| e.to_string())?;
        let cfg = &self.config;
        let model = model_of(&row.id);
        let resume = resume_dir(self.catalog.registry(), &model).map_err(|e| e.to_string())?;
        // Validation held what was uploaded to the minimums; mined files may hold fewer
        // training queries, a share of them held out for evaluation.
        let minimum = |min| Some(if dataset.mining.is_some() { 1 } else { min });
        Ok(FinetuneJob {
            id: Some(model),
            base: self.catalog.reference(&base).to_string(),
            kind: None,
            name: Some(row.name.clone()),
            train,
            valid,
            hyper: settings
                .hyperparameters
                .as_ref()
                .map(Hyperparameters::overrides)
                .transpose()?
                .unwrap_or_default(),
            seed: settings
                .hyperparameters
                .as_ref()
                .and_then(|h| h.seed)
                .unwrap_or(0),
            max_len: cfg.train_max_length,
            eval_every: None,
            max_steps: cfg.max_train_steps,
            device: cfg.device,
            precision: cfg.precision.for_serving_trainer(),
            base_dtype: Default::default(),
            min_train_queries: minimum(cfg.min_train_queries),
            min_valid_queries: minimum(cfg.min_eval_queries),
            resume_dir: Some(resume),
            instruction: None,
            export: settings
                .hyperparameters
                .as_ref()
                .and_then(|h| h.export)
                .unwrap_or_default(),
        })
    }

    /// The canonical name of the model a job starts from.
    fn base(&self, row: &ModelRow) -> Result<String, String> {
        let name = row.settings.base_model.name.as_deref();
        self.catalog
            .canonical(name.unwrap_or_default())
            .map_err(|e| e.0)
    }

    /// Trains and publishes; the error is the job's failure reason.
    fn train(
        &self,
        row: &ModelRow,
        owner: &str,
        cancel: &AtomicBool,
    ) -> Result<FinetuneMetrics, String> {
        let dataset = self.dataset(row)?;
        let job = self.job(row, &dataset)?;
        let registry = self.catalog.registry();
        // Another worker, on another machine, may have saved a later state than this one has.
        if let Err(e) = fetch_state(registry, &model_of(&row.id)) {
            tracing::warn!(id = %row.id, "could not fetch the shared training state; resuming from the local one: {e}");
        }
        let mut recorder = Recorder {
            store: &*self.store,
            registry,
            id: &row.id,
            owner,
            losses: Vec::new(),
        };
        let cancelled = || cancel.load(Ordering::Relaxed);
        let (record, _) = run_job(
            &job,
            self.catalog.registry(),
            &mut |e| recorder.on_event(e),
            &cancelled,
        )
        .map_err(|e| match e {
            JobError::ResumeMismatch { fields, .. } => format!(
                "its saved training state is of a different run ({} differ), so it cannot \
                 resume: restart the server with the training flags the job began under, or \
                 retry it with from_scratch=true",
                fields.join(", ")
            ),
            e => e.to_string(),
        })?;
        let mut metrics = FinetuneMetrics::from_record(record)?;
        if let Some(corpus) = &dataset.parts.corpus {
            let evaluated = self.evaluate_retrieval(row, &dataset, &corpus.filename, &cancelled);
            match evaluated {
                Ok(report) => metrics.retrieval = Some(report),
                Err(e) => {
                    // The job fails, so its model must not stay behind to be served.
                    let _ = self.discard(&model_of(&row.id));
                    return Err(format!("trained, but the retrieval evaluation failed: {e}"));
                }
            }
        }
        Ok(metrics)
    }

    /// The base model and the fine-tuned one, re-ranking BM25's candidates for the dataset's
    /// evaluation queries.
    fn evaluate_retrieval(
        &self,
        row: &ModelRow,
        dataset: &DatasetRow,
        corpus_name: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<RetrievalReport, String> {
        let collection = Collection::read(&self.uploads, dataset).map_err(|e| e.to_string())?;
        let cfg = &self.config;
        // Each model as it is served.
        let load = |name: &str| {
            let dir = self.catalog.dir(name).map_err(|e| e.0)?;
            let opts = LoadOptions {
                device: cfg.device,
                precision: self.catalog.precision(name),
                ..LoadOptions::default()
            };
            Reranker::load(name, &dir, &opts).map_err(|e| e.to_string())
        };
        let base = load(&self.base(row)?)?;
        let tuned = load(&model_of(&row.id))?;
        crate::retrieval::evaluate(
            corpus_name,
            &collection,
            [&base, &tuned],
            cfg.train_max_length,
            &cache_dir(&cfg.data_dir()),
            cancelled,
        )
    }

    /// The model is in the registry: load it for reranking, then open it to requests. If the job
    /// was deleted while it trained, the model goes too.
    fn deploy(&self, id: &str, owner: &str, metrics: &FinetuneMetrics) -> store::Result<()> {
        let model = model_of(id);
        let by = Mover::Holder(owner);
        self.store.set_metrics(id, by, metrics)?;
        let (training, deploying) = ([JobStatus::Finetuning], [JobStatus::DeployingApi]);
        if !(self.store).transition(id, &training, JobStatus::DeployingApi, None, by)? {
            return self.abandon(id, &model);
        }
        if let Some(batcher) = &self.batcher {
            if let Err(e) = batcher.warm_blocking(&model) {
                let reason = format!("trained, but the model would not load: {}", e.message);
                self.fail(id, owner, JobStatus::DeployingApi, &reason)?;
                return self.discard(&model);
            }
        }
        if !(self.store).transition(id, &deploying, JobStatus::Ready, None, by)? {
            return self.abandon(id, &model);
        }
        Ok(())
    }

    /// Records a failure, unless the job has moved on (deleted, cancelled, or no longer under
    /// this worker's claim).
    fn fail(&self, id: &str, owner: &str, from: JobStatus, reason: &str) -> store::Result<()> {
        let by = Mover::Holder(owner);
        if (self.store).transition(id, &[from], JobStatus::Failed, Some(reason), by)? {
            tracing::warn!(%id, "fine-tuning failed: {reason}");
        }
        Ok(())
    }

    /// The job left this worker's hands while its model was published. Deleted or cancelled,
    /// its model goes; running again under another worker's claim, the model is left for that
    /// worker, which finds it published.
    fn abandon(&self, id: &str, model: &str) -> store::Result<()> {
        match self.store.model(id)?.map(|row| row.status) {
            Some(JobStatus::Queued | JobStatus::Finetuning | JobStatus::DeployingApi) => Ok(()),
            _ => self.discard(model),
        }
    }

    fn discard(&self, model: &str) -> store::Result<()> {
        if let Some(batcher) = &self.batcher {
            batcher.evict(model);
        }
        if let Err(e) = self.catalog.registry().delete(model) {
            tracing::error!(%model, "could not remove the model of a deleted job: {e}");
        }
        Ok(())
    }
}

/// Writes a run's progress, each step's loss and the evaluations to the store as they come.
struct Recorder<'a> {
    store: &'a dyn Store,
    /// Where the run's saved state is shared from, for workers on other machines.
    registry: &'a Registry,
    id: &'a str,
    /// The claim the worker runs the job under.
    owner: &'a str,
    /// Training losses since the last evaluation, reported beside it.
    losses: Vec<f64>,
}

impl Recorder<'_> {
    fn on_event(&mut self, event: &TrainEvent) {
        let written = match event {
            TrainEvent::Started {
                total_steps,
                resumed_at,
                ..
            } => {
                let progress = Progress {
                    step: resumed_at.unwrap_or(0),
                    total_steps: *total_steps,
                    epoch: 0,
                    loss: None,
                };
                let note = resumed_at.map(|step| format!("resumed from step {step}"));
                self.store
                    .set_progress(self.id, self.owner, &progress)
                    .and_then(|()| {
                        (self.store).training_started(self.id, self.owner, note.as_deref())
                    })
            }
            TrainEvent::Step {
                step,
                total_steps,
                epoch,
                loss,
                ..
            } => {
                self.losses.push(*loss);
                let progress = Progress {
                    step: *step,
                    total_steps: *total_steps,
                    epoch: *epoch,
                    loss: Some(*loss),
                };
                self.store
                    .set_progress(self.id, self.owner, &progress)
                    .and_then(|()| self.store.add_step_loss(self.id, self.owner, *step, *loss))
            }
            TrainEvent::Eval { step, metrics, .. } => {
                let mut values = BTreeMap::from([
                    ("accuracy_at_1".to_string(), metrics.accuracy_at_1),
                    ("accuracy_at_3".to_string(), metrics.accuracy_at_3),
                    ("mrr_at_10".to_string(), metrics.mrr_at_10),
                    ("ndcg_at_10".to_string(), metrics.ndcg_at_10),
                ]);
                if !self.losses.is_empty() {
                    let mean = self.losses.iter().sum::<f64>() / self.losses.len() as f64;
                    values.insert("train_loss".to_string(), mean);
                    self.losses.clear();
                }
                (self.store).add_step_metrics(self.id, self.owner, *step, &values)
            }
            TrainEvent::Saved { step } => {
                if let Err(e) = share_state(self.registry, &model_of(self.id)) {
                    tracing::error!(id = %self.id, "could not share the training state of step {step}: {e}");
                }
                Ok(())
            }
            TrainEvent::EarlyStop { .. } | TrainEvent::NoImprovement { .. } => Ok(()),
        };
        // Losing a progress row is not worth stopping the training for.
        if let Err(e) = written {
            tracing::error!(id = %self.id, "could not record training progress: {e}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use finerank_engine::Kind;

    use super::*;
    use crate::store::{Database, Order};

    const LEASE: Duration = Duration::from_secs(30);

    fn store(dir: &std::path::Path) -> Arc<dyn Store> {
        store::open(&Database::Sqlite(dir.join("finerank.db"))).unwrap()
    }

    /// Queues job `id` with default settings.
    pub(crate) fn queue(store: &dyn Store, id: &str) {
        let settings = Settings {
            base_model: BaseModel {
                base_type: "BASE_TYPE_RERANK".into(),
                name: None,
            },
            dataset_id: "dataset".into(),
            hyperparameters: None,
        };
        store.insert_model(id, "model", &settings).unwrap();
    }

    /// Moves a queued job straight to `STATUS_READY`, as if it had trained.
    pub(crate) fn make_ready(store: &dyn Store, id: &str) {
        store
            .transition(
                id,
                &[JobStatus::Queued],
                JobStatus::Ready,
                None,
                Mover::Anyone,
            )
            .unwrap();
    }

    fn statuses(store: &dyn Store, id: &str) -> Vec<JobStatus> {
        let events = store.events(id, Order::Oldest, 0, 10).unwrap();
        events.items.into_iter().map(|e| e.status).collect()
    }

    /// Between the claim and the first step, the data is read and the base model loaded: the
    /// event says when training began, not when a worker took the job.
    #[test]
    fn finetuning_is_stamped_when_training_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        queue(&*store, "job");
        let claimed = store.claim_job("w", LEASE).unwrap().unwrap();
        assert_eq!(claimed.status, JobStatus::Finetuning);
        assert_eq!(statuses(&*store, "job"), [JobStatus::Queued]);
        let registry = Registry::open(dir.path()).unwrap();
        let mut recorder = Recorder {
            store: &*store,
            registry: &registry,
            id: "job",
            owner: "w",
            losses: Vec::new(),
        };
        recorder.on_event(&TrainEvent::Started {
            kind: Kind::CrossEncoder,
            total_steps: 2,
            epochs: 1,
            train_rows: 8,
            valid_rows: 4,
            device: "cpu".into(),
            resumed_at: None,
        });
        assert_eq!(
            statuses(&*store, "job"),
            [JobStatus::Queued, JobStatus::Finetuning]
        );
    }

    /// The process dies after publishing a model and before removing the run's saved state: the
    /// next start makes the job ready and removes the state, which would otherwise stay forever.
    #[test]
    fn a_published_runs_leftover_state_goes_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (store, registry, id) = published_job(dir.path());
        let model = model_of(&id);
        store.claim_job("w", LEASE).unwrap().unwrap();
        let state = resume_dir(&registry, &model).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("weights-4.safetensors"), b"partly removed").unwrap();

        recover(&*store, &registry, true).unwrap();
        assert_eq!(statuses(&*store, &id).last(), Some(&JobStatus::Ready));
        assert!(
            !state.exists(),
            "the run's state outlived its published model"
        );
    }

    /// A store and a registry in `dir`, with a queued job whose model is already published (an
    /// empty one: recovery looks only at the record). Returns the job's id.
    fn published_job(dir: &std::path::Path) -> (Arc<dyn Store>, Registry, String) {
        let store = store(dir);
        let registry = Registry::open(dir).unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        let model = model_of(&id);
        queue(&*store, &id);
        std::fs::create_dir_all(registry.staging_dir(&model).unwrap().join("model")).unwrap();
        publish_staged(&registry, &model);
        (store, registry, id)
    }

    /// Publishes what is staged for `model` as a cross-encoder, under a record of placeholders.
    pub(crate) fn publish_staged(registry: &Registry, model: &str) {
        let record = ModelRecord {
            id: model.to_string(),
            name: "model".into(),
            kind: Kind::CrossEncoder,
            base_model: "base".into(),
            base_model_dir: "base".into(),
            created_at: finerank_engine::now_rfc3339(),
            hyperparameters: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
            train_sha256: String::new(),
            valid_sha256: None,
        };
        registry.publish(&record).unwrap();
    }

    /// The process dies after a model's row was deleted and before its files were: the next
    /// start removes them, so the model is neither listed nor served.
    #[test]
    fn a_delete_cut_short_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (store, registry, id) = published_job(dir.path());
        let model = model_of(&id);
        make_ready(&*store, &id);

        assert_eq!(store.delete_model(&id).unwrap(), Some(JobStatus::Ready));
        // The crash comes here.
        assert!(registry.get(&model).unwrap().is_some());
        recover(&*store, &registry, true).unwrap();
        assert!(registry.get(&model).unwrap().is_none());
        assert!(registry.list().unwrap().is_empty());
    }
}
