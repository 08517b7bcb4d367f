//! The one order every ranking follows, in the metrics and in the engine's rerank: best score
//! first, with a score that is not a finite number after every finite one, and ties broken
//! against the system where relevance is known.
//!
//! - **Non-finite scores rank last.** NaN, or an infinity, is a broken model output (an overflow,
//!   NaN weights), not a judgement of relevance, so it must never put a candidate first. All
//!   non-finite scores, `-inf` included, tie with one another after every finite score.
//! - **Ties are pessimistic.** Among equal scores the less relevant candidate goes first, so a tie
//!   never counts as a hit: a model that gives every candidate one score ranks the relevant one
//!   last, wherever the data happens to list it (validation rows list it first).
use std::cmp::Ordering;

/// Descending by score, every non-finite score after every finite one. Equal scores, and any two
/// non-finite ones, compare `Equal`, leaving the tie to the caller. Takes f64 so that f32 reranker
/// scores (widened losslessly) and f64 retrieval scores share it.
pub fn by_score_desc(a: f64, b: f64) -> Ordering {
    match (a.is_finite(), b.is_finite()) {
        (true, true) => b.partial_cmp(&a).expect("finite numbers are ordered"),
        // `true > false`, so comparing b's finiteness with a's puts the finite one first.
        (a_finite, b_finite) => b_finite.cmp(&a_finite),
    }
}

/// Candidate indices in rank order: by [`by_score_desc`], and among equal scores the lower grade
/// first (with binary grades, a relevant candidate after every non-relevant one it ties with).
/// Candidates equal in score and grade keep their order. `grades[i]` is candidate i's.
pub(crate) fn pessimistic_order(scores: &[f64], grades: &[u32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| by_score_desc(scores[i], scores[j]).then(grades[i].cmp(&grades[j])));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_scores_follow_every_finite_one_and_tie_among_themselves() {
        let scores = [
            f64::NAN,
            f64::INFINITY,
            -1e300,
            f64::NEG_INFINITY,
            0.5,
            -f64::NAN,
        ];
        assert_eq!(
            pessimistic_order(&scores, &[0; 6]),
            [4, 2, 0, 1, 3, 5],
            "finite best first, then the non-finite in their order"
        );
        assert_eq!(by_score_desc(f64::INFINITY, 0.0), Ordering::Greater);
        assert_eq!(by_score_desc(f64::NAN, f64::NEG_INFINITY), Ordering::Equal);
        assert_eq!(by_score_desc(0.0, -0.0), Ordering::Equal);
    }

    #[test]
    fn ties_put_the_higher_grade_last() {
        // 0.5 ties three ways; the relevant candidates follow the non-relevant one.
        let order = pessimistic_order(&[0.5, 0.9, 0.5, 0.5], &[2, 0, 1, 0]);
        assert_eq!(order, [1, 3, 2, 0]);
        // Non-finite scores tie too, so a NaN-scored relevant candidate is last of all.
        let order = pessimistic_order(&[f64::NAN, f64::INFINITY, 0.1], &[1, 0, 0]);
        assert_eq!(order, [2, 1, 0]);
    }
}
