//! Fine-tuned models, which double as the job queue, and the state machine of their jobs: every
//! move is a compare-and-set from the statuses the caller expects, recorded as an event.
//!
//! A worker claims a job under a lease: the claim records who holds it (`owner`, unique to the
//! claim) and until when, and the worker renews it by heartbeat. Whatever the worker writes
//! afterwards names its claim and is refused once the claim is no longer the job's (cancelled,
//! deleted, or requeued after the lease expired and claimed by another), so a worker cut off
//! for a while cannot overwrite its successor's work. A lease that expired lets anyone requeue
//! the job ([`Mover::Reaper`]).
use std::time::Duration;

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

/// Who makes a status change, and so what it is conditioned on besides the job's status.
#[derive(Clone, Copy, Debug)]
pub enum Mover<'a> {
    /// A request (a cancel, a retry) or the only process on the database: whoever finds the job
    /// in the expected status.
    Anyone,
    /// The worker whose claim is `owner`: refused once the job is no longer under that claim.
    Holder(&'a str),
    /// Whoever finds the lease of claim `owner` expired: its worker stopped heartbeating.
    Reaper(&'a str),
}

impl Mover<'_> {
    /// Whether this move may be made on a job under claim `owner` (`None`: none), whose lease
    /// has `expired` or not.
    pub(super) fn allowed(self, owner: Option<&str>, expired: bool) -> bool {
        match self {
            Mover::Anyone => true,
            Mover::Holder(me) => owner == Some(me),
            Mover::Reaper(dead) => owner == Some(dead) && expired,
        }
    }
}

/// Whether a job in `status` is held by a worker (under a lease).
pub(super) fn leased(status: JobStatus) -> bool {
    matches!(status, JobStatus::Finetuning | JobStatus::DeployingApi)
}

/// A lease's length in the database's integer milliseconds.
pub(super) fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// When a job moves to `to` for `reason`, its failure reason, if it failed.
pub(super) fn failure(to: JobStatus, reason: Option<&str>) -> Option<&str> {
    reason.filter(|_| to == JobStatus::Failed)
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

    /// Takes the oldest queued job and marks it running under claim `owner` (unique to this
    /// claim), leased for `lease`. Its STATUS_FINETUNING event waits for training to start
    /// ([`JobQueue::training_started`]), after the data is read and the base model loaded, so
    /// that the event says when training began.
    fn claim_job(&self, owner: &str, lease: Duration) -> Result<Option<ModelRow>>;

    /// The heartbeat: extends the lease of claim `owner` on job `id` to `lease` from now; false
    /// when the job is no longer under that claim (cancelled, deleted, requeued after its lease
    /// expired), which tells the worker to stop.
    fn renew_lease(&self, id: &str, owner: &str, lease: Duration) -> Result<bool>;

    /// Running jobs whose lease has expired, with their status and the claim that let it expire.
    fn expired_leases(&self) -> Result<Vec<(String, JobStatus, String)>>;

    /// Stamps a running job's STATUS_FINETUNING event: its first step is next. `note` says
    /// where a resumed run goes on from. A job no longer under claim `owner` gets none.
    fn training_started(&self, id: &str, owner: &str, note: Option<&str>) -> Result<()>;

    /// Moves a job from one of `from` to `to`, with an event; false if it was not in `from`
    /// (deleted, or already moved on) or `by` may not move it. A failure records its reason; an
    /// end records its time. A job that leaves the running statuses leaves its lease.
    fn transition(
        &self,
        id: &str,
        from: &[JobStatus],
        to: JobStatus,
        reason: Option<&str>,
        by: Mover,
    ) -> Result<bool>;

    /// Puts a job from one of `from` back in the queue, with an event that says why; false if
    /// it was not in `from` or `by` may not move it. A failure's reason and end time go: the
    /// job is not over.
    fn requeue(&self, id: &str, from: &[JobStatus], note: &str, by: Mover) -> Result<bool>;

    /// Records a running job's progress; once it is no longer under claim `owner`, nothing.
    fn set_progress(&self, id: &str, owner: &str, progress: &Progress) -> Result<()>;

    /// Records a trained job's metrics, if `by` may move it.
    fn set_metrics(&self, id: &str, by: Mover, metrics: &FinetuneMetrics) -> Result<()>;

    /// Jobs running, with their status: what a process that holds the database alone finds
    /// left by the one before it.
    fn running_jobs(&self) -> Result<Vec<(String, JobStatus)>>;

    /// Models by status, for the metrics.
    fn models_by_status(&self) -> Result<Vec<(String, usize)>>;
}
