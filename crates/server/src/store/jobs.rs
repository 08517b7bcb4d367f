//! Fine-tuned models, which double as the job queue, and the state machine of their jobs: every
//! move is a compare-and-set from the statuses the caller expects, recorded as an event.
use super::{Order, Page, Result};
use crate::jobs::{FinetuneMetrics, JobStatus, Progress, Settings};

#[derive(Clone, Debug)]
pub struct ModelRow {
    pub id: String,
    pub name: String,
    pub settings: Settings,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub completed_at: Option<String>,
    pub progress: Option<Progress>,
    pub metrics: Option<FinetuneMetrics>,
}

pub enum ModelUpdate {
    Updated(Box<ModelRow>),
    Missing,
    /// Settings may change only while the job waits in the queue.
    Locked(JobStatus),
}

/// When a job moves to `to`, the time it ended, if it did.
pub(super) fn ended_at(to: JobStatus, at: &str) -> Option<&str> {
    matches!(to, JobStatus::Ready | JobStatus::Failed).then_some(at)
}

/// The settings an update of `current` writes, if they change; or, when they would change a job
/// that has left the queue, its status.
pub(super) fn changed_settings<'a>(
    current: &ModelRow,
    settings: Option<&'a Settings>,
) -> std::result::Result<Option<&'a Settings>, JobStatus> {
    match settings.filter(|s| **s != current.settings) {
        Some(_) if current.status != JobStatus::Queued => Err(current.status),
        changed => Ok(changed),
    }
}

pub trait JobQueue {
    /// Queues a job, with its STATUS_QUEUED event.
    fn insert_model(&self, id: &str, name: &str, settings: &Settings) -> Result<ModelRow>;

    fn model(&self, id: &str) -> Result<Option<ModelRow>>;

    fn models(&self, order: Order, offset: usize, limit: usize) -> Result<Page<ModelRow>>;

    /// Renames a model, or changes its settings while it is still queued.
    fn update_model(
        &self,
        id: &str,
        name: Option<&str>,
        settings: Option<&Settings>,
    ) -> Result<ModelUpdate>;

    /// Deletes a model with its events and metrics, and leaves a tombstone: the caller removes
    /// the model's files next, and a start after a crash in between removes them from the
    /// tombstone ([`JobQueue::deleted_models`]). Returns the status the model had.
    fn delete_model(&self, id: &str) -> Result<Option<JobStatus>>;

    /// Every model ever deleted. Tombstones stay: a job deleted while it trained may still
    /// publish its model, and a crash before the worker removes it leaves one for the next start.
    fn deleted_models(&self) -> Result<Vec<String>>;

    /// Takes the oldest queued job and marks it running. Its STATUS_FINETUNING event waits for
    /// training to start ([`JobQueue::training_started`]), after the data is read and the base
    /// model loaded, so that the event says when training began.
    fn claim_job(&self) -> Result<Option<ModelRow>>;

    /// Stamps a running job's STATUS_FINETUNING event: its first step is next. `note` says
    /// where a resumed run goes on from. A job deleted meanwhile gets none.
    fn training_started(&self, id: &str, note: Option<&str>) -> Result<()>;

    /// Moves a job from one of `from` to `to`, with an event; false if it was not in `from`
    /// (deleted, or already moved on). A failure records its reason; an end records its time.
    fn transition(
        &self,
        id: &str,
        from: &[JobStatus],
        to: JobStatus,
        reason: Option<&str>,
    ) -> Result<bool>;

    /// Puts a job from one of `from` back in the queue, with an event that says why; false if
    /// it was not in `from`. A failure's reason and end time go: the job is not over.
    fn requeue(&self, id: &str, from: &[JobStatus], note: &str) -> Result<bool>;

    /// Records a running job's progress; once it has moved on, nothing.
    fn set_progress(&self, id: &str, progress: &Progress) -> Result<()>;

    fn set_metrics(&self, id: &str, metrics: &FinetuneMetrics) -> Result<()>;

    /// Jobs that were running when the process stopped.
    fn running_jobs(&self) -> Result<Vec<(String, JobStatus)>>;

    /// Models by status, for the metrics.
    fn models_by_status(&self) -> Result<Vec<(String, usize)>>;
}
