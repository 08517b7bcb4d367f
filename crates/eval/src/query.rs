//! Per-query ranking metrics with binary relevance.

use serde::{Deserialize, Serialize};

use crate::order::pessimistic_order;

/// One query's outcome: the model's score for each candidate (in the
/// candidates' original order) and the indices of the relevant candidates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scored {
    pub scores: Vec<f32>,
    pub gold: Vec<usize>,
}

/// Per-query metric values.
///
/// The ranking is [`crate::by_score_desc`]'s: best score first, NaN and
/// infinite scores after every finite one. Ties are pessimistic: a relevant
/// candidate ranks after every non-relevant one with an equal score, so a
/// tie never counts for the model, whatever the candidates' order. Relevance
/// is binary.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueryMetrics {
    pub acc_at_1: f64,
    pub acc_at_3: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
    pub average_precision: f64,
    /// 1-based rank of the best-ranked relevant candidate.
    pub first_relevant_rank: usize,
}

/// Metrics for one query.
///
/// Gold indices that are out of range are ignored and duplicates count once.
/// A query left with no relevant candidate scores zero on every metric and
/// gets `first_relevant_rank = scores.len() + 1` ("below the last candidate"),
/// so it still counts against the model instead of silently vanishing.
pub fn query_metrics(s: &Scored) -> QueryMetrics {
    let n = s.scores.len();
    let scores: Vec<f64> = s.scores.iter().copied().map(f64::from).collect();
    let relevant: Vec<u32> = (0..n).map(|i| u32::from(s.gold.contains(&i))).collect();
    let order = pessimistic_order(&scores, &relevant);
    let mut rank_of = vec![0usize; n];
    for (pos, &idx) in order.iter().enumerate() {
        rank_of[idx] = pos + 1;
    }

    let mut ranks: Vec<usize> = s
        .gold
        .iter()
        .filter(|&&g| g < n)
        .map(|&g| rank_of[g])
        .collect();
    ranks.sort_unstable();
    ranks.dedup();

    let Some(&first) = ranks.first() else {
        return QueryMetrics {
            acc_at_1: 0.0,
            acc_at_3: 0.0,
            mrr_at_10: 0.0,
            ndcg_at_10: 0.0,
            average_precision: 0.0,
            first_relevant_rank: n + 1,
        };
    };

    let dcg: f64 = ranks
        .iter()
        .take_while(|&&r| r <= 10)
        .map(|&r| discount(r))
        .sum();
    let ideal: f64 = (1..=ranks.len().min(10)).map(discount).sum();
    // The k-th relevant item (1-based) sits at rank r, so precision there is k / r.
    let precision_sum: f64 = ranks
        .iter()
        .enumerate()
        .map(|(k, &r)| (k + 1) as f64 / r as f64)
        .sum();

    QueryMetrics {
        acc_at_1: indicator(first <= 1),
        acc_at_3: indicator(first <= 3),
        mrr_at_10: if first <= 10 { 1.0 / first as f64 } else { 0.0 },
        ndcg_at_10: dcg / ideal,
        average_precision: precision_sum / ranks.len() as f64,
        first_relevant_rank: first,
    }
}

/// The standard DCG discount `1 / log2(rank + 1)` for a 1-based rank.
pub(crate) fn discount(rank: usize) -> f64 {
    1.0 / ((rank + 1) as f64).log2()
}

