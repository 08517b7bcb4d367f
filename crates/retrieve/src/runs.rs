//! Retrieval-style evaluation: each judged query's first-stage top k, rescored by a model, turned
//! into the metrics' inputs.
use finerank_data::{Corpus, Judgements};
use finerank_engine::{Group, GroupScores, Reranker, ScoreOptions};
use finerank_eval::RetrievalQuery;

use crate::{Bm25Index, Hit};

/// Candidates a model re-ranks per query unless told otherwise: BM25's top 100, as BEIR
/// re-ranks.
pub const DEFAULT_TOP_K: usize = 100;

/// Queries scored per `Reranker::score` call: enough pairs that length-sorted batches fill.
const QUERY_BLOCK: usize = 32;

fn query_texts(judgements: &Judgements) -> Vec<&str> {
    judgements.queries.iter().map(|q| q.text.as_str()).collect()
}

/// Each judged query's BM25 top `k`, best first.
pub fn bm25_run(index: &Bm25Index, judgements: &Judgements, k: usize) -> Vec<Vec<Hit>> {
    index.search_many(&query_texts(judgements), k)
}

/// Rescores each judged query's candidates in `run` (one list per query, in judgements' order)
/// with `reranker` over (query, document full_text). Keeps the input order: the metrics rank by
/// score. `progress(done, total)` counts queries.
pub fn rerank_run(
    reranker: &Reranker,
    corpus: &Corpus,
    judgements: &Judgements,
    run: &[Vec<Hit>],
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<Vec<Hit>> {
    let lists: Vec<Vec<usize>> = run
        .iter()
        .map(|hits| hits.iter().map(|h| h.doc).collect())
        .collect();
    // Ranked on the raw scores: a saturating calibration would tie confident documents.
    let scores = score_lists(
        reranker,
        corpus,
        &query_texts(judgements),
        &lists,
        opts,
        |g| g.raw_scores,
        progress,
    );
    lists
        .iter()
        .zip(scores)
        .map(|(docs, scores)| {
            docs.iter()
                .zip(scores)
                .map(|(&doc, score)| Hit { doc, score })
                .collect()
        })
        .collect()
}

/// `reranker`'s score of every document in `lists[i]` for `queries[i]`, in blocks of queries;
/// `pick` takes the raw or the calibrated scores.
pub(crate) fn score_lists(
    reranker: &Reranker,
    corpus: &Corpus,
    queries: &[&str],
    lists: &[Vec<usize>],
    opts: &ScoreOptions,
    pick: fn(GroupScores) -> Vec<f32>,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(lists.len());
    for (block_queries, block_lists) in queries.chunks(QUERY_BLOCK).zip(lists.chunks(QUERY_BLOCK)) {
        let texts: Vec<Vec<String>> = block_lists
            .iter()
            .map(|docs| docs.iter().map(|&d| corpus.docs[d].full_text()).collect())
            .collect();
        let groups: Vec<Group> = block_queries
            .iter()
            .zip(&texts)
            .map(|(query, docs)| Group {
                query,
                documents: docs.iter().map(String::as_str).collect(),
            })
            .collect();
        let scored = reranker.score(&groups, opts);
        out.extend(
            scored
                .into_iter()
                .map(|g| pick(g).into_iter().map(f64::from).collect()),
        );
        progress(out.len(), lists.len());
    }
    out
}

/// The metrics' input per judged query: each candidate's score and grade (0 when unjudged), and
/// the grades of every document judged relevant, retrieved or not (recall and ideal DCG need them).
pub fn to_eval(judgements: &Judgements, run: &[Vec<Hit>]) -> Vec<RetrievalQuery> {
    judgements
        .grades
        .iter()
        .zip(run)
        .map(|(judged, hits)| {
            let grade_of = |doc| {
                judged
                    .iter()
                    .find(|&&(d, _)| d == doc)
                    .map_or(0, |&(_, g)| g)
            };
            RetrievalQuery {
                scores: hits.iter().map(|h| h.score).collect(),
                grades: hits.iter().map(|h| grade_of(h.doc)).collect(),
                relevant: judged.iter().map(|&(_, g)| g).filter(|&g| g > 0).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use finerank_data::Query;

    use super::*;

    #[test]
    fn to_eval_looks_up_grades_and_lists_every_relevant_document() {
        let judgements = Judgements {
            queries: vec![Query {
                id: "q".into(),
                text: "q".into(),
            }],
            grades: vec![vec![(4, 2), (7, 0), (9, 1)]],
        };
        let run = vec![vec![
            Hit { doc: 7, score: 3.0 },
            Hit { doc: 4, score: 2.0 },
            Hit { doc: 5, score: 1.0 },
        ]];
        let q = &to_eval(&judgements, &run)[0];
        assert_eq!(q.scores, [3.0, 2.0, 1.0]);
        assert_eq!(q.grades, [0, 2, 0]);
        assert_eq!(q.relevant, [2, 1]);
    }
}
