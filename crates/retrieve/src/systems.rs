//! The figures of a retrieval-style evaluation: each system's metrics from its run, with
//! bootstrap CIs, and the paired comparisons between systems. `finerank eval --beir` and the
//! server's evaluation after a fine-tune report them alike.
use finerank_data::Judgements;
use finerank_eval::{
    compare_retrieval, retrieval_metrics, summarize_retrieval, Bootstrap, EvalError, Paired,
    RetrievalMetrics, System,
};

use crate::{to_eval, Hit};

/// One system's metrics over the judged queries, from its `run` (one list per query of
/// `judgements`, in order). `window` is the tokens per input a model read with; none for a first
/// stage alone.
pub fn system(
    name: &str,
    window: Option<usize>,
    judgements: &Judgements,
    run: &[Vec<Hit>],
    boot: &Bootstrap,
) -> System {
    let per_query: Vec<RetrievalMetrics> = to_eval(judgements, run)
        .iter()
        .map(retrieval_metrics)
        .collect();
    System {
        name: name.to_string(),
        window,
        metrics: summarize_retrieval(&per_query, boot),
        per_query,
    }
}

/// The comparisons of a report whose first system is the first stage alone and whose second is
/// the baseline model: every model against the first stage, then each later model against the
/// baseline.
pub fn pair_systems(systems: &[System], boot: &Bootstrap) -> Result<Vec<Paired>, EvalError> {
    let pair = |(a, b): (usize, usize)| -> Result<Paired, EvalError> {
        Ok(Paired {
            a: systems[a].name.clone(),
            b: systems[b].name.clone(),
            comparison: compare_retrieval(&systems[a].per_query, &systems[b].per_query, boot)?,
        })
    };
    let n = systems.len();
    (1..n)
        .map(|b| (0, b))
        .chain((2..n).map(|b| (1, b)))
        .map(pair)
        .collect()
}

#[cfg(test)]
mod tests {
    use finerank_data::Query;

    use super::*;

    #[test]
    fn models_are_paired_with_the_first_stage_then_with_the_baseline() {
        let judgements = Judgements {
            queries: vec![Query {
                id: "q".into(),
                text: "q".into(),
            }],
            grades: vec![vec![(0, 1)]],
        };
        let hit = |doc| Hit { doc, score: 1.0 };
        let boot = Bootstrap::default();
        let systems = [("bm25", 1), ("base", 0), ("tuned", 0)]
            .map(|(name, top)| system(name, None, &judgements, &[vec![hit(top)]], &boot));
        assert_eq!(systems[1].metrics.mrr_at_10.mean, 1.0);
        assert_eq!(systems[0].metrics.mrr_at_10.mean, 0.0);
        let pairs: Vec<(String, String)> = pair_systems(&systems, &boot)
            .unwrap()
            .into_iter()
            .map(|p| (p.a, p.b))
            .collect();
        let named = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            pairs,
            [
                named("bm25", "base"),
                named("bm25", "tuned"),
                named("base", "tuned")
            ]
        );
    }
}