fn indicator(hit: bool) -> f64 {
    if hit {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(scores: &[f32], gold: &[usize]) -> QueryMetrics {
        query_metrics(&Scored {
            scores: scores.to_vec(),
            gold: gold.to_vec(),
        })
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn single_relevant_at_top() {
        let m = metrics(&[0.9, 0.1, 0.5], &[0]);
        assert_eq!(
            m,
            QueryMetrics {
                acc_at_1: 1.0,
                acc_at_3: 1.0,
                mrr_at_10: 1.0,
                ndcg_at_10: 1.0,
                average_precision: 1.0,
                first_relevant_rank: 1,
            }
        );
    }

    #[test]
    fn single_relevant_at_rank_two() {
        // Ranking: 2 (0.8), 0 (0.5), 1 (0.1); gold 0 is at rank 2.
        let m = metrics(&[0.5, 0.1, 0.8], &[0]);
        assert_eq!(m.first_relevant_rank, 2);
        assert_eq!(m.acc_at_1, 0.0);
        assert_eq!(m.acc_at_3, 1.0);
        assert!(close(m.mrr_at_10, 0.5));
        assert!(close(m.ndcg_at_10, 1.0 / 3f64.log2()));
        assert!(close(m.average_precision, 0.5));
    }

    #[test]
    fn ties_count_against_the_model() {
        // All equal, the relevant candidate listed first (as validation lists it): it ranks last.
        let m = metrics(&[0.3, 0.3, 0.3, 0.3], &[0]);
        assert_eq!(m.first_relevant_rank, 4);
        assert_eq!((m.acc_at_1, m.acc_at_3), (0.0, 0.0));
        assert!(close(m.mrr_at_10, 0.25));
        assert!(close(m.average_precision, 0.25));
        // Wherever it is listed, the tie puts it after the non-relevant candidates it ties with,
        // but not after one that scores lower.
        for gold in 0..3 {
            let m = metrics(&[0.3, 0.3, 0.3, 0.1], &[gold]);
            assert_eq!(m.first_relevant_rank, 3, "gold {gold}");
        }
        // Two relevant candidates tied with one non-relevant one take ranks 2 and 3.
        let m = metrics(&[0.7, 0.7, 0.7], &[0, 1]);
        assert_eq!(m.first_relevant_rank, 2);
        assert!(close(m.average_precision, (1.0 / 2.0 + 2.0 / 3.0) / 2.0));
        // A sigmoid saturated in f32 is such a tie: both logits round to a score of 1.
        let saturated = [
            1.0 / (1.0 + (-17.0f32).exp()),
            1.0 / (1.0 + (-20.0f32).exp()),
        ];
        assert_eq!(saturated, [1.0, 1.0]);
        assert_eq!(metrics(&saturated, &[0]).acc_at_1, 0.0);
    }

    #[test]
    fn multiple_relevant() {
        // Ranking: 1 (0.9), 3 (0.7), 0 (0.5), 2 (0.2); gold {0, 2} at ranks 3 and 4.
        let m = metrics(&[0.5, 0.9, 0.2, 0.7], &[2, 0]);
        assert_eq!(m.first_relevant_rank, 3);
        assert_eq!(m.acc_at_1, 0.0);
        assert_eq!(m.acc_at_3, 1.0);
        assert!(close(m.mrr_at_10, 1.0 / 3.0));
        // AP = (1/3 + 2/4) / 2
        assert!(close(m.average_precision, (1.0 / 3.0 + 0.5) / 2.0));
        // DCG = 1/log2(4) + 1/log2(5); ideal = 1/log2(2) + 1/log2(3)
        let dcg = 0.5 + 1.0 / 5f64.log2();
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!(close(m.ndcg_at_10, dcg / ideal));
    }

    #[test]
    fn duplicate_and_out_of_range_gold_are_ignored() {
        let plain = metrics(&[0.5, 0.9, 0.2, 0.7], &[2, 0]);
        let noisy = metrics(&[0.5, 0.9, 0.2, 0.7], &[2, 0, 0, 4, 99]);
        assert_eq!(plain, noisy);
    }

    #[test]
    fn relevant_below_rank_ten() {
        // Twelve candidates with descending scores; gold is the 12th.
        let scores: Vec<f32> = (0..12).map(|i| 1.0 - i as f32 * 0.05).collect();
        let m = metrics(&scores, &[11]);
        assert_eq!(m.first_relevant_rank, 12);
        assert_eq!(m.acc_at_3, 0.0);
        assert_eq!(m.mrr_at_10, 0.0);
        assert_eq!(m.ndcg_at_10, 0.0);
        // AP looks at all ranks, not just the top ten.
        assert!(close(m.average_precision, 1.0 / 12.0));
    }

    #[test]
    fn ideal_dcg_is_capped_at_ten_relevant() {
        // Twelve relevant candidates, all of them: the top ten is perfect.
        let scores: Vec<f32> = (0..12).map(|i| -(i as f32)).collect();
        let gold: Vec<usize> = (0..12).collect();
        let m = metrics(&scores, &gold);
        assert!(close(m.ndcg_at_10, 1.0));
        assert!(close(m.average_precision, 1.0));
    }

    #[test]
    fn non_finite_scores_rank_last() {
        // A NaN or an infinite score never ranks first, even on the relevant candidate.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let m = metrics(&[bad, 0.1, -5.0], &[0]);
            assert_eq!(m.first_relevant_rank, 3, "{bad}");
            assert_eq!(m.acc_at_1, 0.0, "{bad}");
            // Ahead of a non-finite one, a finite score ranks first.
            let m = metrics(&[bad, -5.0], &[1]);
            assert_eq!(m.first_relevant_rank, 1, "{bad}");
        }
        // A model whose every output is NaN ties everything, so it ranks the relevant last.
        let m = metrics(&[f32::NAN, f32::NAN, f32::INFINITY], &[0]);
        assert_eq!(m.first_relevant_rank, 3);
    }

    #[test]
    fn empty_gold_scores_zero_below_last_candidate() {
        let m = metrics(&[0.1, 0.2, 0.3], &[]);
        assert_eq!(
            m,
            QueryMetrics {
                acc_at_1: 0.0,
                acc_at_3: 0.0,
                mrr_at_10: 0.0,
                ndcg_at_10: 0.0,
                average_precision: 0.0,
                first_relevant_rank: 4,
            }
        );
        // Only out-of-range gold is the same as none.
        assert_eq!(metrics(&[0.1, 0.2, 0.3], &[3]), m);
        assert_eq!(metrics(&[], &[0]).first_relevant_rank, 1);
    }
}
