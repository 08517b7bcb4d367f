//! A dataset's document collection, for mining in its review and for the retrieval evaluation
//! after a fine-tune: the corpus, with the training and the evaluation queries judged against it.
//!
//! Cohere rows are judged by finding their relevant passages in the corpus (`judge_rows`; a
//! passage it lacks joins it); a BEIR collection comes judged. Without evaluation rows, a share of
//! the training queries is held out, whole queries at a time, drawn with the mining seed: the
//! validator and every later fine-tune read the same split from the same files.
use std::path::{Path, PathBuf};

use finerank_data::{
    judge_rows, read_corpus, read_qrels, read_queries, read_train, split_by_query, Corpus,
    DataError, Judgements, TrainRow, DEFAULT_VALID_SHARE,
};

use crate::parts::Part;
use crate::store::DatasetRow;
use crate::uploads::Uploads;

pub struct Collection {
    pub corpus: Corpus,
    pub train: Judgements,
    pub eval: Judgements,
    /// The uploaded rows, training then evaluation (none for a BEIR collection): their own
    /// negatives go before mined ones.
    pub rows: Vec<TrainRow>,
}

impl Collection {
    /// Reads the collection of a dataset that has a corpus. Errors name the server's files; the
    /// caller knows the names the client gave them.
    pub fn read(uploads: &Uploads, dataset: &DatasetRow) -> Result<Collection, DataError> {
        let path = |part| {
            uploads
                .path(&dataset.id, part)
                .map_err(|source| DataError::Io {
                    path: PathBuf::from(&dataset.id),
                    source,
                })
        };
        let corpus = read_corpus(&path(Part::Corpus)?)?;
        let (corpus, train, eval, rows) = match &dataset.parts.data {
            Some(_) => {
                let rows = read_train(&path(Part::Data)?)?;
                let (corpus, train) = judge_rows(&rows, corpus)?;
                match &dataset.parts.eval {
                    Some(_) => {
                        let eval_rows = read_train(&path(Part::Eval)?)?;
                        let (corpus, eval) = judge_rows(&eval_rows, corpus)?;
                        let rows = rows.into_iter().chain(eval_rows).collect();
                        (corpus, train, Some(eval), rows)
                    }
                    None => (corpus, train, None, rows),
                }
            }
            None => {
                let queries = read_queries(&path(Part::Queries)?)?;
                let judged = read_qrels(&path(Part::Qrels)?, &corpus, &queries)?;
                (corpus, judged, None, Vec::new())
            }
        };
        let (train, eval) = match eval {
            Some(eval) => (train, eval),
            None => {
                let seed = dataset.mining.as_ref().map_or(0, |m| m.seed);
                let (train, eval, _) = split_by_query(&train, DEFAULT_VALID_SHARE, 0.0, seed);
                (train, eval)
            }
        };
        Ok(Collection {
            corpus,
            train,
            eval,
            rows,
        })
    }
}

/// Where BM25 indexes and corpus embeddings are cached under a data directory. Keys are the
/// corpus's and the model's fingerprints, as the retrieve crate makes them, so uploads of one
/// corpus and the evaluations after their fine-tunes share one index.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("retrieval-cache")
}
