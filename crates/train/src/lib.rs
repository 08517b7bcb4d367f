//! Fine-tuning rerankers.
//!
//! Bi-encoders train contrastively: each query against its relevant passage, its hard negatives and
//! every other passage in the batch. Cross-encoders train listwise: a softmax over each query's
//! group of one relevant passage and its hard negatives. Both use AdamW with linear warmup and
//! decay and gradient clipping, evaluate on the validation set as they go, keep the best
//! checkpoint and stop early. [`run_job`] wraps a run end to end: data review, training, and an
//! atomic entry in the model registry.
mod hyper;
mod job;
mod loop_;

pub use hyper::{
    FinetuneConfig, HyperOverrides, HyperparameterSpec, Hyperparameters, HYPERPARAMETERS,
};
pub use job::{run_job, FinetuneJob, JobError, DEFAULT_MAX_LEN};
pub use loop_::{finetune, Outcome, TrainEvent, ValidMetrics};
