//! Retrieval metrics with graded relevance, defined as trec_eval (through
//! pytrec_eval, as BEIR's `EvaluateRetrieval` uses it) defines them, so the
//! numbers are comparable with published BEIR results; plus their summaries
//! and a paired comparison with a randomization test.

use serde::{Deserialize, Serialize};

use crate::order::pessimistic_order;
use crate::query::discount;
use crate::stats::{bootstrap, paired_diffs, sign_flip_p};
use crate::{Bootstrap, Estimate, EvalError};

/// One query of a retrieval evaluation: the candidates a system returned for it (e.g. a first
/// stage's top-100, possibly reranked), each candidate's score (higher is better; order in the Vec
/// is irrelevant, scores decide), each candidate's relevance grade from the qrels (0 = not relevant
/// or not judged), and the grades of EVERY document judged relevant (grade > 0) for this query in
/// the whole collection, retrieved or not: ideal DCG and recall's denominator need them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetrievalQuery {
    pub scores: Vec<f64>,
    pub grades: Vec<u32>,
    pub relevant: Vec<u32>,
}

/// One query's retrieval metrics; see [`retrieval_metrics`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    pub map_at_100: f64,
}

/// Metrics for one query, as trec_eval's `ndcg_cut_10`, `recall_10`,
/// `recall_100` and `map_cut_100` and BEIR's MRR@10 compute them:
///
/// - nDCG@10: gain = grade (linear, trec_eval's default), discount
///   `1 / log2(rank + 1)`; the ideal DCG ranks all of `relevant`, retrieved
///   or not, best first.
/// - Recall@k: relevant candidates in the top k over all relevant documents.
/// - MRR@10: `1 / rank` of the first relevant candidate, 0 below rank 10.
/// - MAP@100: precision at each relevant candidate's rank up to 100, summed
///   and divided by the count of ALL relevant documents (not capped at 100).
///
/// Ranking is [`crate::by_score_desc`]'s: by score, descending, NaN and
/// infinite scores after every finite one. trec_eval breaks ties by document
/// id, which we do not have; ties here are pessimistic instead (lower grades
/// first), so a tie never flatters the system.
///
/// With no relevant document (`relevant` empty; zero grades in it are
/// judged non-relevant, as in qrels, and do not count) every metric is 0:
/// such queries are undefined and should be refused before this point.
/// Candidates graded relevant beyond what `relevant` lists are the caller's
/// inconsistency; the metrics are clamped to 1 so it cannot inflate them.
///
/// # Panics
///
/// If `scores` and `grades` differ in length.
pub fn retrieval_metrics(q: &RetrievalQuery) -> RetrievalMetrics {
    assert_eq!(
        q.scores.len(),
        q.grades.len(),
        "each candidate needs one score and one grade"
    );
    let mut ideal: Vec<u32> = q.relevant.iter().copied().filter(|&g| g > 0).collect();
    if ideal.is_empty() {
        return RetrievalMetrics {
            ndcg_at_10: 0.0,
            recall_at_10: 0.0,
            recall_at_100: 0.0,
            mrr_at_10: 0.0,
            map_at_100: 0.0,
        };
    }
    let num_relevant = ideal.len() as f64;
    ideal.sort_unstable_by(|a, b| b.cmp(a));

    // Grades in rank order; rank r (1-based) is index r - 1.
    let grades: Vec<u32> = pessimistic_order(&q.scores, &q.grades)
        .into_iter()
        .take(100)
        .map(|i| q.grades[i])
        .collect();

    let dcg = |gains: &[u32]| -> f64 {
        gains
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, &g)| g as f64 * discount(i + 1))
            .sum()
    };
    let hits_within = |k: usize| grades.iter().take(k).filter(|&&g| g > 0).count() as f64;
    let first_hit = grades.iter().take(10).position(|&g| g > 0);
    let (mut hits, mut precision_sum) = (0.0, 0.0);
    for (i, &g) in grades.iter().enumerate() {
        if g > 0 {
            hits += 1.0;
            precision_sum += hits / (i + 1) as f64;
        }
    }

    RetrievalMetrics {
        ndcg_at_10: (dcg(&grades) / dcg(&ideal)).min(1.0),
        recall_at_10: (hits_within(10) / num_relevant).min(1.0),
        recall_at_100: (hits_within(100) / num_relevant).min(1.0),
        mrr_at_10: first_hit.map_or(0.0, |i| 1.0 / (i + 1) as f64),
        map_at_100: (precision_sum / num_relevant).min(1.0),
    }
}

