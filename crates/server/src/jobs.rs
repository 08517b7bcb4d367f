//! Fine-tuning jobs: what one is (Cohere's settings), and the background workers that run them.
//!
//! A job is a row of `finetuned_models`. Workers take queued rows oldest first, train with
//! `finerank_train::run_job` (which reviews the data, trains, and publishes `<id>-ft` into the
//! registry in one rename), store events and step metrics as training goes, load the new model
//! into the rerank worker and mark it ready:
//! `STATUS_QUEUED -> STATUS_FINETUNING -> STATUS_DEPLOYING_API -> STATUS_READY`, or `STATUS_FAILED`
//! with a reason. Training cannot resume from a checkpoint, so a job that a crash interrupted is
//! marked failed at the next start (or ready, if its model had already been published).
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use finerank_engine::{ModelRecord, Registry};
use finerank_train::{run_job, FinetuneJob, HyperOverrides, Outcome, TrainEvent, ValidMetrics};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::batcher::Batcher;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::store::{ModelRow, Store};
use crate::uploads::Uploads;
use crate::wake::Wake;

pub const RESTART_REASON: &str = "interrupted by a server restart; resubmit";
const SHUTDOWN_REASON: &str = "the server shut down during training; resubmit";

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
}

impl JobStatus {
    const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Finetuning,
        JobStatus::DeployingApi,
        JobStatus::Ready,
        JobStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "STATUS_QUEUED",
            JobStatus::Finetuning => "STATUS_FINETUNING",
            JobStatus::DeployingApi => "STATUS_DEPLOYING_API",
            JobStatus::Ready => "STATUS_READY",
            JobStatus::Failed => "STATUS_FAILED",
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
/// The LoRA fields exist in Cohere's schema for chat models and are refused here.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_target_modules: Option<String>,
}

impl From<&Hyperparameters> for HyperOverrides {
    fn from(h: &Hyperparameters) -> HyperOverrides {
        HyperOverrides {
            train_epochs: h.train_epochs,
            learning_rate: h.learning_rate,
            train_batch_size: h.train_batch_size,
            early_stopping_patience: h.early_stopping_patience,
            early_stopping_threshold: h.early_stopping_threshold,
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
        })
    }
}

