//! Calibration: turning a reranker's raw scores into probabilities of relevance a user can
//! threshold (Platt scaling), and measuring how far probabilities are from the outcomes they
//! predict (expected calibration error).
//!
//! Pure math over (raw score, is relevant) pairs; which raw score (a logit, a cosine) is the
//! caller's business.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Equal-width probability bins for the expected calibration error: the usual choice, coarse
/// enough that a few hundred pairs fill each bin that matters.
pub const ECE_BINS: usize = 10;

/// A Platt mapping: probability = sigmoid(scale × raw + bias).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub scale: f64,
    pub bias: f64,
}

impl Platt {
    pub fn probability(&self, raw: f64) -> f64 {
        sigmoid(self.scale * raw + self.bias)
    }
}

/// Why a calibration could not be fitted.
#[derive(Debug, Error, PartialEq)]
pub enum CalibrationError {
    #[error(
        "calibration needs both relevant and non-relevant pairs, and these {pairs} pairs hold \
         {positives} relevant ones"
    )]
    OneClass { pairs: usize, positives: usize },
    #[error("a raw score is not a finite number")]
    NonFinite,
    #[error(
        "too few queries to measure the fit on pairs it was not fitted on: each half of the \
         queries needs relevant and non-relevant pairs"
    )]
    TooFewQueries,
    #[error(
        "the scores fall as relevance rises (fitted scale {0:.4}): a mapping that kept this \
         model's ranking could not calibrate it"
    )]
    NotIncreasing(f64),
}

/// How well a fitted mapping's probabilities match the outcomes, against the mapping used before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// (query, document) pairs fitted on, and how many of them are relevant.
    pub pairs: usize,
    pub positives: usize,
    /// Expected calibration error of the mapping used before, on all the pairs.
    pub ece_before: f64,
    /// Expected calibration error of the fitted mapping, 2-fold cross-fitted by query: each half
    /// of the queries is scored by a mapping fitted on the other half.
    pub ece_after: f64,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// ln(1 + e^z) without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Fits a [`Platt`] mapping by Newton's method with a backtracking line search on the logistic
/// loss, as Lin, Lin and Weng (2007) refine Platt (1999). The targets are Platt's smoothed ones,
/// (N+ + 1) / (N+ + 2) for a relevant pair and 1 / (N- + 2) for another: never exactly 0 or 1,
/// so the loss has a finite minimum even when the scores separate the classes perfectly.
pub fn fit_platt(scores: &[f64], labels: &[bool]) -> Result<Platt, CalibrationError> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(CalibrationError::NonFinite);
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(CalibrationError::OneClass {
            pairs: labels.len(),
            positives,
        });
    }
    let hi = (positives as f64 + 1.0) / (positives as f64 + 2.0);
    let lo = 1.0 / (negatives as f64 + 2.0);
    let target = |l: bool| if l { hi } else { lo };
    let loss = |a: f64, b: f64| -> f64 {
        scores
            .iter()
            .zip(labels)
            .map(|(&x, &l)| {
                let f = a * x + b;
                softplus(-f) + (1.0 - target(l)) * f
            })
            .sum()
    };

    // Platt's start: no slope, and the bias of the smoothed base rate.
    let (mut a, mut b) = (
        0.0,
        ((positives as f64 + 1.0) / (negatives as f64 + 1.0)).ln(),
    );
    let mut value = loss(a, b);
    for _ in 0..100 {
        // Gradient and Hessian of the loss in (a, b); a tiny ridge keeps the Hessian invertible
        // when every score is the same.
        let (mut ga, mut gb) = (0.0, 0.0);
        let (mut haa, mut hab, mut hbb) = (1e-12, 0.0, 1e-12);
        for (&x, &l) in scores.iter().zip(labels) {
            let p = sigmoid(a * x + b);
            let d = p - target(l);
            let w = p * (1.0 - p);
            ga += d * x;
            gb += d;
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        if ga.abs() < 1e-5 && gb.abs() < 1e-5 {
            break;
        }
        let det = haa * hbb - hab * hab;
        let da = -(hbb * ga - hab * gb) / det;
        let db = -(haa * gb - hab * ga) / det;
        let slope = ga * da + gb * db;
        let mut step = 1.0;
        let accepted = loop {
            if step < 1e-10 {
                break false;
            }
            let candidate = loss(a + step * da, b + step * db);
            if candidate < value + 1e-4 * step * slope {
                a += step * da;
                b += step * db;
                value = candidate;
                break true;
            }
            step /= 2.0;
        };
        // No step lowers the loss: the minimum is as close as floating point gets.
        if !accepted {
            break;
        }
    }
    Ok(Platt { scale: a, bias: b })
}

