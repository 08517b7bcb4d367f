//! BM25 over a corpus with tantivy, cached on disk per corpus fingerprint.
use std::path::Path;

use finerank_data::Corpus;
use rayon::prelude::*;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, EnableScoring, Query};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{
    doc, DocAddress, DocSet, Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use crate::{by_score, cache, io_error, Hit, RetrieveError};

const ANALYZER: &str = "finerank_en";
const WRITER_MEMORY: usize = 200_000_000;
const PROGRESS_EVERY: usize = 4096;

/// A corpus's BM25 index, opened for search.
pub struct Bm25Index {
    searcher: Searcher,
    text: Field,
    analyzer: TextAnalyzer,
    /// Per segment, each tantivy doc id's corpus index (segments do not keep corpus order).
    doc_of: Vec<Vec<u32>>,
    /// Each corpus index's tantivy address: scoring a given document (a positive outside the top k).
    address_of: Vec<DocAddress>,
}

/// Words as both documents and queries are read: English stop words dropped, stemmed.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("tantivy ships English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

impl Bm25Index {
    /// Opens the index cached at `cache_dir/bm25-<first 16 hex of corpus.fingerprint()>/`, or
    /// builds it there: into a temporary sibling renamed into place, so a crash or a concurrent
    /// builder never leaves half an index (the loser of a rename race uses the winner's).
    /// `progress(done, total)` counts indexed documents; it is never called on a cache hit.
    pub fn open_or_build(
        corpus: &Corpus,
        cache_dir: &Path,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Bm25Index, RetrieveError> {
        Ok(Self::cached_or_built(corpus, cache_dir, progress)?.0)
    }

    /// [`Self::open_or_build`], and whether the cached index was reused.
    pub(crate) fn cached_or_built(
        corpus: &Corpus,
        cache_dir: &Path,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Bm25Index, bool), RetrieveError> {
        let name = format!("bm25-{}", &corpus.fingerprint()[..16]);
        let dir = cache_dir.join(&name);
        if dir.is_dir() {
            match Self::open(&dir, corpus.len()) {
                Ok(index) => return Ok((index, true)),
                // Damaged by hand or by a full disk: build afresh.
                Err(_) => std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?,
            }
        }
        std::fs::create_dir_all(cache_dir).map_err(io_error(cache_dir))?;
        cache::remove_stale(cache_dir, &name);
        let tmp = cache::temp_path(cache_dir, &name);
        if let Err(e) = build(corpus, &tmp, progress) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(io_error(&dir)(e));
            }
        }
        Ok((Self::open(&dir, corpus.len())?, false))
    }

    fn open(dir: &Path, docs: usize) -> Result<Bm25Index, RetrieveError> {
        let index = Index::open_in_dir(dir)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let text = index.schema().get_field("text")?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        let mut doc_of = Vec::new();
        let mut address_of = vec![None; docs];
        for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
            let column = segment.fast_fields().u64("idx")?;
            let ids: Vec<u32> = (0..segment.max_doc())
                .map(|doc_id| column.first(doc_id).map_or(u32::MAX, |i| i as u32))
                .collect();
            for (doc_id, &i) in ids.iter().enumerate() {
                let slot = address_of.get_mut(i as usize).filter(|s| s.is_none());
                let Some(slot) = slot else {
                    return Err(mismatch(dir));
                };
                *slot = Some(DocAddress::new(segment_ord as u32, doc_id as u32));
            }
            doc_of.push(ids);
        }
        let address_of = address_of
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| mismatch(dir))?;
        Ok(Bm25Index {
            searcher,
            text,
            analyzer: analyzer(),
            doc_of,
            address_of,
        })
    }

    /// The query's terms OR'ed, no query syntax, so any text is safe. A term repeated in the query
    /// counts each time, as in Anserini's (Pyserini's) bag-of-words BM25.
    fn query(&self, text: &str) -> BooleanQuery {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while let Some(token) = stream.next() {
            terms.push(Term::from_field_text(self.text, &token.text));
        }
        BooleanQuery::new_multiterms_query(terms)
    }

    /// Top `k` by BM25 (tantivy's: k1 = 1.2, b = 0.75), best first, ties by corpus order. A query
    /// with no indexable word (empty, only stop words or punctuation) finds nothing.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        let query = self.query(query);
        if k == 0 || query.clauses().is_empty() {
            return Vec::new();
        }
        let top = self
            .searcher
            .search(&query, &TopDocs::with_limit(k))
            .expect("reading the BM25 index");
        let mut hits: Vec<Hit> = top
            .into_iter()
            .map(|(score, at)| Hit {
                doc: self.doc_of[at.segment_ord as usize][at.doc_id as usize] as usize,
                score: f64::from(score),
            })
            .collect();
        hits.sort_by(by_score);
        hits
    }

    /// [`Self::search`] for each query, in parallel.
    pub fn search_many(&self, queries: &[&str], k: usize) -> Vec<Vec<Hit>> {
        queries.par_iter().map(|q| self.search(q, k)).collect()
    }

    /// BM25 scores of given documents for `query` (0 where no term matches), as `search` scores them.
    pub(crate) fn score_docs(&self, query: &str, docs: &[usize]) -> Vec<f64> {
        let query = self.query(query);
        let weight = query
            .weight(EnableScoring::enabled_from_searcher(&self.searcher))
            .expect("reading the BM25 index");
        docs.iter()
            .map(|&d| {
                let at = self.address_of[d];
                let segment = self.searcher.segment_reader(at.segment_ord);
                let mut scorer = weight.scorer(segment, 1.0).expect("reading the BM25 index");
                // A scorer may only seek forward; one already past the document misses it.
                let found = scorer.doc() <= at.doc_id && scorer.seek(at.doc_id) == at.doc_id;
                match found {
                    true => f64::from(scorer.score()),
                    false => 0.0,
                }
            })
            .collect()
    }
}

