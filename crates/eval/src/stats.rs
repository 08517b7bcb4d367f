//! Aggregation with bootstrap confidence intervals, and paired comparison.

use std::f64::consts::LN_2;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::QueryMetrics;

/// A mean over queries with its 95% percentile-bootstrap confidence interval.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Mean metrics over a query set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub queries: usize,
    pub accuracy_at_1: Estimate,
    pub accuracy_at_3: Estimate,
    pub mrr_at_10: Estimate,
    pub ndcg_at_10: Estimate,
    pub map: Estimate,
}

/// How to resample. The seed makes every interval reproducible run to run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: 2000,
            seed: 0,
        }
    }
}

/// Paired comparison of model B against model A on the same queries.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// B - A, with a paired bootstrap CI (queries resampled together, so
    /// per-query difficulty cancels out instead of widening the interval).
    pub accuracy_at_1_diff: Estimate,
    pub accuracy_at_3_diff: Estimate,
    pub mrr_at_10_diff: Estimate,
    pub ndcg_at_10_diff: Estimate,
    pub map_diff: Estimate,
    /// Queries that only B got right at rank 1.
    pub b_only_correct: usize,
    /// Queries that only A got right at rank 1.
    pub a_only_correct: usize,
    /// Exact two-sided McNemar p-value on accuracy@1:
    /// `min(1, 2 * P[X <= min(b, c)])` with `X ~ Bin(b + c, 1/2)`; 1 when `b + c = 0`.
    pub mcnemar_p: f64,
}

/// Why a paired comparison could not be made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("model A has {a} queries but model B has {b}; a paired comparison needs the same queries in the same order")]
    LengthMismatch { a: usize, b: usize },
    #[error("no queries to compare")]
    Empty,
}

/// Aggregates per-query metrics. CIs come from resampling queries with
/// replacement using a seeded ChaCha8 generator, so they are deterministic.
///
/// With no queries every estimate is 0 and `queries` is 0; with zero
/// resamples the interval collapses to the mean.
pub fn summarize(per_query: &[QueryMetrics], boot: &Bootstrap) -> Metrics {
    let rows: Vec<[f64; 5]> = per_query.iter().map(row).collect();
    let [accuracy_at_1, accuracy_at_3, mrr_at_10, ndcg_at_10, map] = bootstrap(&rows, boot);
    Metrics {
        queries: per_query.len(),
        accuracy_at_1,
        accuracy_at_3,
        mrr_at_10,
        ndcg_at_10,
        map,
    }
}

/// Compares model B against model A, query by query; both slices must cover
/// the same queries in the same order.
pub fn compare(
    a: &[QueryMetrics],
    b: &[QueryMetrics],
    boot: &Bootstrap,
) -> Result<Comparison, EvalError> {
    let diffs = paired_diffs(a, b, row)?;
    let [accuracy_at_1_diff, accuracy_at_3_diff, mrr_at_10_diff, ndcg_at_10_diff, map_diff] =
        bootstrap(&diffs, boot);

    let hit = |q: &QueryMetrics| q.acc_at_1 > 0.5;
    let b_only_correct = a
        .iter()
        .zip(b)
        .filter(|(qa, qb)| hit(qb) && !hit(qa))
        .count();
    let a_only_correct = a
        .iter()
        .zip(b)
        .filter(|(qa, qb)| hit(qa) && !hit(qb))
        .count();

    Ok(Comparison {
        accuracy_at_1_diff,
        accuracy_at_3_diff,
        mrr_at_10_diff,
        ndcg_at_10_diff,
        map_diff,
        b_only_correct,
        a_only_correct,
        mcnemar_p: mcnemar_exact(b_only_correct, a_only_correct),
    })
}

/// The five averaged metrics, in the order `Metrics` lists them.
fn row(q: &QueryMetrics) -> [f64; 5] {
    [
        q.acc_at_1,
        q.acc_at_3,
        q.mrr_at_10,
        q.ndcg_at_10,
        q.average_precision,
    ]
}

/// Per-query B - A rows for two systems scored on the same queries in the
/// same order.
pub(crate) fn paired_diffs<T, const N: usize>(
    a: &[T],
    b: &[T],
    row: impl Fn(&T) -> [f64; N],
) -> Result<Vec<[f64; N]>, EvalError> {
    if a.len() != b.len() {
        return Err(EvalError::LengthMismatch {
            a: a.len(),
            b: b.len(),
        });
    }
    if a.is_empty() {
        return Err(EvalError::Empty);
    }
    Ok(a.iter()
        .zip(b)
        .map(|(qa, qb)| {
            let (ra, rb) = (row(qa), row(qb));
            std::array::from_fn(|m| rb[m] - ra[m])
        })
        .collect())
}

