//! Relevance judgements (BEIR's qrels TSV, or TREC qrels) and TREC run files, both tied to a corpus.

use std::collections::HashMap;
use std::path::Path;

use crate::corpus::{Corpus, Query};
use crate::error::{DataError, Flaw};
use crate::format::{display, invalid, jsonl_lines, read_file};

/// A split's relevance judgements: one entry per judged query (in order of first appearance in the
/// qrels file), each with (doc index into corpus.docs, grade) pairs; grade 0 = judged not relevant.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgements {
    pub queries: Vec<Query>,
    pub grades: Vec<Vec<(usize, u32)>>,
}

impl Judgements {
    /// Indices of the documents judged relevant (grade > 0) for query i.
    pub fn relevant(&self, i: usize) -> Vec<usize> {
        self.grades[i]
            .iter()
            .filter(|&&(_, grade)| grade > 0)
            .map(|&(doc, _)| doc)
            .collect()
    }
}

/// The columns of a line: tab-separated when it has a tab (BEIR, where ids may hold spaces, and
/// are taken as they are, as BEIR's loader does), else whitespace-separated (TREC).
fn columns(line: &str) -> Vec<&str> {
    if line.contains('\t') {
        line.split('\t').collect()
    } else {
        line.split_whitespace().collect()
    }
}

/// Reads BEIR's `query-id<TAB>corpus-id<TAB>score` (the header line is optional) or TREC's
/// `qid 0 docid grade`. Every id must be in `corpus` or `queries`, and every judged query needs a
/// relevant document, since a query nothing can be found for only lowers every system's score alike.
pub fn read_qrels(
    path: &Path,
    corpus: &Corpus,
    queries: &[Query],
) -> Result<Judgements, DataError> {
    let file = display(path);
    let bytes = read_file(path)?;
    let query_index: HashMap<&str, usize> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| (q.id.as_str(), i))
        .collect();
    let mut judgements = Judgements {
        queries: Vec::new(),
        grades: Vec::new(),
    };
    // For each query in `queries`, its position in `judgements`; for each judged query, its first line.
    let mut judged: Vec<Option<usize>> = vec![None; queries.len()];
    let mut first_line = Vec::new();
    let mut pair_line: HashMap<(usize, usize), usize> = HashMap::new();
    let mut width = None;
    for (n, line) in jsonl_lines(&bytes) {
        let fail = |message: String, fix: String| {
            invalid(Flaw::new("qrels", message, fix), &file, Some(n))
        };
        let cols = columns(line.map_err(|f| invalid(f, &file, Some(n)))?);
        let is_number = |s: &str| s.parse::<f64>().is_ok();
        if width.is_none() && cols.len() == 3 && !is_number(cols[2]) {
            width = Some(3); // the header line
            continue;
        }
        let width = *width.get_or_insert(cols.len());
        let (query, doc, grade) = match (cols.len(), width) {
            (3, 3) => (cols[0], cols[1], cols[2]),
            (4, 4) => (cols[0], cols[2], cols[3]),
            (found, 3 | 4) => {
                return Err(fail(
                    format!("the line has {found} columns, the file's first line {width}"),
                    format!("write every line like the first: {}", layout(width)),
                ))
            }
            (found, _) => {
                return Err(fail(
                    format!("the line has {found} columns; qrels have 3 (BEIR) or 4 (TREC)"),
                    format!("write {QRELS_SHAPE}; or TREC's {}", layout(4)),
                ))
            }
        };
        let grade: u32 = grade.parse().map_err(|_| {
            fail(
                format!("grade `{grade}` is not a non-negative integer"),
                "write the grade as 0 (judged not relevant) or a whole number from 1 up (relevant)"
                    .into(),
            )
        })?;
        let &q = query_index.get(query).ok_or_else(|| {
            fail(
                format!("no query has the id `{query}`"),
                "add the query to queries.jsonl, or delete this line (ids must match exactly)"
                    .into(),
            )
        })?;
        let d = corpus.get(doc).ok_or_else(|| {
            fail(
                format!("no document in the corpus has the id `{doc}`"),
                "add the document to corpus.jsonl, or delete this line (ids must match exactly)"
                    .into(),
            )
        })?;
        let j = *judged[q].get_or_insert_with(|| {
            judgements.queries.push(queries[q].clone());
            judgements.grades.push(Vec::new());
            first_line.push(n);
            judgements.queries.len() - 1
        });
        if let Some(first) = pair_line.insert((j, d), n) {
            return Err(fail(
                format!(
                    "query `{query}` and document `{doc}` are judged again (line {first} has them)"
                ),
                "keep one line per (query, document) pair".into(),
            ));
        }
        judgements.grades[j].push((d, grade));
    }
    if judgements.queries.is_empty() {
        let flaw = Flaw::new(
            "empty",
            "the file holds no judgements",
            format!("write one line per judged (query, document) pair: {QRELS_SHAPE}"),
        );
        return Err(invalid(flaw, &file, None));
    }
    if let Some(j) = (0..judgements.queries.len())
        .find(|&j| judgements.grades[j].iter().all(|&(_, grade)| grade == 0))
    {
        let flaw = Flaw::new(
            "no_relevant",
            format!(
                "query `{}` has no relevant document in {file}: every grade is 0",
                judgements.queries[j].id
            ),
            "add a line with a grade of 1 or more for the query, or drop the query's lines",
        );
        return Err(invalid(flaw, &file, Some(first_line[j])));
    }
    Ok(judgements)
}