/// Handle on the training workers.
pub struct Jobs {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    batcher: Batcher,
    uploads: Arc<Uploads>,
    config: Config,
    wake: Wake,
    /// Cancellation flags of running jobs, polled by the training loop between steps.
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Jobs {
    /// Settles jobs a previous process left running, then starts the workers.
    pub fn start(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        batcher: Batcher,
        uploads: Arc<Uploads>,
        config: &Config,
    ) -> anyhow::Result<Jobs> {
        recover(&store, catalog.registry())?;
        let shared = Arc::new(Shared {
            store,
            catalog,
            batcher,
            uploads,
            config: config.clone(),
            wake: Wake::default(),
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
        Ok(Jobs {
            shared,
            workers: Mutex::new(workers),
        })
    }

    /// A job was queued.
    pub fn wake(&self) {
        self.shared.wake.ring();
    }

    /// Asks a running job to stop at its next step.
    pub fn cancel(&self, id: &str) {
        if let Some(flag) = self.shared.running.lock().expect("running lock").get(id) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Fails jobs in training with a reason that says why, asks them to stop, and waits until
    /// they have. Training looks for cancellation between steps, so this can take as long as an
    /// evaluation; the wait is not optional, since libtorch tears itself down at exit under any
    /// thread still using it. A supervisor that loses patience and kills the process loses
    /// nothing: the jobs are already failed in the database.
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
            // A job already deploying has its model and finishes in a moment; let it.
            let from = [JobStatus::Finetuning];
            if let Err(e) =
                self.shared
                    .store
                    .transition(id, &from, JobStatus::Failed, Some(SHUTDOWN_REASON))
            {
                tracing::error!(%id, "could not mark the job failed at shutdown: {e}");
            }
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
    }
}

/// A job left running by a process that died cannot resume: it fails with the reason, unless its
/// model was already published (the registry only ever holds whole models), which makes it ready.
fn recover(store: &Store, registry: &Registry) -> anyhow::Result<()> {
    for (id, status) in store.running_jobs()? {
        let (to, reason) = match registry.get(&format!("{id}-ft")).ok().flatten() {
            Some((record, _)) => {
                // The process may have died between publishing and storing the metrics; the
                // registry's record has them.
                match FinetuneMetrics::from_record(record) {
                    Ok(metrics) => store.set_metrics(&id, &metrics)?,
                    Err(e) => tracing::error!(%id, "{e}"),
                }
                (JobStatus::Ready, None)
            }
            None => (JobStatus::Failed, Some(RESTART_REASON)),
        };
        store.transition(&id, &[status], to, reason)?;
        tracing::warn!(%id, "a job left {} by the last run is now {}", status.as_str(), to.as_str());
    }
    Ok(())
}

impl Shared {
    fn work(&self) {
        self.wake.work("job", || {
            let Some((row, cancel)) = self.claim()? else {
                return Ok::<_, rusqlite::Error>(false);
            };
            self.run(&row, &cancel);
            self.running.lock().expect("running lock").remove(&row.id);
            Ok(true)
        });
    }

    /// Takes the next queued job unless shutting down. Claiming and registering the job as
    /// running happen under one lock, so shutdown either sees the job (and fails and cancels it)
    /// or the worker sees the shutdown and claims nothing.
    fn claim(&self) -> rusqlite::Result<Option<(ModelRow, Arc<AtomicBool>)>> {
        let mut running = self.running.lock().expect("running lock");
        if self.wake.stopped() {
            return Ok(None);
        }
        let Some(row) = self.store.claim_job()? else {
            return Ok(None);
        };
        let cancel = Arc::new(AtomicBool::new(false));
        running.insert(row.id.clone(), cancel.clone());
        Ok(Some((row, cancel)))
    }

    fn run(&self, row: &ModelRow, cancel: &AtomicBool) {
        let id = &row.id;
        // A panic in training must not leave the job running forever.
        let outcome =
            catch_unwind(AssertUnwindSafe(|| self.train(row, cancel))).unwrap_or_else(|panic| {
                Err(format!(
                    "internal error: training panicked: {}",
                    panic_message(&panic)
                ))
            });
        let result = match outcome {
            Ok(metrics) => self.deploy(id, &metrics),
            Err(reason) => self.fail(id, JobStatus::Finetuning, &reason),
        };
        if let Err(e) = result {
            tracing::error!(%id, "could not record the end of the job: {e}");
        }
    }

    fn job(&self, row: &ModelRow) -> Result<FinetuneJob, String> {
        let settings = &row.settings;
        let base = self
            .catalog
            .canonical(settings.base_model.name.as_deref().unwrap_or_default())
            .map_err(|e| e.0)?;
        let dataset = self
            .store
            .dataset(&settings.dataset_id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("dataset {} no longer exists", settings.dataset_id))?;
        let train = self
            .uploads
            .train_path(&dataset.id)
            .map_err(|e| e.to_string())?;
        let valid = match dataset.eval {
            Some(_) => Some(
                self.uploads
                    .eval_path(&dataset.id)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let cfg = &self.config;
        Ok(FinetuneJob {
            id: Some(format!("{}-ft", row.id)),
            base: self.catalog.reference(&base).to_string(),
            kind: None,
            name: Some(row.name.clone()),
            train,
            valid,
            hyper: settings
                .hyperparameters
                .as_ref()
                .map(HyperOverrides::from)
                .unwrap_or_default(),
            seed: 0,
            max_len: cfg.train_max_length,
            eval_every: None,
            max_steps: cfg.max_train_steps,
            device: cfg.device,
            precision: cfg.precision,
            min_train_queries: Some(cfg.min_train_queries),
            min_valid_queries: Some(cfg.min_eval_queries),
        })
    }

    /// Trains and publishes; the error is the job's failure reason.
    fn train(&self, row: &ModelRow, cancel: &AtomicBool) -> Result<FinetuneMetrics, String> {
        let job = self.job(row)?;
        let mut recorder = Recorder {
            store: &self.store,
            id: &row.id,
            losses: Vec::new(),
        };
        let (record, _) = run_job(
            &job,
            self.catalog.registry(),
            &mut |e| recorder.on_event(e),
            &|| cancel.load(Ordering::Relaxed),
        )
        .map_err(|e| e.to_string())?;
        FinetuneMetrics::from_record(record)
    }

    /// The model is in the registry: load it for reranking, then open it to requests. If the job
    /// was deleted while it trained, the model goes too.
    fn deploy(&self, id: &str, metrics: &FinetuneMetrics) -> rusqlite::Result<()> {
        let model = format!("{id}-ft");
        self.store.set_metrics(id, metrics)?;
        if !self
            .store
            .transition(id, &[JobStatus::Finetuning], JobStatus::DeployingApi, None)?
        {
            return self.discard(&model);
        }
        if let Err(e) = self.batcher.warm_blocking(&model) {
            let reason = format!("trained, but the model would not load: {}", e.message);
            self.fail(id, JobStatus::DeployingApi, &reason)?;
            return self.discard(&model);
        }
        if !self
            .store
            .transition(id, &[JobStatus::DeployingApi], JobStatus::Ready, None)?
        {
            return self.discard(&model);
        }
        Ok(())
    }

    /// Records a failure, unless the job has moved on (deleted, or failed by a shutdown).
    fn fail(&self, id: &str, from: JobStatus, reason: &str) -> rusqlite::Result<()> {
        if self
            .store
            .transition(id, &[from], JobStatus::Failed, Some(reason))?
        {
            tracing::warn!(%id, "fine-tuning failed: {reason}");
        }
        Ok(())
    }

    fn discard(&self, model: &str) -> rusqlite::Result<()> {
        self.batcher.evict(model);
        if let Err(e) = self.catalog.registry().delete(model) {
            tracing::error!(%model, "could not remove the model of a deleted job: {e}");
        }
        Ok(())
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Writes a run's progress, each step's loss and the evaluations to the store as they come.
struct Recorder<'a> {
    store: &'a Store,
    id: &'a str,
    /// Training losses since the last evaluation, reported beside it.
    losses: Vec<f64>,
}

impl Recorder<'_> {
    fn on_event(&mut self, event: &TrainEvent) {
        let written = match event {
            TrainEvent::Started { total_steps, .. } => {
                let progress = Progress {
                    step: 0,
                    total_steps: *total_steps,
                    epoch: 0,
                    loss: None,
                };
                self.store.set_progress(self.id, &progress)
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
                    .set_progress(self.id, &progress)
                    .and_then(|()| self.store.add_step_loss(self.id, *step, *loss))
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
                self.store.add_step_metrics(self.id, *step, &values)
            }
            TrainEvent::EarlyStop { .. } | TrainEvent::NoImprovement { .. } => Ok(()),
        };
        // Losing a progress row is not worth stopping the training for.
        if let Err(e) = written {
            tracing::error!(id = %self.id, "could not record training progress: {e}");
        }
    }
}