/// Mean retrieval metrics over a query set, with 95% bootstrap CIs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalSummary {
    pub queries: usize,
    pub ndcg_at_10: Estimate,
    pub recall_at_10: Estimate,
    pub recall_at_100: Estimate,
    pub mrr_at_10: Estimate,
    pub map_at_100: Estimate,
}

/// Aggregates per-query retrieval metrics with the same seeded bootstrap as
/// [`crate::summarize`]; no queries give zeros.
pub fn summarize_retrieval(per_query: &[RetrievalMetrics], boot: &Bootstrap) -> RetrievalSummary {
    let rows: Vec<[f64; 5]> = per_query.iter().map(row).collect();
    let [ndcg_at_10, recall_at_10, recall_at_100, mrr_at_10, map_at_100] = bootstrap(&rows, boot);
    RetrievalSummary {
        queries: per_query.len(),
        ndcg_at_10,
        recall_at_10,
        recall_at_100,
        mrr_at_10,
        map_at_100,
    }
}

/// B − A on one metric: the mean paired difference with its paired-bootstrap 95% CI, and the
/// two-sided p-value of a paired randomization (sign-flip) test.
///
/// The test draws 10 000 random sign vectors from a generator seeded by
/// `Bootstrap::seed` (`resamples` does not change it), so p is reproducible
/// and never below 1/10 001.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDiff {
    pub diff: Estimate,
    pub p_value: f64,
}

/// System B against system A on every retrieval metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalComparison {
    pub ndcg_at_10: PairedDiff,
    pub recall_at_10: PairedDiff,
    pub recall_at_100: PairedDiff,
    pub mrr_at_10: PairedDiff,
    pub map_at_100: PairedDiff,
}

/// Compares system B against system A; both slices must cover the same
/// queries in the same order. The randomization test is the usual choice for
/// IR significance (Smucker et al., 2007) and needs no normality assumption.
pub fn compare_retrieval(
    a: &[RetrievalMetrics],
    b: &[RetrievalMetrics],
    boot: &Bootstrap,
) -> Result<RetrievalComparison, EvalError> {
    let diffs = paired_diffs(a, b, row)?;
    let diff = bootstrap(&diffs, boot);
    let p = sign_flip_p(&diffs, boot.seed);
    let [ndcg_at_10, recall_at_10, recall_at_100, mrr_at_10, map_at_100] =
        std::array::from_fn(|m| PairedDiff {
            diff: diff[m].clone(),
            p_value: p[m],
        });
    Ok(RetrievalComparison {
        ndcg_at_10,
        recall_at_10,
        recall_at_100,
        mrr_at_10,
        map_at_100,
    })
}

