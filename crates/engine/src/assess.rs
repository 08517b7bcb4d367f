//! Measuring a model on a test set: every query's documents scored, then ranking metrics.
use finerank_data::TestRow;
use finerank_eval::{query_metrics, QueryMetrics, Scored};

use crate::{Group, Reranker, ScoreOptions};

/// Queries scored per call: enough to fill batches, few enough to report progress.
const QUERIES_PER_CALL: usize = 32;

pub fn groups_of_test_rows(rows: &[TestRow]) -> Vec<Group<'_>> {
    rows.iter()
        .map(|r| Group {
            query: &r.query,
            documents: r.documents.iter().map(String::as_str).collect(),
        })
        .collect()
}

/// Per-query metrics of `reranker` on `rows`, in order. `progress(done, total)` follows along.
pub fn assess(
    reranker: &Reranker,
    rows: &[TestRow],
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<QueryMetrics> {
    let mut out = Vec::with_capacity(rows.len());
    for block in rows.chunks(QUERIES_PER_CALL) {
        let scored = reranker.score(&groups_of_test_rows(block), opts);
        out.extend(block.iter().zip(scored).map(|(row, s)| {
            query_metrics(&Scored {
                scores: s.scores,
                gold: row.gold_indices.clone(),
            })
        }));
        progress(out.len(), rows.len());
    }
    out
}
