//! Dataset validation in the background: the engine's "review data" step (Cohere's rules, fixes,
//! length statistics) run on each uploaded dataset, oldest first, with the result stored on the
//! dataset as Cohere reports it (`validation_status`, `validation_error`, `validation_warnings`,
//! `metrics`) plus the full review.
//!
//! A dataset with a corpus has its collection read too, so that a bad corpus or qrels line fails
//! here, named by the file the client uploaded. When the upload asked for mining, negatives are
//! mined for its training and evaluation queries and the review is of the mined rows, which
//! training then reads, with the mining report beside it.
//!
//! Lengths are counted with the default model's tokenizer at the length training will use, and
//! mining scores with the same model. The worker loads its own copy of the default model on first
//! use, on the CPU: models are not `Sync`, and the rerank worker's copy must not wait for a large
//! file's review.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use finerank_data::{
    too_few_queries, validate, DataError, FileStats, Problem, Review, TrainRow, ValidateOptions,
};
use finerank_engine::{DeviceChoice, LoadOptions, Reranker};
use finerank_retrieve::{model_fingerprint, MineReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::collection::{cache_dir, Collection};
use crate::config::Config;
use crate::mining::mine_files;
use crate::parts::{FilePart, Part};
use crate::store::{DatasetRow, Store, StoreError, Validation};
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
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    uploads: Arc<Uploads>,
    config: Config,
    wake: Arc<Wake>,
    /// Loaded on the first dataset, kept for the next.
    reranker: Option<Reranker>,
    /// The model's fingerprint, which keys the embedding cache, once a dataset is mined.
    fingerprint: Option<String>,
}

impl Validator {
    /// Requeues validations a previous process left half done, then starts the worker.
    pub fn start(
        store: Arc<dyn Store>,
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
            fingerprint: None,
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
        crate::threads::background(&self.config);
        let wake = self.wake.clone();
        wake.work("dataset", None, || {
            let Some(dataset) = self.store.claim_dataset()? else {
                return Ok::<_, StoreError>(false);
            };
            let result = self.validate(&dataset);
            if let Err(e) = self.store.finish_validation(&dataset.id, &result) {
                tracing::error!(id = %dataset.id, "could not record the validation: {e}");
            }
            Ok(true)
        });
    }

    fn load(&mut self) -> Result<(), String> {
        if self.reranker.is_none() {
            let name = self.catalog.default_name();
            let dir = self.catalog.dir(name).map_err(|e| e.0)?;
            // Counting tokens, and mining the few datasets that ask for it: the CPU is enough
            // whatever --device says.
            let opts = LoadOptions {
                device: DeviceChoice::Cpu,
                ..LoadOptions::default()
            };
            let reranker = Reranker::load(name, &dir, &opts).map_err(|e| e.to_string())?;
            self.reranker = Some(reranker);
        }
        Ok(())
    }

    fn fingerprint(&mut self) -> Result<String, String> {
        if self.fingerprint.is_none() {
            let dir = self
                .catalog
                .dir(self.catalog.default_name())
                .map_err(|e| e.0)?;
            self.fingerprint = Some(model_fingerprint(&dir).map_err(|e| e.to_string())?);
        }
        Ok(self.fingerprint.clone().expect("computed above"))
    }

    fn validate(&mut self, dataset: &DatasetRow) -> Validation {
        if let Err(e) = self.load() {
            return failed(format!(
                "internal error: the model for length statistics would not load: {e}"
            ));
        }
        let fingerprint = match dataset.mining {
            Some(_) => match self.fingerprint() {
                Ok(key) => Some(key),
                Err(e) => return failed(format!("internal error: {e}")),
            },
            None => None,
        };
        let reranker = self.reranker.as_ref().expect("loaded above");
        let max_len = self
            .config
            .train_max_length
            .unwrap_or(finerank_train::DEFAULT_MAX_LEN)
            .min(reranker.model().max_positions());
        let names = match Names::new(&self.uploads, dataset) {
            Ok(names) => names,
            Err(e) => return failed(format!("internal error: {e}")),
        };
        let check = Check {
            dataset,
            uploads: &self.uploads,
            reranker,
            names,
            opts: ValidateOptions {
                min_train_queries: self.config.min_train_queries,
                min_valid_queries: self.config.min_eval_queries,
                // The length training will read, so truncation warnings match the run.
                max_len,
            },
            cache_dir: cache_dir(&self.config.data_dir()),
        };
        match check.run(fingerprint.as_deref()) {
            Ok(validation) => validation,
            Err(e) => failed(e),
        }
    }
}