/// The five metrics, in the order the structs list them.
fn row(m: &RetrievalMetrics) -> [f64; 5] {
    [
        m.ndcg_at_10,
        m.recall_at_10,
        m.recall_at_100,
        m.mrr_at_10,
        m.map_at_100,
    ]
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn metrics(scores: &[f64], grades: &[u32], relevant: &[u32]) -> RetrievalMetrics {
        retrieval_metrics(&RetrievalQuery {
            scores: scores.to_vec(),
            grades: grades.to_vec(),
            relevant: relevant.to_vec(),
        })
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn assert_close(got: &RetrievalMetrics, want: &RetrievalMetrics) {
        for (g, w) in row(got).into_iter().zip(row(want)) {
            assert!(close(g, w), "got {got:?}\nwant {want:?}");
        }
    }

    /// Descending scores 1.0, 0.99, ... so candidate i sits at rank i + 1.
    fn descending(n: usize) -> Vec<f64> {
        (0..n).map(|i| 1.0 - i as f64 * 1e-3).collect()
    }

    #[test]
    fn graded_relevance_with_an_unretrieved_document() {
        // Ranking: g0, g2, g0, g1. A third relevant document (grade 1) was
        // not retrieved: it lowers recall and still counts in the ideal DCG.
        let want = RetrievalMetrics {
            ndcg_at_10: (2.0 / 3f64.log2() + 1.0 / 5f64.log2()) / (2.0 + 1.0 / 3f64.log2() + 0.5),
            recall_at_10: 2.0 / 3.0,
            recall_at_100: 2.0 / 3.0,
            mrr_at_10: 0.5,
            // (1/2 + 2/4) / 3
            map_at_100: 1.0 / 3.0,
        };
        let m = metrics(&[0.9, 0.8, 0.7, 0.6], &[0, 2, 0, 1], &[1, 2, 1]);
        assert_close(&m, &want);
        // Candidate order is irrelevant: only scores decide.
        let shuffled = metrics(&[0.6, 0.9, 0.7, 0.8], &[1, 0, 0, 2], &[2, 1, 1]);
        assert_eq!(m, shuffled);
        // Linear gain: a grade-3 document at rank 1 alone has DCG 3.
        let m = metrics(&[0.5, 0.4], &[3, 0], &[3, 3]);
        assert!(close(m.ndcg_at_10, 3.0 / (3.0 + 3.0 / 3f64.log2())));
    }

    #[test]
    fn ties_are_pessimistic() {
        // All scores equal: the one relevant candidate goes last.
        let m = metrics(&[0.3; 4], &[1, 0, 0, 0], &[1]);
        assert_close(
            &m,
            &RetrievalMetrics {
                ndcg_at_10: 1.0 / 5f64.log2(),
                recall_at_10: 1.0,
                recall_at_100: 1.0,
                mrr_at_10: 0.25,
                map_at_100: 0.25,
            },
        );
        // Graded ties: lower grades first, so 0, 1, 2 within the tie, while
        // the untied top candidate keeps rank 1.
        let m = metrics(&[0.5, 0.5, 0.5, 0.9], &[2, 0, 1, 0], &[2, 1]);
        let dcg = 1.0 / 4f64.log2() + 2.0 / 5f64.log2();
        assert!(close(m.ndcg_at_10, dcg / (2.0 + 1.0 / 3f64.log2())));
        assert!(close(m.mrr_at_10, 1.0 / 3.0));
        // Signed zeros are the same score, so they tie too.
        let m = metrics(&[0.0, -0.0], &[1, 0], &[1]);
        assert!(close(m.mrr_at_10, 0.5));
    }

    #[test]
    fn non_finite_scores_rank_last() {
        let m = metrics(&[f64::NAN, f64::NEG_INFINITY, 0.0], &[1, 0, 0], &[1]);
        assert!(close(m.mrr_at_10, 1.0 / 3.0));
        // +inf is no better: it ranks after every finite score.
        let m = metrics(&[f64::INFINITY, -7.0], &[1, 0], &[1]);
        assert!(close(m.mrr_at_10, 0.5));
        // Non-finite scores tie with one another, and ties stay pessimistic.
        let m = metrics(&[f64::NAN, f64::NEG_INFINITY], &[0, 1], &[1]);
        assert!(close(m.mrr_at_10, 0.5));
        let m = metrics(&[f64::NAN, f64::NAN], &[1, 0], &[1]);
        assert!(close(m.mrr_at_10, 0.5));
    }

    #[test]
    fn cutoffs_at_ten_and_hundred() {
        // Relevant candidates at ranks 10, 11, 100 and 101 of 120.
        let mut grades = vec![0; 120];
        for r in [10, 11, 100, 101] {
            grades[r - 1] = 1;
        }
        let m = metrics(&descending(120), &grades, &[1; 4]);
        let ideal = 1.0 + 1.0 / 3f64.log2() + 0.5 + 1.0 / 5f64.log2();
        assert_close(
            &m,
            &RetrievalMetrics {
                ndcg_at_10: (1.0 / 11f64.log2()) / ideal,
                recall_at_10: 0.25,
                recall_at_100: 0.75,
                mrr_at_10: 0.1,
                // Rank 101 is past the cut-off but still in the denominator.
                map_at_100: (1.0 / 10.0 + 2.0 / 11.0 + 3.0 / 100.0) / 4.0,
            },
        );
        // Nothing in the top 10: MRR@10 and nDCG@10 are 0.
        grades[9] = 0;
        let m = metrics(&descending(120), &grades, &[1; 4]);
        assert_eq!((m.mrr_at_10, m.ndcg_at_10, m.recall_at_10), (0.0, 0.0, 0.0));
    }

    #[test]
    fn map_divides_by_all_relevant_documents() {
        // 150 relevant documents, one retrieved at rank 1: 1/150, not 1/100.
        let m = metrics(&[0.9, 0.1], &[1, 0], &[1; 150]);
        assert!(close(m.map_at_100, 1.0 / 150.0));
        assert!(close(m.recall_at_100, 1.0 / 150.0));
        // The ideal DCG is capped at ten documents, so nDCG is too.
        let all: Vec<u32> = vec![1; 12];
        let m = metrics(&descending(12), &all, &all);
        assert_eq!(
            (m.ndcg_at_10, m.map_at_100, m.recall_at_10),
            (1.0, 1.0, 10.0 / 12.0)
        );
    }

    #[test]
    fn no_relevant_documents_score_zero() {
        let zero = RetrievalMetrics {
            ndcg_at_10: 0.0,
            recall_at_10: 0.0,
            recall_at_100: 0.0,
            mrr_at_10: 0.0,
            map_at_100: 0.0,
        };
        assert_eq!(metrics(&[0.9, 0.1], &[1, 0], &[]), zero);
        // Grade 0 in `relevant` is a judged non-relevant document.
        assert_eq!(metrics(&[0.9, 0.1], &[0, 0], &[0, 0]), zero);
        let m = metrics(&[0.9], &[0], &[0, 1]);
        assert_eq!(m.ndcg_at_10, 0.0);
        assert_eq!(metrics(&[], &[], &[2]).recall_at_100, 0.0);
    }

    #[test]
    fn inconsistent_grades_cannot_exceed_one() {
        // Two candidates graded relevant, but `relevant` lists only one.
        let m = metrics(&[0.9, 0.8], &[2, 2], &[1]);
        assert_eq!((m.recall_at_10, m.recall_at_100), (1.0, 1.0));
        assert_eq!((m.ndcg_at_10, m.map_at_100, m.mrr_at_10), (1.0, 1.0, 1.0));
    }

    #[test]
    #[should_panic(expected = "one score and one grade")]
    fn mismatched_candidates_panic() {
        metrics(&[0.9, 0.8], &[1], &[1]);
    }

    /// Independent brute force: a candidate's rank is 1 + the number of
    /// candidates ranked before it, decided pairwise; every metric is then
    /// a sum over candidates instead of a walk down a sorted list.
    fn brute_force(q: &RetrievalQuery) -> RetrievalMetrics {
        let n = q.scores.len();
        let above = |j: usize, i: usize| {
            let (sj, si) = (q.scores[j], q.scores[i]);
            let tied = (!sj.is_finite() && !si.is_finite()) || sj == si;
            if tied {
                (q.grades[j], j) < (q.grades[i], i)
            } else {
                !si.is_finite() || (sj.is_finite() && sj > si)
            }
        };
        let rank: Vec<usize> = (0..n)
            .map(|i| 1 + (0..n).filter(|&j| j != i && above(j, i)).count())
            .collect();
        let rel: Vec<usize> = (0..n).filter(|&i| q.grades[i] > 0).collect();
        let total = q.relevant.iter().filter(|&&g| g > 0).count() as f64;
        let within = |k: usize| rel.iter().filter(|&&i| rank[i] <= k).count() as f64 / total;
        let dcg: f64 = rel
            .iter()
            .filter(|&&i| rank[i] <= 10)
            .map(|&i| q.grades[i] as f64 / ((rank[i] + 1) as f64).log2())
            .sum();
        let mut ideal = q.relevant.clone();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, &g)| g as f64 / ((i + 2) as f64).log2())
            .sum();
        let ap: f64 = rel
            .iter()
            .filter(|&&i| rank[i] <= 100)
            .map(|&i| rel.iter().filter(|&&j| rank[j] <= rank[i]).count() as f64 / rank[i] as f64)
            .sum();
        RetrievalMetrics {
            ndcg_at_10: dcg / idcg,
            recall_at_10: within(10),
            recall_at_100: within(100),
            mrr_at_10: rel
                .iter()
                .filter(|&&i| rank[i] <= 10)
                .map(|&i| 1.0 / rank[i] as f64)
                .fold(0.0, f64::max),
            map_at_100: ap / total,
        }
    }

    #[test]
    fn matches_brute_force_on_random_queries() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        for _ in 0..300 {
            let n = rng.random_range(0..150);
            // Few distinct scores, so ties are common; some NaN and infinities.
            let scores: Vec<f64> = (0..n)
                .map(|_| match rng.random_range(0..21) {
                    0 => f64::NAN,
                    1 => f64::NEG_INFINITY,
                    2 => f64::INFINITY,
                    s => s as f64 / 4.0,
                })
                .collect();
            let grades: Vec<u32> = (0..n)
                .map(|_| {
                    if rng.random_bool(0.2) {
                        rng.random_range(1..=3)
                    } else {
                        0
                    }
                })
                .collect();
            // Every retrieved relevant document, plus some never retrieved.
            let mut relevant: Vec<u32> = grades.iter().copied().filter(|&g| g > 0).collect();
            relevant.extend((0..rng.random_range(1..6)).map(|_| rng.random_range(1..=3)));
            let q = RetrievalQuery {
                scores,
                grades,
                relevant,
            };
            assert_close(&retrieval_metrics(&q), &brute_force(&q));
        }
    }

    fn same(v: f64) -> RetrievalMetrics {
        RetrievalMetrics {
            ndcg_at_10: v,
            recall_at_10: v,
            recall_at_100: v,
            mrr_at_10: v,
            map_at_100: v,
        }
    }

    fn diffs(c: &RetrievalComparison) -> [&PairedDiff; 5] {
        [
            &c.ndcg_at_10,
            &c.recall_at_10,
            &c.recall_at_100,
            &c.mrr_at_10,
            &c.map_at_100,
        ]
    }

    #[test]
    fn summarize_means_and_intervals() {
        // Each metric gets its own scale, so a swapped column shows.
        let per_query: Vec<RetrievalMetrics> = (0..50)
            .map(|i| {
                let v = (i % 5) as f64 / 4.0;
                RetrievalMetrics {
                    ndcg_at_10: v,
                    recall_at_10: v / 2.0,
                    recall_at_100: v / 4.0,
                    mrr_at_10: v / 8.0,
                    map_at_100: v / 16.0,
                }
            })
            .collect();
        let s = summarize_retrieval(&per_query, &Bootstrap::default());
        assert_eq!(s.queries, 50);
        for (e, mean) in [
            (&s.ndcg_at_10, 0.5),
            (&s.recall_at_10, 0.25),
            (&s.recall_at_100, 0.125),
            (&s.mrr_at_10, 0.0625),
            (&s.map_at_100, 0.03125),
        ] {
            assert!(close(e.mean, mean), "{e:?}");
            assert!(e.ci_low < mean && mean < e.ci_high, "{e:?}");
        }
        assert_eq!(summarize_retrieval(&[], &Bootstrap::default()).queries, 0);
    }

    #[test]
    fn identical_systems_differ_by_nothing() {
        let a: Vec<RetrievalMetrics> = (0..30).map(|i| same((i % 7) as f64 / 6.0)).collect();
        let c = compare_retrieval(&a, &a, &Bootstrap::default()).unwrap();
        for d in diffs(&c) {
            assert_eq!(
                d,
                &PairedDiff {
                    diff: Estimate {
                        mean: 0.0,
                        ci_low: 0.0,
                        ci_high: 0.0
                    },
                    p_value: 1.0
                }
            );
        }
    }

    #[test]
    fn better_on_every_query_is_significant() {
        let a: Vec<RetrievalMetrics> = (0..40).map(|i| same(i as f64 / 80.0)).collect();
        let b: Vec<RetrievalMetrics> = (0..40)
            .map(|i| same(i as f64 / 80.0 + 0.1 + (i % 3) as f64 * 0.05))
            .collect();
        let c = compare_retrieval(&a, &b, &Bootstrap::default()).unwrap();
        for d in diffs(&c) {
            // Exact p is 2 / 2^40; with 10 000 draws the floor is 1 / 10 001.
            assert!(d.p_value < 0.001, "{d:?}");
            assert!(close(d.diff.mean, 0.15 - 0.05 / 40.0), "{d:?}");
            assert!(d.diff.ci_low > 0.0, "{d:?}");
        }
        // B - A, not A - B.
        let c = compare_retrieval(&b, &a, &Bootstrap::default()).unwrap();
        assert!(c.map_at_100.diff.mean < 0.0);
    }

    #[test]
    fn comparison_keeps_metrics_apart() {
        let b = RetrievalMetrics {
            ndcg_at_10: 0.5,
            recall_at_10: 0.25,
            recall_at_100: 0.125,
            mrr_at_10: 0.0625,
            map_at_100: 0.03125,
        };
        let c = compare_retrieval(
            &[same(0.0)],
            std::slice::from_ref(&b),
            &Bootstrap::default(),
        )
        .unwrap();
        let got = diffs(&c).map(|d| d.diff.mean);
        assert_eq!(got, row(&b));
    }

    /// Mixed-sign differences with a p-value well inside (0, 1).
    fn mixed() -> (Vec<RetrievalMetrics>, Vec<RetrievalMetrics>, Vec<f64>) {
        let d = [
            0.3, 0.1, -0.2, 0.4, 0.05, -0.1, 0.25, 0.15, -0.3, 0.2, 0.1, -0.05,
        ];
        let a = vec![same(0.5); d.len()];
        let b = d.iter().map(|&x| same(0.5 + x)).collect();
        (a, b, d.to_vec())
    }

    #[test]
    fn p_value_matches_exact_enumeration() {
        let (a, b, d) = mixed();
        // Recompute the differences as compare_retrieval will see them.
        let d: Vec<f64> = d.iter().map(|x| (0.5 + x) - 0.5).collect();
        let n = d.len();
        let observed = (d.iter().sum::<f64>() / n as f64).abs();
        let extreme = (0u32..1 << n)
            .filter(|mask| {
                let s: f64 = (0..n)
                    .map(|i| if mask >> i & 1 == 1 { -d[i] } else { d[i] })
                    .sum();
                (s / n as f64).abs() >= observed - 1e-12
            })
            .count();
        let exact = extreme as f64 / (1u32 << n) as f64;
        assert!(
            exact > 0.02 && exact < 0.5,
            "pick a mid-range case: {exact}"
        );
        let c = compare_retrieval(&a, &b, &Bootstrap::default()).unwrap();
        // Monte Carlo sd is at most 0.005; allow four of them.
        assert!(
            (c.ndcg_at_10.p_value - exact).abs() < 0.02,
            "{:?} vs {exact}",
            c.ndcg_at_10
        );
    }

    #[test]
    fn p_value_is_reproducible_and_shares_signs_across_metrics() {
        let (a, b, _) = mixed();
        let boot = Bootstrap::default();
        let c = compare_retrieval(&a, &b, &boot).unwrap();
        assert_eq!(c, compare_retrieval(&a, &b, &boot).unwrap());
        // Equal differences on every metric and one sign vector per draw
        // give equal p-values.
        for d in diffs(&c) {
            assert_eq!(d.p_value, c.ndcg_at_10.p_value);
        }
        let other = compare_retrieval(&a, &b, &Bootstrap { seed: 1, ..boot }).unwrap();
        assert_ne!(other.ndcg_at_10.p_value, c.ndcg_at_10.p_value);
    }

    #[test]
    fn unpaired_input_is_refused() {
        let boot = Bootstrap::default();
        assert_eq!(
            compare_retrieval(&[same(0.1)], &[same(0.1), same(0.2)], &boot).unwrap_err(),
            EvalError::LengthMismatch { a: 1, b: 2 }
        );
        assert_eq!(
            compare_retrieval(&[], &[], &boot).unwrap_err(),
            EvalError::Empty
        );
    }
}