/// Expected calibration error over `bins` equal-width probability bins: the sum over bins of
/// |mean label − mean probability| × (pairs in the bin) / (all pairs). 0 when there are no pairs.
pub fn expected_calibration_error(probs: &[f64], labels: &[bool], bins: usize) -> f64 {
    assert_eq!(probs.len(), labels.len(), "one label per probability");
    assert!(bins > 0, "at least one bin");
    if probs.is_empty() {
        return 0.0;
    }
    // Per bin, the sum of probabilities and of labels: |mean label − mean probability| × n_bin
    // is |sum of labels − sum of probabilities|, and an empty bin adds 0.
    let mut sums = vec![(0.0f64, 0.0f64); bins];
    for (&p, &l) in probs.iter().zip(labels) {
        // A probability of exactly 1 belongs to the last bin, not past it.
        let bin = ((p * bins as f64) as usize).min(bins - 1);
        sums[bin].0 += p;
        sums[bin].1 += f64::from(u8::from(l));
    }
    sums.iter().map(|(p, l)| (l - p).abs()).sum::<f64>() / probs.len() as f64
}

/// Fits a mapping on all the pairs and reports its error honestly. `queries[i]` names the query
/// pair `i` belongs to: queries with even numbers form one half and odd ones the other, and
/// `ece_after` scores each half with a mapping fitted on the other half, so it is never measured
/// on the pairs it was fitted on. `before` is the mapping the scores had until now.
pub fn calibrate(
    scores: &[f64],
    labels: &[bool],
    queries: &[usize],
    before: &Platt,
) -> Result<(Platt, CalibrationReport), CalibrationError> {
    assert_eq!(scores.len(), queries.len(), "one query per score");
    let platt = fit_platt(scores, labels)?;
    if platt.scale <= 0.0 {
        return Err(CalibrationError::NotIncreasing(platt.scale));
    }
    let mut cross_fitted = vec![0.0; scores.len()];
    for half in [0, 1] {
        let (fit_on, held_out): (Vec<usize>, Vec<usize>) =
            (0..scores.len()).partition(|&i| queries[i] % 2 == half);
        let pick_scores: Vec<f64> = fit_on.iter().map(|&i| scores[i]).collect();
        let pick_labels: Vec<bool> = fit_on.iter().map(|&i| labels[i]).collect();
        let fold =
            fit_platt(&pick_scores, &pick_labels).map_err(|_| CalibrationError::TooFewQueries)?;
        for i in held_out {
            cross_fitted[i] = fold.probability(scores[i]);
        }
    }
    let before: Vec<f64> = scores.iter().map(|&s| before.probability(s)).collect();
    let report = CalibrationReport {
        pairs: scores.len(),
        positives: labels.iter().filter(|&&l| l).count(),
        ece_before: expected_calibration_error(&before, labels, ECE_BINS),
        ece_after: expected_calibration_error(&cross_fitted, labels, ECE_BINS),
    };
    Ok((platt, report))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// `n` raw scores drawn uniformly from [-4, 4], each labelled relevant with the probability
    /// `truth` gives it.
    fn logistic_sample(truth: &Platt, n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let x: f64 = rng.random_range(-4.0..4.0);
                let relevant = rng.random::<f64>() < truth.probability(x);
                (x, relevant)
            })
            .unzip()
    }

    #[test]
    fn a_fit_recovers_the_logistic_model_the_data_came_from() {
        for truth in [
            Platt {
                scale: 2.5,
                bias: -1.5,
            },
            Platt {
                scale: 0.7,
                bias: 0.4,
            },
        ] {
            let (x, y) = logistic_sample(&truth, 20_000, 7);
            let fit = fit_platt(&x, &y).unwrap();
            assert!(
                (fit.scale - truth.scale).abs() < 0.1 && (fit.bias - truth.bias).abs() < 0.1,
                "{fit:?} vs {truth:?}"
            );
        }
    }

    #[test]
    fn separable_scores_get_a_finite_fit_that_keeps_their_order() {
        let x: Vec<f64> = (-10..10).map(|i| f64::from(i) / 10.0).collect();
        let y: Vec<bool> = x.iter().map(|&s| s > 0.0).collect();
        let fit = fit_platt(&x, &y).unwrap();
        assert!(fit.scale.is_finite() && fit.bias.is_finite(), "{fit:?}");
        assert!(fit.scale > 0.0, "{fit:?}");
        // Smoothed targets: confident, but never certain.
        let (top, bottom) = (fit.probability(0.9), fit.probability(-1.0));
        assert!(
            top > 0.9 && top < 1.0 && bottom < 0.1 && bottom > 0.0,
            "{fit:?}"
        );
    }

    #[test]
    fn one_class_or_a_non_finite_score_is_an_error() {
        let x = [0.1, 0.5, 0.9];
        assert_eq!(
            fit_platt(&x, &[true; 3]),
            Err(CalibrationError::OneClass {
                pairs: 3,
                positives: 3
            })
        );
        assert!(matches!(
            fit_platt(&x, &[false; 3]),
            Err(CalibrationError::OneClass { positives: 0, .. })
        ));
        assert!(matches!(
            fit_platt(&[], &[]),
            Err(CalibrationError::OneClass { pairs: 0, .. })
        ));
        assert_eq!(
            fit_platt(&[0.1, f64::NAN], &[true, false]),
            Err(CalibrationError::NonFinite)
        );
    }

    #[test]
    fn perfectly_calibrated_probabilities_have_an_ece_near_zero() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let probs: Vec<f64> = (0..100_000).map(|_| rng.random::<f64>()).collect();
        let labels: Vec<bool> = probs.iter().map(|&p| rng.random::<f64>() < p).collect();
        let ece = expected_calibration_error(&probs, &labels, ECE_BINS);
        assert!(ece < 0.01, "{ece}");
    }

    #[test]
    fn a_constant_half_on_a_tenth_relevant_is_off_by_four_tenths() {
        let probs = vec![0.5; 1000];
        let labels: Vec<bool> = (0..1000).map(|i| i % 10 == 0).collect();
        let ece = expected_calibration_error(&probs, &labels, ECE_BINS);
        assert!((ece - 0.4).abs() < 1e-12, "{ece}");
        assert_eq!(expected_calibration_error(&[], &[], ECE_BINS), 0.0);
    }

    #[test]
    fn ece_weighs_each_bin_by_its_pairs() {
        // Bin [0.9, 1]: probability 1.0 (the edge) and 0.9, one relevant: |0.5 − 0.95| × 2/4.
        // Bin [0.1, 0.2): 0.1 twice, none relevant: |0 − 0.1| × 2/4.
        let ece = expected_calibration_error(
            &[1.0, 0.9, 0.1, 0.1],
            &[true, false, false, false],
            ECE_BINS,
        );
        assert!((ece - (0.45 * 0.5 + 0.1 * 0.5)).abs() < 1e-12, "{ece}");
    }

    #[test]
    fn calibrate_reports_a_cross_fitted_error_against_the_old_mapping() {
        let truth = Platt {
            scale: 3.0,
            bias: -2.0,
        };
        let (x, y) = logistic_sample(&truth, 6_000, 11);
        let queries: Vec<usize> = (0..x.len()).map(|i| i / 5).collect();
        let identity = Platt {
            scale: 1.0,
            bias: 0.0,
        };
        let (fit, report) = calibrate(&x, &y, &queries, &identity).unwrap();
        assert!((fit.scale - 3.0).abs() < 0.2, "{fit:?}");
        assert_eq!(report.pairs, 6_000);
        assert_eq!(report.positives, y.iter().filter(|&&l| l).count());
        // sigmoid(x) is far too generous at this bias; the fitted mapping is close to the truth.
        assert!(report.ece_before > 0.1, "{report:?}");
        assert!(report.ece_after < 0.03, "{report:?}");
        let in_sample: Vec<f64> = x.iter().map(|&s| fit.probability(s)).collect();
        let in_sample = expected_calibration_error(&in_sample, &y, ECE_BINS);
        assert_ne!(
            report.ece_after, in_sample,
            "measured on pairs it was fitted on"
        );
    }

    #[test]
    fn calibrate_refuses_what_it_cannot_measure_or_keep_in_order() {
        let identity = Platt {
            scale: 1.0,
            bias: 0.0,
        };
        // One query: its half fits, the other half is empty.
        let x = [0.9, 0.1, 0.2];
        let y = [true, false, false];
        assert_eq!(
            calibrate(&x, &y, &[0, 0, 0], &identity),
            Err(CalibrationError::TooFewQueries)
        );
        // Relevant pairs score lowest: a fit would have to reverse the ranking.
        let reversed = [0.1, 0.9, 0.8, 0.2, 0.7, 0.6];
        let y = [true, false, false, true, false, false];
        assert!(matches!(
            calibrate(&reversed, &y, &[0, 0, 0, 1, 1, 1], &identity),
            Err(CalibrationError::NotIncreasing(s)) if s < 0.0
        ));
    }
}
