//! Ranking metrics for rerankers with honest uncertainty: per-query metrics,
//! bootstrap confidence intervals, and paired comparison of two models
//! (paired bootstrap plus exact McNemar on accuracy@1).
//!
//! Pure Rust, no model code: callers hand in each query's candidate scores
//! and the indices of its relevant candidates, and get numbers back.

mod query;
mod report;
mod stats;

pub use query::{query_metrics, QueryMetrics, Scored};
pub use report::{ranks_csv, render_table, Report};
pub use stats::{compare, summarize, Bootstrap, Comparison, Estimate, EvalError, Metrics};
