//! The reranking engine, between the compute backend and the front ends (CLI, server).
//!
//! It resolves model references (the default model, a registered `<uuid>-ft` id, or a checkpoint
//! directory), keeps the local model registry, scores queries against documents with
//! length-sorted, token-budget batches and overlapping chunks, and evaluates a model on a test set.
//! Its types are plain data; libtorch stays inside `finerank-model`.
mod assess;
mod registry;
mod reranker;
mod resolve;

pub use assess::{assess, groups_of_test_rows};
pub use finerank_model::{DeviceChoice, Kind, LoadOptions, Precision};
pub use registry::{now_rfc3339, ModelRecord, Registry, RegistryError};
pub use reranker::{dot, rank, Group, GroupScores, Ranked, RerankOutput, Reranker, ScoreOptions};
pub use resolve::{default_model_dir, resolve, ResolveError, DEFAULT_MODEL};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] finerank_model::ModelError),
    #[error(transparent)]
    Text(#[from] finerank_text::TextError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
