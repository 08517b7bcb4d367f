//! Datasets, which double as the validation queue: an upload is queued, the validator claims the
//! oldest and records its verdict.
use finerank_retrieve::MineOptions;

use super::Result;
use crate::jobs::JobStatus;
use crate::parts::Parts;
use crate::validator::{DatasetMetrics, ValidationStatus};

pub struct NewDataset {
    pub id: String,
    pub name: String,
    pub dataset_type: String,
    pub parts: Parts,
    /// How to mine negatives from the corpus, when the upload asked for it.
    pub mining: Option<MineOptions>,
}

#[derive(Clone, Debug)]
pub struct DatasetRow {
    pub id: String,
    pub name: String,
    pub dataset_type: String,
    pub created_at: String,
    pub updated_at: String,
    pub validation_status: ValidationStatus,
    pub validation_error: Option<String>,
    pub validation_warnings: Vec<String>,
    pub parts: Parts,
    pub mining: Option<MineOptions>,
    /// The validator's statistics and problems, as JSON.
    pub review: Option<serde_json::Value>,
    pub metrics: Option<DatasetMetrics>,
}

/// The outcome of validating a dataset.
pub struct Validation {
    pub ok: bool,
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub review: serde_json::Value,
    pub metrics: Option<DatasetMetrics>,
}

impl Validation {
    pub(super) fn status(&self) -> ValidationStatus {
        if self.ok {
            ValidationStatus::Validated
        } else {
            ValidationStatus::Failed
        }
    }
}

#[derive(Default)]
pub struct DatasetFilter {
    pub dataset_type: Option<String>,
    pub validation_status: Option<ValidationStatus>,
    /// Created strictly before / after, as [`super::now`] formats times.
    pub before: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub offset: usize,
}

pub enum DatasetDeletion {
    Deleted,
    Missing,
    /// A job still needs the files.
    InUse {
        model_id: String,
        status: JobStatus,
    },
}

pub trait DatasetQueue {
    fn insert_dataset(&self, d: &NewDataset) -> Result<()>;

    fn dataset(&self, id: &str) -> Result<Option<DatasetRow>>;

    /// Newest first.
    fn datasets(&self, f: &DatasetFilter) -> Result<Vec<DatasetRow>>;

    /// Refuses while a queued or running job still needs the dataset's files.
    fn delete_dataset(&self, id: &str) -> Result<DatasetDeletion>;

    fn dataset_ids(&self) -> Result<Vec<String>>;

    /// Bytes of every uploaded file.
    fn dataset_usage(&self) -> Result<u64>;

    /// Takes the oldest queued dataset for validation.
    fn claim_dataset(&self) -> Result<Option<DatasetRow>>;

    /// Records the verdict on a dataset being validated; a dataset deleted (or requeued)
    /// meanwhile is left alone.
    fn finish_validation(&self, id: &str, v: &Validation) -> Result<()>;

    /// Validations cut short by a restart start over (they are repeatable).
    fn requeue_validations(&self) -> Result<usize>;

    /// Datasets by validation status, for the metrics.
    fn datasets_by_status(&self) -> Result<Vec<(String, usize)>>;
}
