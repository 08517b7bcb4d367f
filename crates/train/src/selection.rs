//! Which validation keeps its checkpoint, and when training stops: the rule on its own, apart
//! from the training it judges.
//!
//! Any strictly better validation score becomes the kept checkpoint: a small gain is still a
//! better model. The early-stopping threshold is for patience only, as in Hugging Face's
//! `EarlyStoppingCallback`: patience resets on a gain of more than the threshold over the best
//! score before it, so a run that creeps up by small gains keeps its best checkpoint but stops.
use serde::{Deserialize, Serialize};

use crate::resume::exact;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Selection {
    /// The best validation score so far, the base model's to begin with.
    #[serde(with = "exact")]
    best: f64,
    /// Validations in a row that gained no more than the threshold over the best before them.
    stale: usize,
}

/// What one validation score means for the run.
#[derive(Debug, PartialEq)]
pub(crate) struct Verdict {
    /// This validation's checkpoint is the one to keep.
    pub best: bool,
    /// Patience has run out: training stops here.
    pub stop: bool,
}

impl Selection {
    pub fn new(base: f64) -> Selection {
        Selection {
            best: base,
            stale: 0,
        }
    }

    /// Judges the next validation score. A `patience` of 0 never stops.
    pub fn judge(&mut self, score: f64, threshold: f64, patience: usize) -> Verdict {
        if score > self.best + threshold {
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        let best = score > self.best;
        if best {
            self.best = score;
        }
        Verdict {
            best,
            stop: patience > 0 && self.stale >= patience,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts on `scores` after a base of 0.5, with a threshold of 0.01 and `patience`.
    fn verdicts(scores: &[f64], patience: usize) -> Vec<(bool, bool)> {
        let mut s = Selection::new(0.5);
        scores
            .iter()
            .map(|&score| {
                let v = s.judge(score, 0.01, patience);
                (v.best, v.stop)
            })
            .collect()
    }

    #[test]
    fn a_gain_below_the_threshold_is_kept_but_does_not_reset_patience() {
        // +0.005 and +0.002 are kept, and use up patience; +0.05 resets it; a tie is not kept.
        assert_eq!(
            verdicts(&[0.505, 0.507, 0.557, 0.557, 0.556], 3),
            [
                (true, false),
                (true, false),
                (true, false),
                (false, false),
                (false, false)
            ]
        );
        // Small gains all along: each is kept, and the run stops when patience runs out.
        assert_eq!(
            verdicts(&[0.505, 0.51, 0.515], 3),
            [(true, false), (true, false), (true, true)]
        );
    }

    #[test]
    fn the_gain_is_measured_from_the_best_so_far_and_patience_zero_never_stops() {
        // 0.52 is 0.02 above the base but only 0.005 above 0.515, the best before it.
        assert_eq!(
            verdicts(&[0.515, 0.52, 0.4, 0.4, 0.4], 0),
            [
                (true, false),
                (true, false),
                (false, false),
                (false, false),
                (false, false)
            ]
        );
        let mut s = Selection::new(0.5);
        for score in [0.515, 0.52] {
            s.judge(score, 0.01, 2);
        }
        assert_eq!(
            s,
            Selection {
                best: 0.52,
                stale: 1
            }
        );
    }
}