fn mismatch(dir: &Path) -> RetrieveError {
    RetrieveError::Index(format!(
        "{}: the index does not hold each document of the corpus once",
        dir.display()
    ))
}

/// Indexes every document (title and text) with its corpus position; one commit.
fn build(
    corpus: &Corpus,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), RetrieveError> {
    std::fs::create_dir(dir).map_err(io_error(dir))?;
    let mut schema = Schema::builder();
    let idx = schema.add_u64_field("idx", FAST);
    // Frequencies without positions: BM25 needs no more, and the index stays small.
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqs);
    let text = schema.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(indexing),
    );
    let index = Index::create_in_dir(dir, schema.build())?;
    index.tokenizers().register(ANALYZER, analyzer());
    let mut writer: IndexWriter<TantivyDocument> = index.writer(WRITER_MEMORY)?;
    let total = corpus.len();
    for (i, d) in corpus.docs.iter().enumerate() {
        writer.add_document(doc!(idx => i as u64, text => d.full_text()))?;
        if (i + 1) % PROGRESS_EVERY == 0 {
            progress(i + 1, total);
        }
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    progress(total, total);
    Ok(())
}

#[cfg(test)]
mod tests {
    use finerank_data::Doc;

    use super::*;

    #[test]
    fn score_docs_agrees_with_search_and_scores_unmatched_zero() {
        let docs = ["red apples and green apples", "a green field", "blue sky"];
        let corpus = Corpus::new(
            docs.iter()
                .enumerate()
                .map(|(i, t)| Doc {
                    id: i.to_string(),
                    title: String::new(),
                    text: t.to_string(),
                })
                .collect(),
        )
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let index = Bm25Index::open_or_build(&corpus, cache.path(), &mut |_, _| {}).unwrap();
        let hits = index.search("green apples", 10);
        assert_eq!(hits.iter().map(|h| h.doc).collect::<Vec<_>>(), [0, 1]);
        let scores = index.score_docs("green apples", &[2, 1, 0]);
        assert_eq!(scores, [0.0, hits[1].score, hits[0].score]);
    }
}