/// Column means with 95% percentile-bootstrap intervals. All columns share
/// the same resampled query sets, so the metrics stay mutually consistent.
pub(crate) fn bootstrap<const N: usize>(rows: &[[f64; N]], boot: &Bootstrap) -> [Estimate; N] {
    let n = rows.len();
    if n == 0 {
        return std::array::from_fn(|_| Estimate {
            mean: 0.0,
            ci_low: 0.0,
            ci_high: 0.0,
        });
    }
    // Identical queries make every resample add up exactly like the point
    // estimate, so the interval then degenerates to the mean bit for bit.
    let mean = column_means(rows.iter(), n);
    let mut rng = ChaCha8Rng::seed_from_u64(boot.seed);
    let mut draws: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(boot.resamples));
    for _ in 0..boot.resamples {
        let resample = (0..n).map(|_| &rows[rng.random_range(0..n)]);
        for (d, m) in draws.iter_mut().zip(column_means(resample, n)) {
            d.push(m);
        }
    }

    std::array::from_fn(|m| {
        let d = &mut draws[m];
        d.sort_by(f64::total_cmp);
        Estimate {
            mean: mean[m],
            ci_low: percentile(d, 0.025).unwrap_or(mean[m]),
            ci_high: percentile(d, 0.975).unwrap_or(mean[m]),
        }
    })
}

fn column_means<'a, const N: usize>(
    rows: impl Iterator<Item = &'a [f64; N]>,
    n: usize,
) -> [f64; N] {
    let mut sum = [0.0f64; N];
    for row in rows {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    sum.map(|s| s / n as f64)
}

/// Random sign vectors drawn by [`sign_flip_p`]: p-values resolve to about
/// 1e-4, and at p = 0.05 the Monte Carlo standard error is about 0.002.
const SIGN_FLIPS: usize = 10_000;

/// Two-sided paired randomization (sign-flip) test, one p-value per column.
///
/// Under "no difference" each query's B - A is as likely to carry either
/// sign, so `p = (1 + #{draws with |mean(s_i d_i)| >= |mean(d)|}) / (R + 1)`:
/// counting the observed assignment as a draw keeps the Monte Carlo p-value
/// valid (never 0), and all-zero differences give exactly 1. The `1e-12`
/// slack keeps summation-order rounding from hiding exact ties. Every draw
/// flips all columns with one sign vector, like the bootstrap shares its
/// resamples. The generator is seeded from `seed` xor a constant, so the
/// signs do not reuse the bootstrap's stream. `diffs` must not be empty.
pub(crate) fn sign_flip_p<const N: usize>(diffs: &[[f64; N]], seed: u64) -> [f64; N] {
    let n = diffs.len() as f64;
    let observed = column_means(diffs.iter(), diffs.len()).map(f64::abs);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5349_474e_464c_4950);
    let mut hits = [0usize; N];
    for _ in 0..SIGN_FLIPS {
        let mut sum = [0.0f64; N];
        // One random bit per query, 64 queries per draw from the generator.
        for chunk in diffs.chunks(64) {
            let mut signs: u64 = rng.random();
            for row in chunk {
                let flip = signs & 1 == 1;
                signs >>= 1;
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += if flip { -v } else { *v };
                }
            }
        }
        for ((h, s), o) in hits.iter_mut().zip(sum).zip(observed) {
            if (s / n).abs() >= o - 1e-12 {
                *h += 1;
            }
        }
    }
    hits.map(|h| (1 + h) as f64 / (SIGN_FLIPS + 1) as f64)
}

