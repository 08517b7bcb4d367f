//! The reranking engine, between the compute backend and the front ends (CLI, server).
//!
//! It resolves model references (the default model, a registered `<uuid>-ft` id, a checkpoint
//! directory, or a Hugging Face model id, fetched into the Hugging Face cache), keeps the local
//! model registry (on this machine, or in a file store that several processes share), scores queries against documents with length-sorted, token-budget batches and
//! overlapping chunks, calibrates its raw scores into relevance scores (and fits that
//! calibration), and evaluates a model on a test set.
//! Its types are plain data; libtorch stays inside `finerank-model`.
mod assess;
mod calibration;
mod filestore;
mod hub;
mod registry;
mod reranker;
mod resolve;
mod staging;

use assess::score_rows;
pub use assess::{assess, groups_of_test_rows, Assessment};
pub use calibration::{fit_calibration, Calibration, Method, RawScore, CALIBRATION_FILE};
pub use filestore::{FileStore, FileStoreError};
pub use finerank_model::{
    module_folders, set_threads_here, threads_here, BaseDtype, DeviceChoice, Family, Kind,
    LoadOptions, Precision, Role,
};
pub use hub::{HubError, HubSettings, NotCached};
pub use registry::{now_rfc3339, ModelRecord, Registry, RegistryError};
pub use reranker::{
    dot, rank_by_raw, Group, GroupScores, Ranked, RerankOutput, Reranker, ScoreOptions,
    INSTRUCTION_FILE,
};
pub use resolve::{
    adapter_base, default_model_dir, resolve, resolve_with, ResolveError, DEFAULT_MODEL,
};

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
    /// A `calibration.json` that cannot be read or written, or a calibration for another kind.
    #[error("{0}")]
    Calibration(String),
    /// An instruction for a model that takes none, or an `instruction.json` that cannot be read
    /// or written.
    #[error("{0}")]
    Instruction(String),
}
