//! Dataset validation in the background: the engine's "review data" step (Cohere's rules, fixes,
//! length statistics) run on each uploaded dataset, oldest first, with the result stored on the
//! dataset as Cohere reports it (`validation_status`, `validation_error`, `validation_warnings`,
//! `metrics`) plus the full review.
//!
//! Lengths are counted with the default model's tokenizer at the length training will use. The
//! worker loads its own copy of the default model on first use: models are not `Sync`, and the
//! rerank worker's copy must not wait for a large file's review.
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use finerank_data::{validate, FileStats, Problem, Review, TrainRow, ValidateOptions};
use finerank_engine::{DeviceChoice, LoadOptions, Reranker};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::store::{DatasetRow, Store, Validation};
use crate::uploads::Uploads;
use crate::wake::Wake;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidationStatus {
    Queued,
    Processing,
    Validated,
    Failed,
}

impl ValidationStatus {
    const ALL: [ValidationStatus; 4] = [
        ValidationStatus::Queued,
        ValidationStatus::Processing,
        ValidationStatus::Validated,
        ValidationStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ValidationStatus::Queued => "queued",
            ValidationStatus::Processing => "processing",
            ValidationStatus::Validated => "validated",
            ValidationStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ValidationStatus> {
        ValidationStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Cohere's `metrics` of a dataset.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetMetrics {
    pub finetune_dataset_metrics: FinetuneDatasetMetrics,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FinetuneDatasetMetrics {
    pub total_examples: usize,
    pub train_examples: usize,
    pub train_size_bytes: u64,
    pub eval_examples: usize,
    pub eval_size_bytes: u64,
    pub reranker_data_metrics: RerankerDataMetrics,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RerankerDataMetrics {
    pub num_train_queries: usize,
    pub num_train_relevant_passages: usize,
    pub num_train_hard_negatives: usize,
    pub num_eval_queries: usize,
    pub num_eval_relevant_passages: usize,
    pub num_eval_hard_negatives: usize,
}

pub struct Validator {
    wake: Arc<Wake>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

struct Worker {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    uploads: Arc<Uploads>,
    config: Config,
    wake: Arc<Wake>,
    /// Loaded on the first dataset, kept for the next.
    reranker: Option<Reranker>,
}

impl Validator {
    /// Requeues validations a previous process left half done, then starts the worker.
    pub fn start(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        uploads: Arc<Uploads>,
        config: &Config,
    ) -> anyhow::Result<Validator> {
        store.requeue_validations()?;
        let wake = Arc::new(Wake::default());
        let mut worker = Worker {
            store,
            catalog,
            uploads,
            config: config.clone(),
            wake: wake.clone(),
            reranker: None,
        };
        let handle = std::thread::Builder::new()
            .name("validate".into())
            .spawn(move || worker.work())?;
        Ok(Validator {
            wake,
            worker: Mutex::new(Some(handle)),
        })
    }

    /// A dataset was uploaded.
    pub fn wake(&self) {
        self.wake.ring();
    }

    /// Stops the worker after the validation in hand (its model must not be in use when
    /// libtorch tears itself down at exit).
    pub fn shutdown(&self) {
        self.wake.stop();
        if let Some(worker) = self.worker.lock().expect("worker lock").take() {
            let _ = worker.join();
        }
    }
}

impl Worker {
    fn work(&mut self) {
        let wake = self.wake.clone();
        wake.work("dataset", || {
            let Some(dataset) = self.store.claim_dataset()? else {
                return Ok::<_, rusqlite::Error>(false);
            };
            let result = self.validate(&dataset);
            if let Err(e) = self.store.finish_validation(&dataset.id, &result) {
                tracing::error!(id = %dataset.id, "could not record the validation: {e}");
            }
            Ok(true)
        });
    }

    fn reranker(&mut self) -> Result<&Reranker, String> {
        if self.reranker.is_none() {
            let name = self.catalog.default_name();
            let dir = self.catalog.dir(name).map_err(|e| e.0)?;
            // Only the tokenizer is used: the CPU is enough whatever --device says.
            let opts = LoadOptions {
                device: DeviceChoice::Cpu,
                ..LoadOptions::default()
            };
            let reranker = Reranker::load(name, &dir, &opts).map_err(|e| e.to_string())?;
            self.reranker = Some(reranker);
        }
        Ok(self.reranker.as_ref().expect("loaded above"))
    }

    fn validate(&mut self, dataset: &DatasetRow) -> Validation {
        let paths = self.uploads.train_path(&dataset.id).and_then(|train| {
            let eval = dataset
                .eval
                .as_ref()
                .map(|_| self.uploads.eval_path(&dataset.id))
                .transpose()?;
            Ok((train, eval))
        });
        let (train, eval) = match paths {
            Ok(paths) => paths,
            Err(e) => return failed(format!("internal error: {e}")),
        };
        let (min_train_queries, min_valid_queries, max_len) = (
            self.config.min_train_queries,
            self.config.min_eval_queries,
            self.config.train_max_length,
        );
        let reranker = match self.reranker() {
            Ok(r) => r,
            Err(e) => {
                return failed(format!(
                    "internal error: the model for length statistics would not load: {e}"
                ))
            }
        };
        let opts = ValidateOptions {
            min_train_queries,
            min_valid_queries,
            // The length training will read, so truncation warnings match the run.
            max_len: max_len
                .unwrap_or(finerank_train::DEFAULT_MAX_LEN)
                .min(reranker.model().max_positions()),
        };
        let mut review = validate(&train, eval.as_deref(), &opts, &reranker.pair_counter());
        let names = Names {
            train: &train,
            eval: eval.as_deref(),
            dataset,
        };
        names.rename(&mut review);
        summarize(&review, opts.max_len, dataset)
    }
}

fn failed(error: String) -> Validation {
    Validation {
        ok: false,
        error: Some(error),
        warnings: Vec::new(),
        review: serde_json::Value::Null,
        metrics: None,
    }
}

/// Problems name files by the names the client uploaded, not by server paths.
struct Names<'a> {
    train: &'a Path,
    eval: Option<&'a Path>,
    dataset: &'a DatasetRow,
}

impl Names<'_> {
    fn shown(&self, file: &str) -> String {
        let is = |p: &Path| p.display().to_string() == file;
        match (&self.dataset.eval, self.eval) {
            (Some(part), Some(eval)) if is(eval) => part.filename.clone(),
            _ if is(self.train) => self.dataset.data.filename.clone(),
            _ => file.to_string(),
        }
    }

    fn rename(&self, review: &mut Review) {
        for p in review.errors.iter_mut().chain(review.warnings.iter_mut()) {
            p.file = self.shown(&p.file);
        }
        for stats in [&mut review.train, &mut review.valid].into_iter().flatten() {
            stats.file = self.shown(&stats.file);
        }
    }
}

fn lines(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(Problem::to_string).collect()
}

/// Passages of each kind over a file's rows.
fn passages(rows: &[TrainRow]) -> (usize, usize) {
    rows.iter().fold((0, 0), |(rel, neg), r| {
        (
            rel + r.relevant_passages.len(),
            neg + r.hard_negatives.len(),
        )
    })
}

fn queries(stats: &Option<FileStats>) -> usize {
    stats.as_ref().map_or(0, |s| s.unique_queries)
}

/// The review as stored and served: the data crate's, plus the window its lengths were measured
/// against, which a histogram needs to show what will be cut.
#[derive(Serialize)]
struct StoredReview<'a> {
    #[serde(flatten)]
    review: &'a Review,
    max_len: usize,
}

fn summarize(review: &Review, max_len: usize, dataset: &DatasetRow) -> Validation {
    let (train_relevant, train_negatives) = passages(&review.train_rows);
    let (eval_relevant, eval_negatives) = passages(&review.valid_rows);
    let metrics = DatasetMetrics {
        finetune_dataset_metrics: FinetuneDatasetMetrics {
            total_examples: review.train_rows.len() + review.valid_rows.len(),
            train_examples: review.train_rows.len(),
            train_size_bytes: dataset.data.size_bytes,
            eval_examples: review.valid_rows.len(),
            eval_size_bytes: dataset.eval.as_ref().map_or(0, |e| e.size_bytes),
            reranker_data_metrics: RerankerDataMetrics {
                num_train_queries: queries(&review.train),
                num_train_relevant_passages: train_relevant,
                num_train_hard_negatives: train_negatives,
                num_eval_queries: queries(&review.valid),
                num_eval_relevant_passages: eval_relevant,
                num_eval_hard_negatives: eval_negatives,
            },
        },
    };
    Validation {
        ok: review.ok,
        error: (!review.ok).then(|| lines(&review.errors).join("\n")),
        warnings: lines(&review.warnings),
        review: serde_json::to_value(StoredReview { review, max_len }).expect("reviews serialize"),
        metrics: Some(metrics),
    }
}
