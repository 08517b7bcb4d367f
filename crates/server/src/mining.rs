//! Mining in a dataset's review: hard negatives for every training and evaluation query of its
//! collection, as `finerank mine` mines them, scored by the validator's copy of the default model,
//! and written beside the upload as the rows training reads.
use std::path::Path;

use finerank_data::write_jsonl;
use finerank_engine::Reranker;
use finerank_retrieve::{keep_given_negatives, mine, MineOptions, MineReport};

use crate::collection::Collection;

/// Mines both query sets in one pass over the corpus, puts each uploaded row's own negatives
/// first, and writes the training rows to `train` and the evaluation rows to `eval`, each under
/// a temporary name renamed into place. `scorer` is the model and its fingerprint, which keys the
/// embedding cache in `cache_dir`.
pub fn mine_files(
    collection: &Collection,
    scorer: (&Reranker, &str),
    opts: &MineOptions,
    cache_dir: &Path,
    (train, eval): (&Path, &Path),
) -> Result<MineReport, String> {
    let mut judgements = collection.train.clone();
    judgements
        .queries
        .extend_from_slice(&collection.eval.queries);
    judgements.grades.extend_from_slice(&collection.eval.grades);
    let (mut rows, report) = mine(
        &collection.corpus,
        &judgements,
        Some(scorer),
        opts,
        cache_dir,
        &mut |_, _, _| {},
    )
    .map_err(|e| format!("internal error: mining failed: {e}"))?;
    keep_given_negatives(&mut rows, &collection.rows);
    // Every judged query has a relevant document (the review refuses rows without one, the qrels
    // reader queries without one), so `mine` gives one row per query, in order.
    let eval_rows = rows.split_off(collection.train.queries.len());
    for (path, rows) in [(train, &rows), (eval, &eval_rows)] {
        write_jsonl(path, rows)
            .map_err(|e| format!("internal error: writing the mined rows: {e}"))?;
    }
    Ok(report)
}
