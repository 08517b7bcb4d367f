//! First-stage retrieval over a user's corpus (BM25 with tantivy, a bi-encoder's dense vectors,
//! or both fused) and hard-negative mining from it, so that a corpus with queries and qrels
//! (BEIR's layout) but no negatives becomes training data, as sentence-transformers'
//! `mine_hard_negatives` makes it; also the first stage of retrieval-style evaluation and its
//! figures.
//! Indexes and embeddings are cached on disk, keyed by corpus and model fingerprints.
mod bm25;
mod cache;
mod dense;
mod fusion;
mod mine;
mod runs;
mod systems;

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use finerank_data::{Corpus, Judgements, TrainRow};
use finerank_engine::{dot, Kind, Reranker, Role, ScoreOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use bm25::Bm25Index;
pub use dense::{corpus_embeddings, dense_search, model_fingerprint, Embeddings};
pub use fusion::fuse;
pub use mine::{
    keep_given_negatives, select_negatives, FirstStage, MineOptions, MineReport, Sampling,
};
pub use runs::{bm25_run, rerank_run, to_eval, DEFAULT_TOP_K};
pub use systems::{pair_systems, system};

/// A retrieved document: its index into `corpus.docs` and its score, higher is better.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub doc: usize,
    pub score: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error("BM25 index: {0}")]
    Index(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NoEmbeddings(String),
}

impl From<tantivy::TantivyError> for RetrieveError {
    fn from(e: tantivy::TantivyError) -> Self {
        RetrieveError::Index(e.to_string())
    }
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RetrieveError + '_ {
    move |source| RetrieveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Best first; equal scores in corpus order, so results never depend on thread timing.
pub(crate) fn by_score(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc))
}

/// The best `k` of `hits`, best first, by partial selection rather than a full sort.
pub(crate) fn top_k(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    if k < hits.len() {
        hits.select_nth_unstable_by(k, by_score);
        hits.truncate(k);
    }
    hits.sort_unstable_by(by_score);
    hits
}