/// One dataset's review, with what it needs from the worker.
struct Check<'a> {
    dataset: &'a DatasetRow,
    uploads: &'a Uploads,
    reranker: &'a Reranker,
    names: Names,
    opts: ValidateOptions,
    cache_dir: PathBuf,
}

impl Check<'_> {
    /// The validation to store; `Err` is an internal error (problems in the data are the
    /// review's). `fingerprint`: the model's, when the dataset is to be mined.
    fn run(&self, fingerprint: Option<&str>) -> Result<Validation, String> {
        let dataset = self.dataset;
        // Rows are reviewed as uploaded first: their problems point at the client's lines, and
        // their counts meet the minimums before any held-out share is taken from them.
        let uploaded = match &dataset.parts.data {
            Some(_) => {
                let train = self.path(Part::Data)?;
                let eval = match dataset.parts.eval {
                    Some(_) => Some(self.path(Part::Eval)?),
                    None => None,
                };
                let review = self.review(&train, eval.as_deref(), &self.opts);
                if !review.ok || dataset.parts.corpus.is_none() {
                    return Ok(self.summarize(&review, None, None));
                }
                Some(review)
            }
            None => None,
        };
        let collection = match Collection::read(self.uploads, dataset) {
            Ok(c) => c,
            Err(e) => return Ok(self.refuse(uploaded, self.names.problem(e))),
        };
        // A BEIR collection's judged queries meet the same minimum as uploaded rows.
        if let (None, Some(qrels)) = (&uploaded, &dataset.parts.qrels) {
            let judged = collection.train.queries.len() + collection.eval.queries.len();
            let min = self.opts.min_train_queries;
            if let Some(problem) = too_few_queries(&qrels.filename, "training", judged, min) {
                return Ok(self.refuse(None, problem));
            }
        }
        let (Some(mining), Some(key)) = (&dataset.mining, fingerprint) else {
            // Rows with a corpus and no mining: the corpus reads, and the rows' review stands.
            let review = uploaded.ok_or("internal error: a BEIR collection came without mining")?;
            return Ok(self.summarize(&review, None, None));
        };
        let (train, eval) = self
            .uploads
            .mined(&dataset.id)
            .map_err(|e| format!("internal error: {e}"))?;
        let report = mine_files(
            &collection,
            (self.reranker, key),
            mining,
            &self.cache_dir,
            (&train, &eval),
        )?;
        self.uploads
            .share_mined(&dataset.id)
            .map_err(|e| format!("internal error: {e}"))?;
        tracing::info!(
            id = %dataset.id,
            negatives = report.negatives,
            queries = report.queries,
            seconds = report.seconds,
            "mined hard negatives"
        );
        // The minimums were met by what was uploaded; the share held out of it for evaluation
        // must not count against them.
        let opts = ValidateOptions {
            min_train_queries: 1,
            min_valid_queries: 1,
            ..self.opts.clone()
        };
        let review = self.review(&train, Some(&eval), &opts);
        let sizes = [&train, &eval].map(|p| std::fs::metadata(p).map_or(0, |m| m.len()));
        Ok(self.summarize(&review, Some(&report), Some(sizes)))
    }

    fn path(&self, part: Part) -> Result<PathBuf, String> {
        self.uploads
            .path(&self.dataset.id, part)
            .map_err(|e| format!("internal error: {e}"))
    }

    fn review(&self, train: &Path, eval: Option<&Path>, opts: &ValidateOptions) -> Review {
        let mut review = validate(train, eval, opts, &self.reranker.pair_counter());
        self.names.rename(&mut review);
        review
    }

    /// A review failed by `problem` in the collection, beside the rows' review when there is one.
    fn refuse(&self, uploaded: Option<Review>, problem: Problem) -> Validation {
        let mut review = uploaded.unwrap_or_default();
        review.ok = false;
        review.errors.push(problem);
        self.summarize(&review, None, None)
    }

    /// `sizes`: of the training and evaluation files the review read, when they are not the
    /// uploaded ones.
    fn summarize(
        &self,
        review: &Review,
        mining: Option<&MineReport>,
        sizes: Option<[u64; 2]>,
    ) -> Validation {
        let parts = &self.dataset.parts;
        let uploaded = |f: &Option<FilePart>| f.as_ref().map_or(0, |f| f.size_bytes);
        let sizes = sizes.unwrap_or([uploaded(&parts.data), uploaded(&parts.eval)]);
        summarize(review, self.opts.max_len, mining, sizes)
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

/// Problems name files by the names the client uploaded, not by server paths; the mined files,
/// which the client never saw, by what they were mined from.
struct Names(Vec<(String, String)>);

impl Names {
    fn new(uploads: &Uploads, dataset: &DatasetRow) -> std::io::Result<Names> {
        let mut names = Vec::new();
        for (part, file) in dataset.parts.iter() {
            let path = uploads.path(&dataset.id, part)?;
            names.push((path.display().to_string(), file.filename.clone()));
        }
        if dataset.mining.is_some() {
            let parts = &dataset.parts;
            let source = parts.data.as_ref().or(parts.qrels.as_ref());
            let source = source.map_or_else(String::new, |f| f.filename.clone());
            let eval = match &parts.eval {
                Some(eval) => format!("{}, with mined negatives", eval.filename),
                None => format!("{source}, held out, with mined negatives"),
            };
            let (train_path, eval_path) = uploads.mined(&dataset.id)?;
            names.push((
                train_path.display().to_string(),
                format!("{source}, with mined negatives"),
            ));
            names.push((eval_path.display().to_string(), eval));
        }
        Ok(Names(names))
    }

    fn shown(&self, file: &str) -> String {
        self.0
            .iter()
            .find(|(path, _)| path == file)
            .map_or_else(|| file.to_string(), |(_, name)| name.clone())
    }

    fn rename(&self, review: &mut Review) {
        for p in review.errors.iter_mut().chain(review.warnings.iter_mut()) {
            p.file = self.shown(&p.file);
        }
        for stats in [&mut review.train, &mut review.valid].into_iter().flatten() {
            stats.file = self.shown(&stats.file);
        }
    }

    /// A problem the collection's reader found, naming the client's file.
    fn problem(&self, e: DataError) -> Problem {
        match e {
            DataError::Invalid(mut problem) => {
                problem.file = self.shown(&problem.file);
                problem
            }
            DataError::Io { path, source } => Problem {
                file: self.shown(&path.display().to_string()),
                line: None,
                message: format!("the server could not read it: {source}"),
                fix: "upload the dataset again; if that fails too, the server's log says more"
                    .into(),
            },
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
/// against, which a histogram needs to show what will be cut, and the mining report when the
/// review is of mined rows.
#[derive(Serialize)]
struct StoredReview<'a> {
    #[serde(flatten)]
    review: &'a Review,
    max_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    mining: Option<&'a MineReport>,
}

/// `sizes`: bytes of the training and evaluation files reviewed.
fn summarize(
    review: &Review,
    max_len: usize,
    mining: Option<&MineReport>,
    [train_size_bytes, eval_size_bytes]: [u64; 2],
) -> Validation {
    let (train_relevant, train_negatives) = passages(&review.train_rows);
    let (eval_relevant, eval_negatives) = passages(&review.valid_rows);
    let metrics = DatasetMetrics {
        finetune_dataset_metrics: FinetuneDatasetMetrics {
            total_examples: review.train_rows.len() + review.valid_rows.len(),
            train_examples: review.train_rows.len(),
            train_size_bytes,
            eval_examples: review.valid_rows.len(),
            eval_size_bytes,
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
        review: serde_json::to_value(StoredReview {
            review,
            max_len,
            mining,
        })
        .expect("reviews serialize"),
        metrics: Some(metrics),
    }
}