/// Linear interpolation between closest ranks of an ascending slice.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q * last as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Exact two-sided McNemar test: `min(1, 2 * P[X <= min(b, c)])`, `X ~ Bin(b + c, 1/2)`.
///
/// `C(n, k) / 2^n` overflows f64 long before n gets interesting, so the tail
/// is summed relative to its largest term and scaled back in log space.
fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // ln C(n, k) = sum over i of ln((n - k + i) / i).
    let ln_choose_k: f64 = (1..=k).map(|i| ((n - k + i) as f64 / i as f64).ln()).sum();
    // k <= n / 2, so C(n, i) grows with i up to k: walk down from C(n, k) = 1
    // (relative) using C(n, i - 1) / C(n, i) = i / (n - i + 1).
    let mut term = 1.0;
    let mut relative_sum = 1.0;
    for i in (1..=k).rev() {
        term *= i as f64 / (n - i + 1) as f64;
        relative_sum += term;
    }
    let ln_tail = ln_choose_k + relative_sum.ln() - n as f64 * LN_2;
    (2.0 * ln_tail.exp()).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(acc1: f64, acc3: f64, mrr: f64, ndcg: f64, ap: f64) -> QueryMetrics {
        QueryMetrics {
            acc_at_1: acc1,
            acc_at_3: acc3,
            mrr_at_10: mrr,
            ndcg_at_10: ndcg,
            average_precision: ap,
            first_relevant_rank: if acc1 > 0.5 { 1 } else { 2 },
        }
    }

    /// A varied but reproducible query set.
    fn sample(n: usize, offset: usize) -> Vec<QueryMetrics> {
        (0..n)
            .map(|i| {
                let r = (i * 7 + offset) % 5 + 1;
                let rr = 1.0 / r as f64;
                q(
                    if r == 1 { 1.0 } else { 0.0 },
                    if r <= 3 { 1.0 } else { 0.0 },
                    rr,
                    rr,
                    rr,
                )
            })
            .collect()
    }

    fn contains(e: &Estimate) -> bool {
        e.ci_low <= e.mean && e.mean <= e.ci_high
    }

    #[test]
    fn mcnemar_known_values() {
        // (1 + 12 + 66) / 4096 * 2; log space costs a few ulps, nothing more.
        assert!((mcnemar_exact(10, 2) - 0.03857421875).abs() < 1e-14);
        assert!((mcnemar_exact(2, 10) - 0.03857421875).abs() < 1e-14);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        // One discordant query: P[X <= 0] = 1/2, doubled.
        assert_eq!(mcnemar_exact(1, 0), 1.0);
        // (1 / 2^6) * 2
        assert!((mcnemar_exact(6, 0) - 0.03125).abs() < 1e-14);
    }

    #[test]
    fn mcnemar_large_n_matches_pascal_recursion() {
        let (b, c) = (600, 500);
        let p = mcnemar_exact(b, c);
        assert!(p.is_finite() && p > 0.0 && p < 1.0);

        // Independent exact computation: build Bin(n, 1/2) one coin at a time
        // in linear space (probabilities never exceed 1, so nothing overflows).
        let n = b + c;
        let mut pmf = vec![0.0f64; n + 1];
        pmf[0] = 1.0;
        for coins in 1..=n {
            for i in (1..=coins).rev() {
                pmf[i] = 0.5 * (pmf[i] + pmf[i - 1]);
            }
            pmf[0] *= 0.5;
        }
        let exact: f64 = 2.0 * pmf[..=c].iter().sum::<f64>();
        assert!(
            (p - exact).abs() / exact < 1e-9,
            "log-space {p} vs recursion {exact}"
        );

        // And the continuity-corrected normal approximation agrees roughly.
        let z = ((b - c) as f64 - 1.0) / (n as f64).sqrt();
        let normal = erfc(z / std::f64::consts::SQRT_2);
        assert!(
            (p - normal).abs() / normal < 0.05,
            "exact {p} vs normal {normal}"
        );
        assert!((p - 0.0029).abs() < 2e-4);
    }

    /// Complementary error function (Numerical Recipes' erfcc, |rel err| < 1.2e-7).
    fn erfc(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.5 * x.abs());
        let poly = -x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77))))))));
        let r = t * poly.exp();
        if x >= 0.0 {
            r
        } else {
            2.0 - r
        }
    }

    #[test]
    fn summarize_means_and_intervals() {
        let per_query = sample(200, 0);
        let m = summarize(&per_query, &Bootstrap::default());
        assert_eq!(m.queries, 200);
        // r cycles through 1, 3, 5, 2, 4: acc@1 = 1/5, acc@3 = 3/5.
        assert!((m.accuracy_at_1.mean - 0.2).abs() < 1e-12);
        assert!((m.accuracy_at_3.mean - 0.6).abs() < 1e-12);
        let mrr = (1.0 + 1.0 / 2.0 + 1.0 / 3.0 + 1.0 / 4.0 + 1.0 / 5.0) / 5.0;
        assert!((m.mrr_at_10.mean - mrr).abs() < 1e-12);
        for e in [
            &m.accuracy_at_1,
            &m.accuracy_at_3,
            &m.mrr_at_10,
            &m.ndcg_at_10,
            &m.map,
        ] {
            assert!(contains(e), "{e:?}");
            assert!(
                e.ci_low < e.ci_high,
                "varied queries give a real interval: {e:?}"
            );
        }
        // Binomial sd of acc@1 is sqrt(0.2 * 0.8 / 200) ~ 0.028, so the 95%
        // interval should span roughly +-0.055.
        let width = m.accuracy_at_1.ci_high - m.accuracy_at_1.ci_low;
        assert!(width > 0.08 && width < 0.14, "width {width}");
    }

    #[test]
    fn summarize_is_deterministic_per_seed() {
        let per_query = sample(50, 3);
        let boot = Bootstrap {
            resamples: 500,
            seed: 7,
        };
        assert_eq!(summarize(&per_query, &boot), summarize(&per_query, &boot));
        let other = summarize(
            &per_query,
            &Bootstrap {
                resamples: 500,
                seed: 8,
            },
        );
        assert_ne!(summarize(&per_query, &boot), other);
    }

    #[test]
    fn summarize_degenerates_when_queries_agree() {
        let per_query = vec![q(0.0, 1.0, 1.0 / 3.0, 0.5, 1.0 / 3.0); 37];
        let m = summarize(&per_query, &Bootstrap::default());
        for (e, v) in [
            (&m.accuracy_at_1, 0.0),
            (&m.accuracy_at_3, 1.0),
            (&m.ndcg_at_10, 0.5),
        ] {
            assert_eq!(
                e,
                &Estimate {
                    mean: v,
                    ci_low: v,
                    ci_high: v
                }
            );
        }
        assert_eq!(m.mrr_at_10.ci_low, m.mrr_at_10.mean);
        assert_eq!(m.mrr_at_10.ci_high, m.mrr_at_10.mean);
    }

    #[test]
    fn summarize_edge_cases() {
        let empty = summarize(&[], &Bootstrap::default());
        assert_eq!(empty.queries, 0);
        assert_eq!(
            empty.map,
            Estimate {
                mean: 0.0,
                ci_low: 0.0,
                ci_high: 0.0
            }
        );
        let no_resampling = summarize(
            &sample(10, 0),
            &Bootstrap {
                resamples: 0,
                seed: 0,
            },
        );
        let e = no_resampling.accuracy_at_3;
        assert_eq!((e.ci_low, e.ci_high), (e.mean, e.mean));
    }

    #[test]
    fn compare_identical_models() {
        let a = sample(100, 1);
        let c = compare(&a, &a, &Bootstrap::default()).unwrap();
        for e in [
            &c.accuracy_at_1_diff,
            &c.accuracy_at_3_diff,
            &c.mrr_at_10_diff,
            &c.ndcg_at_10_diff,
            &c.map_diff,
        ] {
            assert_eq!(
                e,
                &Estimate {
                    mean: 0.0,
                    ci_low: 0.0,
                    ci_high: 0.0
                }
            );
        }
        assert_eq!(
            (c.b_only_correct, c.a_only_correct, c.mcnemar_p),
            (0, 0, 1.0)
        );
    }

    #[test]
    fn compare_counts_discordant_queries() {
        // B wins 10 queries A loses, A wins 2 that B loses, 8 both right.
        let right = q(1.0, 1.0, 1.0, 1.0, 1.0);
        let wrong = q(0.0, 0.0, 0.0, 0.0, 0.0);
        let mut a = vec![wrong.clone(); 10];
        let mut b = vec![right.clone(); 10];
        a.extend(vec![right.clone(); 2]);
        b.extend(vec![wrong.clone(); 2]);
        a.extend(vec![right.clone(); 8]);
        b.extend(vec![right.clone(); 8]);
        let c = compare(&a, &b, &Bootstrap::default()).unwrap();
        assert_eq!((c.b_only_correct, c.a_only_correct), (10, 2));
        assert!((c.mcnemar_p - 0.03857421875).abs() < 1e-14);
        // (10 - 2) / 20 queries
        assert!((c.accuracy_at_1_diff.mean - 0.4).abs() < 1e-12);
        assert!(contains(&c.accuracy_at_1_diff));
        assert!(
            c.accuracy_at_1_diff.ci_low > 0.0,
            "{:?}",
            c.accuracy_at_1_diff
        );
    }

    #[test]
    fn compare_rejects_unpaired_input() {
        let a = sample(3, 0);
        let b = sample(4, 0);
        let boot = Bootstrap::default();
        assert_eq!(
            compare(&a, &b, &boot).unwrap_err(),
            EvalError::LengthMismatch { a: 3, b: 4 }
        );
        assert_eq!(compare(&[], &[], &boot).unwrap_err(), EvalError::Empty);
    }
}
