//! Fine-tuning rerankers.
//!
//! Bi-encoders train contrastively: each query against its relevant passage, its hard negatives and
//! every other passage in the batch. Cross-encoders train listwise: a softmax over each query's
//! group of one relevant passage and its hard negatives. Both use AdamW with linear warmup and
//! decay and gradient clipping, evaluate on the validation set as they go, keep the best
//! checkpoint and stop early, then fit the kept model's calibration (its raw scores mapped to
//! relevance scores) on the validation set. [`run_job`] wraps a run end to end: data review,
//! training, and an atomic entry in the model registry, its `calibration.json` included. A run
//! given a resume directory saves its state at each validation, and a crashed or interrupted run
//! started again on it continues where it was and ends with the same model.
mod adamw;
mod fit;
mod hyper;
mod job;
mod loop_;
mod resume;
mod selection;
mod shared;

pub use fit::panic_message;
pub use hyper::{
    FinetuneConfig, HyperOverrides, HyperparameterSpec, Hyperparameters, HYPERPARAMETERS,
};
pub use job::{resume_dir, run_job, Export, FinetuneJob, JobError, DEFAULT_MAX_LEN};
pub use loop_::{finetune, Outcome, TrainEvent, ValidMetrics};
pub use resume::{resume_step, Resume};
pub use shared::{fetch_state, remove_state, saved_step, share_state};