/// Mines hard negatives for every judged query with a relevant document, one [`TrainRow`] each in
/// judgements' order (query text, relevant passages' and negatives' full text).
///
/// Candidates: BM25's top `range_max` + the most positives any query has, the corpus embeddings'
/// (a bi-encoder `scorer` only), or both fused. A cross-encoder cannot retrieve densely, so for
/// dense or hybrid it rescores BM25's candidates and the report says so. Candidates and positives
/// are then scored by `scorer` (bi-encoder: dot product of embeddings; cross-encoder: its score
/// of (query, document); none: BM25), re-ranked by that score, and [`select_negatives`] picks
/// from them with one generator seeded from `opts.seed`. `scorer` carries the model key from
/// [`model_fingerprint`] that names the embedding cache. `progress(stage, done, total)`.
pub fn mine(
    corpus: &Corpus,
    judgements: &Judgements,
    scorer: Option<(&Reranker, &str)>,
    opts: &MineOptions,
    cache_dir: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(Vec<TrainRow>, MineReport), RetrieveError> {
    let started = Instant::now();
    let score_opts = ScoreOptions::default();
    let kind = scorer.map(|(r, _)| r.kind());
    let stage = match (opts.first_stage, kind) {
        (FirstStage::Bm25, _) | (_, Some(Kind::BiEncoder)) => opts.first_stage,
        (_, Some(Kind::CrossEncoder)) => FirstStage::Bm25,
        (asked, None) => {
            return Err(RetrieveError::NoEmbeddings(format!(
                "a {asked} first stage needs a bi-encoder's embeddings; use --first-stage bm25, \
                 or a bi-encoder --model"
            )))
        }
    };
    let mut report = MineReport {
        corpus_docs: corpus.len(),
        first_stage: match stage == opts.first_stage {
            true => stage.to_string(),
            false => format!(
                "bm25 ({} needs a bi-encoder; the cross-encoder rescored BM25's candidates)",
                opts.first_stage
            ),
        },
        scorer: match scorer {
            None => "bm25".to_string(),
            Some((r, _)) if r.kind() == Kind::BiEncoder => format!("bi-encoder {}", r.name()),
            Some((r, _)) => format!("cross-encoder {}", r.name()),
        },
        ..MineReport::default()
    };
    // read_qrels refuses a query without a relevant document; one built otherwise has no row to give.
    let todo: Vec<(&str, Vec<usize>)> = (0..judgements.queries.len())
        .map(|i| (judgements.queries[i].text.as_str(), judgements.relevant(i)))
        .filter(|(_, positives)| !positives.is_empty())
        .collect();
    let texts: Vec<&str> = todo.iter().map(|&(q, _)| q).collect();
    let depth = opts.range_max + todo.iter().map(|(_, p)| p.len()).max().unwrap_or(0);

    let bm25 = match stage != FirstStage::Dense {
        true => {
            let (index, reused) = Bm25Index::cached_or_built(corpus, cache_dir, &mut |d, t| {
                progress("bm25 index", d, t)
            })?;
            if reused {
                report.cache_hits.push("bm25 index".into());
            }
            Some(index)
        }
        false => None,
    };
    let bi = scorer.filter(|(r, _)| r.kind() == Kind::BiEncoder);
    let query_vectors = bi.map(|(r, _)| {
        r.embed(&texts, Role::Query, &score_opts)
            .expect("a bi-encoder embeds")
    });
    let corpus_vectors = match (stage, bi) {
        (FirstStage::Dense | FirstStage::Hybrid, Some((r, key))) => {
            let (emb, reused) = dense::cached_corpus_embeddings(
                r,
                key,
                corpus,
                cache_dir,
                &score_opts,
                &mut |d, t| progress("corpus embeddings", d, t),
            )?;
            if reused {
                report.cache_hits.push("corpus embeddings".into());
            }
            Some(emb)
        }
        _ => None,
    };
    let lexical = || {
        bm25.as_ref()
            .expect("BM25 is opened for this stage")
            .search_many(&texts, depth)
    };
    let semantic = || {
        let emb = corpus_vectors
            .as_ref()
            .expect("the corpus is embedded for this stage");
        let queries = query_vectors
            .as_ref()
            .expect("a bi-encoder embeds the queries");
        dense_search(emb, queries, depth)
    };
    let candidates: Vec<Vec<Hit>> = match stage {
        FirstStage::Bm25 => lexical(),
        FirstStage::Dense => semantic(),
        FirstStage::Hybrid => lexical()
            .iter()
            .zip(semantic())
            .map(|(b, d)| fuse(&[b, &d], depth))
            .collect(),
    };

    // Every candidate and every positive, scored by the scorer: candidates first, then positives.
    let lists: Vec<Vec<usize>> = candidates
        .iter()
        .zip(&todo)
        .map(|(hits, (_, positives))| {
            hits.iter()
                .map(|h| h.doc)
                .chain(positives.iter().copied())
                .collect()
        })
        .collect();
    let scores: Vec<Vec<f64>> = match (scorer, query_vectors) {
        (None, _) => {
            let index = bm25.as_ref().expect("BM25 scores without a model");
            texts
                .par_iter()
                .zip(&lists)
                .map(|(q, docs)| index.score_docs(q, docs))
                .collect()
        }
        (Some((r, _)), Some(queries)) => {
            let (emb, row) = match corpus_vectors {
                Some(emb) => (emb, None),
                // BM25 candidates: embed only the documents scored, not the whole corpus.
                None => {
                    let needed: Vec<usize> = lists
                        .iter()
                        .flatten()
                        .copied()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let emb = dense::embed_docs(r, corpus, &needed, &score_opts, &mut |d, t| {
                        progress("candidate embeddings", d, t)
                    })?;
                    let row: HashMap<usize, usize> =
                        needed.iter().enumerate().map(|(i, &d)| (d, i)).collect();
                    (emb, Some(row))
                }
            };
            let vector = |d: usize| {
                let at = row.as_ref().map_or(d, |row| row[&d]);
                &emb.data[at * emb.dim..(at + 1) * emb.dim]
            };
            queries
                .iter()
                .zip(&lists)
                .map(|(q, docs)| docs.iter().map(|&d| f64::from(dot(q, vector(d)))).collect())
                .collect()
        }
        (Some((r, _)), None) => {
            // Margins compare probabilities, as sentence-transformers' cross-encoders give them.
            runs::score_lists(
                r,
                corpus,
                &texts,
                &lists,
                &score_opts,
                |g| g.scores,
                &mut |d, t| progress("cross-encoder scoring", d, t),
            )
        }
    };

    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut rows = Vec::with_capacity(todo.len());
    for (((query, positives), hits), scores) in todo.iter().zip(&candidates).zip(&scores) {
        let (candidate_scores, positive_scores) = scores.split_at(hits.len());
        let mut rescored: Vec<Hit> = hits
            .iter()
            .zip(candidate_scores)
            .map(|(h, &score)| Hit { doc: h.doc, score })
            .collect();
        // Stable: ties keep the first stage's order.
        rescored.sort_by(|a, b| b.score.total_cmp(&a.score));
        drop_repeated_texts(corpus, positives, &mut rescored, &mut report);
        let positive_score = positive_scores
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let negatives = select_negatives(
            &rescored,
            positives,
            positive_score,
            opts,
            &mut rng,
            &mut report,
        );
        let full_text = |d: &usize| corpus.docs[*d].full_text();
        rows.push(TrainRow {
            query: query.to_string(),
            relevant_passages: positives.iter().map(full_text).collect(),
            hard_negatives: negatives.iter().map(full_text).collect(),
        });
    }
    report.queries = rows.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok((rows, report))
}

/// A corpus may hold one text under several ids (CaseHOLD repeats holdings that differ only in
/// spacing). A copy of a positive would be mined as a false negative, and a copy of a better
/// candidate would repeat it in the row, so both leave the candidates; positives stay for
/// [`select_negatives`] to count. Texts compare as the review compares passages: trimmed.
fn drop_repeated_texts(
    corpus: &Corpus,
    positives: &[usize],
    candidates: &mut Vec<Hit>,
    report: &mut MineReport,
) {
    let text = |d: usize| corpus.docs[d].full_text().trim().to_string();
    let mut seen: HashSet<String> = positives.iter().map(|&d| text(d)).collect();
    candidates.retain(|h| {
        let keep = positives.contains(&h.doc) || seen.insert(text(h.doc));
        if !keep {
            report.dropped_repeated_text += 1;
        }
        keep
    });
}
