//! Ranking metrics for rerankers with honest uncertainty: per-query metrics,
//! bootstrap confidence intervals, and paired comparison of two models
//! (paired bootstrap plus exact McNemar on accuracy@1).
//!
//! For retrieval-style evaluation (BEIR), [`retrieval_metrics`] computes
//! graded nDCG@10, Recall@10/100, MRR@10 and MAP@100 as trec_eval does, and
//! [`compare_retrieval`] pairs the bootstrap with a sign-flip randomization
//! test, as recommended for IR significance testing.
//!
//! [`calibrate`] fits a Platt mapping from raw scores to probabilities of
//! relevance and reports its expected calibration error, cross-fitted by query.
//!
//! Every ranking follows [`by_score_desc`]: NaN and infinite scores rank
//! after every finite one, and ties count against the system (a relevant
//! candidate ranks after the less relevant ones it ties with).
//!
//! Pure Rust, no model code: callers hand in each query's candidate scores
//! and the indices (or grades) of its relevant candidates, and get numbers
//! back.

mod calibration;
mod order;
mod query;
mod report;
mod retrieval;
mod stats;

pub use calibration::{
    calibrate, expected_calibration_error, fit_platt, CalibrationError, CalibrationReport, Platt,
    ECE_BINS,
};
pub use order::by_score_desc;
pub use query::{query_metrics, QueryMetrics, Scored};
pub use report::{
    ranks_csv, render_retrieval, render_table, retrieval_csv, Paired, Report, RetrievalReport,
    System,
};
pub use retrieval::{
    compare_retrieval, retrieval_metrics, summarize_retrieval, PairedDiff, RetrievalComparison,
    RetrievalMetrics, RetrievalQuery, RetrievalSummary,
};
pub use stats::{compare, summarize, Bootstrap, Comparison, Estimate, EvalError, Metrics};
