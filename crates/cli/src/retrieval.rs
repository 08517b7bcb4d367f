//! `finerank eval --beir`: a reranker measured as search uses one. A first stage (BM25 over the
//! whole corpus, or a TREC run file) returns each query's top k; each model re-orders them; the
//! report gives every system's metrics with bootstrap CIs, and paired differences with CIs and a
//! randomization test.
use std::path::Path;

use finerank_data::{read_beir, read_run, Beir};
use finerank_engine::ScoreOptions;
use finerank_eval::{Bootstrap, RetrievalReport};
use finerank_retrieve::{bm25_run, pair_systems, rerank_run, system, Bm25Index, Hit};

use crate::evaluate::{load_models, windows};
use crate::mine::cache_dir;
use crate::progress::{bar, StageBars};
use crate::Ctx;

/// What to evaluate and how.
pub struct Setup<'a> {
    pub beir: &'a Path,
    pub split: &'a str,
    /// A TREC run file to re-rank instead of BM25's.
    pub run: Option<&'a Path>,
    pub top_k: usize,
    pub max_len: Option<usize>,
    /// Each model reads at its own window instead of the one they share (see [`windows`]).
    pub own_windows: bool,
    /// What the LLM rerankers among the models judge by (see [`load_models`]).
    pub instruction: Option<&'a str>,
    pub boot: Bootstrap,
}

/// The first stage's top k for every judged query of the split.
fn first_stage(setup: &Setup, beir: &Beir) -> anyhow::Result<(String, Vec<Vec<Hit>>)> {
    if let Some(run) = setup.run {
        let run_hits = read_run(run, &beir.corpus, &beir.judgements)?
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .take(setup.top_k)
                    .map(|(doc, score)| Hit { doc, score })
                    .collect()
            })
            .collect();
        return Ok((format!("run {}", run.display()), run_hits));
    }
    let mut bars = StageBars::default();
    let index =
        Bm25Index::open_or_build(&beir.corpus, &cache_dir(setup.beir, None), &mut |d, t| {
            bars.update("bm25 index", d, t)
        });
    bars.finish();
    Ok((
        "bm25".into(),
        bm25_run(&index?, &beir.judgements, setup.top_k),
    ))
}

/// Evaluates the first stage alone, then each model re-ranking its top k, the models reading at
/// one window unless `setup.own_windows` (see [`windows`]). Comparisons: every model against the
/// first stage, and each later model against the first model given (the base, when the caller
/// lists it first).
pub fn evaluate(ctx: &Ctx, setup: &Setup, models: &[&str]) -> anyhow::Result<RetrievalReport> {
    let beir = read_beir(setup.beir, setup.split)?;
    let (stage_name, run) = first_stage(setup, &beir)?;
    let judgements = &beir.judgements;
    let mut systems = vec![system(&stage_name, None, judgements, &run, &setup.boot)];
    let rerankers = load_models(ctx, models, setup.instruction)?;
    let windows = windows(&rerankers, setup.max_len, setup.own_windows);
    for (reranker, window) in rerankers.iter().zip(windows) {
        let opts = ScoreOptions {
            max_len: Some(window),
            ..Default::default()
        };
        let model = reranker.name();
        let pb = bar(run.len(), "rerank");
        pb.set_message(model.to_string());
        let reranked = rerank_run(
            reranker,
            &beir.corpus,
            &beir.judgements,
            &run,
            &opts,
            &mut |d, _| pb.set_position(d as u64),
        );
        pb.finish_and_clear();
        systems.push(system(
            model,
            Some(window),
            judgements,
            &reranked,
            &setup.boot,
        ));
    }
    let comparisons = pair_systems(&systems, &setup.boot)?;
    Ok(RetrievalReport {
        collection: setup.beir.display().to_string(),
        split: setup.split.to_string(),
        queries: beir.judgements.queries.len(),
        corpus_docs: beir.corpus.len(),
        first_stage: stage_name,
        top_k: setup.top_k,
        systems,
        comparisons,
        query_ids: beir
            .judgements
            .queries
            .iter()
            .map(|q| q.id.clone())
            .collect(),
    })
}
