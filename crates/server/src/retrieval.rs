//! The retrieval evaluation after a fine-tune on a dataset with a corpus: for each evaluation
//! query, BM25's top 100 over the corpus, alone and re-ranked by the base model and by the
//! fine-tuned one, with the figures and paired tests of `finerank eval --beir`.
//!
//! The evaluation queries are the ones training validated on, which also chose the checkpoint:
//! the fine-tuned model's figures lean optimistic, and the report says so rather than pass them
//! off as a held-out test.
use std::path::Path;

use finerank_engine::{Reranker, ScoreOptions};
use finerank_eval::{Bootstrap, RetrievalReport};
use finerank_retrieve::{bm25_run, pair_systems, rerank_run, system, Bm25Index, DEFAULT_TOP_K};

use crate::collection::Collection;

/// What the report calls the query set: the one that validated training.
const SPLIT: &str = "validation (the queries that also chose the checkpoint)";

/// Evaluates `base` and `tuned` re-ranking BM25's candidates for `collection`'s evaluation
/// queries, reading `max_len` tokens per input (none: each model's window). `corpus_name` names
/// the collection in the report. `cancelled` is asked between models; the error is the reason to
/// report.
pub fn evaluate(
    corpus_name: &str,
    collection: &Collection,
    [base, tuned]: [&Reranker; 2],
    max_len: Option<usize>,
    cache_dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<RetrievalReport, String> {
    let corpus = &collection.corpus;
    let judgements = &collection.eval;
    let index =
        Bm25Index::open_or_build(corpus, cache_dir, &mut |_, _| {}).map_err(|e| e.to_string())?;
    let run = bm25_run(&index, judgements, DEFAULT_TOP_K);
    let boot = Bootstrap::default();
    let opts = ScoreOptions {
        max_len,
        ..ScoreOptions::default()
    };
    let mut systems = vec![system("bm25", None, judgements, &run, &boot)];
    for model in [base, tuned] {
        if cancelled() {
            return Err("cancelled".into());
        }
        let reranked = rerank_run(model, corpus, judgements, &run, &opts, &mut |_, _| {});
        let window = Some(model.window_for(max_len));
        systems.push(system(model.name(), window, judgements, &reranked, &boot));
    }
    let comparisons = pair_systems(&systems, &boot).map_err(|e| e.to_string())?;
    Ok(RetrievalReport {
        collection: corpus_name.into(),
        split: SPLIT.into(),
        queries: judgements.queries.len(),
        corpus_docs: corpus.len(),
        first_stage: "bm25".into(),
        top_k: DEFAULT_TOP_K,
        systems,
        comparisons,
        query_ids: judgements.queries.iter().map(|q| q.id.clone()).collect(),
    })
}
