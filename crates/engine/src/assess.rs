//! Measuring a model on a test set: every query's documents scored, then ranking metrics and
//! how well the scores are calibrated.
use finerank_data::TestRow;
use finerank_eval::{expected_calibration_error, query_metrics, QueryMetrics, Scored, ECE_BINS};

use crate::{Group, GroupScores, Reranker, ScoreOptions};

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

/// Every row's documents scored by `reranker`, in order. `progress(done, total)` follows along.
pub(crate) fn score_rows(
    reranker: &Reranker,
    rows: &[TestRow],
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<GroupScores> {
    let mut out = Vec::with_capacity(rows.len());
    for block in rows.chunks(QUERIES_PER_CALL) {
        out.extend(reranker.score(&groups_of_test_rows(block), opts));
        progress(out.len(), rows.len());
    }
    out
}

/// A model measured on a test set.
#[derive(Clone, Debug)]
pub struct Assessment {
    /// Ranking metrics of each query, in the rows' order, ranked by raw score. Ties count
    /// against the model, and a NaN or infinite score ranks after every finite one (see
    /// `finerank_eval::query_metrics`).
    pub per_query: Vec<QueryMetrics>,
    /// (query, document) pairs whose raw score was NaN or infinite: a broken model output, which
    /// the metrics rank last and a caller should warn about.
    pub non_finite: usize,
    /// Expected calibration error of the relevance scores over every (query, document) pair,
    /// a document being relevant when it is among its row's gold documents.
    pub ece: f64,
}

/// Measures `reranker` on `rows`. `progress(done, total)` follows along.
pub fn assess(
    reranker: &Reranker,
    rows: &[TestRow],
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Assessment {
    let scored = score_rows(reranker, rows, opts, progress);
    let non_finite = scored
        .iter()
        .flat_map(|s| &s.raw_scores)
        .filter(|r| !r.is_finite())
        .count();
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    for (row, s) in rows.iter().zip(&scored) {
        probs.extend(s.scores.iter().map(|&p| f64::from(p)));
        labels.extend((0..s.scores.len()).map(|i| row.gold_indices.contains(&i)));
    }
    // Ranked by the raw scores: calibration keeps their order, but where its sigmoid saturates,
    // distinct raw scores could round to one f32 relevance score and tie.
    let per_query = rows
        .iter()
        .zip(scored)
        .map(|(row, s)| {
            query_metrics(&Scored {
                scores: s.raw_scores,
                gold: row.gold_indices.clone(),
            })
        })
        .collect();
    Assessment {
        per_query,
        non_finite,
        ece: expected_calibration_error(&probs, &labels, ECE_BINS),
    }
}
