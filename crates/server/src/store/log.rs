//! What a job leaves behind as it runs: its status events, the metrics of each evaluation step
//! and the loss of each optimizer step. A job deleted while it trains takes them with it, and
//! what it records afterwards is dropped, as is what a worker records after losing its claim.
use std::collections::BTreeMap;

use super::{Order, Page, Result};
use crate::jobs::JobStatus;

pub struct EventRow {
    pub status: JobStatus,
    pub message: Option<String>,
    pub created_at: String,
}

pub struct StepRow {
    pub step_number: usize,
    pub created_at: String,
    pub metrics: BTreeMap<String, f64>,
}

/// Steps are written by the worker holding the job's claim (`owner`): once the job is no longer
/// under it, what it writes is dropped.
pub trait JobLog {
    fn add_step_metrics(
        &self,
        id: &str,
        owner: &str,
        step: usize,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<()>;

    /// The training loss of one optimizer step.
    fn add_step_loss(&self, id: &str, owner: &str, step: usize, loss: f64) -> Result<()>;

    /// Losses of the steps after `after_step`, in step order.
    fn step_losses(&self, id: &str, after_step: usize) -> Result<Vec<(usize, f64)>>;

    /// In the order they happened (or the reverse).
    fn events(&self, id: &str, order: Order, offset: usize, limit: usize)
        -> Result<Page<EventRow>>;

    /// Most recent step first, as Cohere lists them.
    fn step_metrics(&self, id: &str, offset: usize, limit: usize) -> Result<Page<StepRow>>;
}