fn layout(width: usize) -> &'static str {
    if width == 3 {
        "query-id<TAB>corpus-id<TAB>score"
    } else {
        "query-id 0 corpus-id grade"
    }
}

pub(crate) const QRELS_SHAPE: &str =
    "query-id<TAB>corpus-id<TAB>score, after the header line query-id<TAB>corpus-id<TAB>score";
const RUN_SHAPE: &str = "query-id Q0 doc-id rank score tag";

/// A TREC run file ("qid Q0 docid rank score tag" per line): each judged query's retrieved documents
/// as (doc index, score), best first, in Judgements' query order; a judged query absent from the run
/// gets an empty list. Queries the judgements lack are skipped, as runs often cover more queries.
pub fn read_run(
    path: &Path,
    corpus: &Corpus,
    judgements: &Judgements,
) -> Result<Vec<Vec<(usize, f64)>>, DataError> {
    let file = display(path);
    let bytes = read_file(path)?;
    let query_index: HashMap<&str, usize> = judgements
        .queries
        .iter()
        .enumerate()
        .map(|(i, q)| (q.id.as_str(), i))
        .collect();
    let mut hits: Vec<Vec<(usize, f64, u64)>> = vec![Vec::new(); judgements.queries.len()];
    let mut pair_line: HashMap<(usize, usize), usize> = HashMap::new();
    let mut lines = 0;
    for (n, line) in jsonl_lines(&bytes) {
        lines += 1;
        let fail =
            |message: String, fix: &str| invalid(Flaw::new("run", message, fix), &file, Some(n));
        let cols = columns(line.map_err(|f| invalid(f, &file, Some(n)))?);
        let &[query, _, doc, rank, score, _] = cols.as_slice() else {
            return Err(fail(
                format!("the line has {} columns, a run has 6", cols.len()),
                &format!("write every line as: {RUN_SHAPE}"),
            ));
        };
        let rank: u64 = rank.parse().map_err(|_| {
            fail(
                format!("rank `{rank}` is not a non-negative integer"),
                "write the rank as a whole number: 1 for the best document",
            )
        })?;
        let score: f64 = score
            .parse()
            .ok()
            .filter(|s: &f64| !s.is_nan())
            .ok_or_else(|| {
                fail(
                    format!("score `{score}` is not a number"),
                    "write the retrieval score as a number, higher for better documents",
                )
            })?;
        let d = corpus.get(doc).ok_or_else(|| {
            fail(
                format!("no document in the corpus has the id `{doc}`"),
                "rank documents of this corpus only: was the run made over another collection?",
            )
        })?;
        let Some(&q) = query_index.get(query) else {
            continue;
        };
        if let Some(first) = pair_line.insert((q, d), n) {
            return Err(fail(
                format!("query `{query}` retrieves document `{doc}` again (line {first} has it)"),
                "list each document once per query",
            ));
        }
        hits[q].push((d, score, rank));
    }
    if lines == 0 {
        let flaw = Flaw::new(
            "empty",
            "the run holds no lines",
            format!("write one line per retrieved document: {RUN_SHAPE}"),
        );
        return Err(invalid(flaw, &file, None));
    }
    Ok(hits
        .into_iter()
        .map(|mut list| {
            list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
            list.into_iter().map(|(d, score, _)| (d, score)).collect()
        })
        .collect())
}
