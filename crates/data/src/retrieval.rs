//! Retrieval collections made from reranking data, and splitting judgements by query.

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::corpus::{Corpus, Doc, Query};
use crate::error::{DataError, Flaw};
use crate::format::{invalid, TrainRow};
use crate::prepare::Example;
use crate::qrels::Judgements;

/// CaseHOLD as retrieval: queries are the citing prompts, the corpus is every distinct holding
/// text of all the given examples (dedup by exact text, ids "h0", "h1", ... in first-seen order),
/// each query's one relevant document is its correct holding (grade 1). Query ids "train-<n>" /
/// "test-<n>" from the raw line numbers. Returns the corpus and one Judgements per input slice.
/// Retrieving from all holdings, not five, is what a search system faces.
pub fn casehold_retrieval(
    train: &[Example],
    test: &[Example],
) -> Result<(Corpus, Judgements, Judgements), DataError> {
    let mut docs = Vec::new();
    let mut by_text: HashMap<&str, usize> = HashMap::new();
    for (split, examples) in [("train", train), ("test", test)] {
        for e in examples {
            for (k, text) in e.candidates.iter().enumerate() {
                if text.trim().is_empty() {
                    let flaw = Flaw::new(
                        "empty_holding",
                        format!("holding {k} is empty"),
                        "write the holding's text, or delete the row",
                    );
                    return Err(invalid(flaw, split, Some(e.line)));
                }
                by_text.entry(text).or_insert_with(|| {
                    docs.push(Doc {
                        id: format!("h{}", docs.len()),
                        title: String::new(),
                        text: text.clone(),
                    });
                    docs.len() - 1
                });
            }
        }
    }
    let judge = |split: &str, examples: &[Example]| -> Result<Judgements, DataError> {
        let mut judgements = Judgements {
            queries: Vec::new(),
            grades: Vec::new(),
        };
        let mut lines = HashSet::new();
        for e in examples {
            if !lines.insert(e.line) {
                let flaw = Flaw::new(
                    "duplicate_line",
                    "a second example from this line: the two query ids would clash",
                    "pass each raw row once",
                );
                return Err(invalid(flaw, split, Some(e.line)));
            }
            let gold = e
                .gold
                .iter()
                .map(|&g| e.candidates.get(g).map(|text| (by_text[text.as_str()], 1)));
            let grades = gold
                .collect::<Option<Vec<_>>>()
                .filter(|g| !g.is_empty())
                .ok_or_else(|| {
                    let flaw = Flaw::new(
                        "no_gold",
                        format!(
                            "the example's correct holding {:?} is not one of its {} holdings",
                            e.gold,
                            e.candidates.len()
                        ),
                        "set the label to the index of the correct holding",
                    );
                    invalid(flaw, split, Some(e.line))
                })?;
            judgements.queries.push(Query {
                id: format!("{split}-{}", e.line),
                text: e.query.clone(),
            });
            judgements.grades.push(grades);
        }
        Ok(judgements)
    };
    let train = judge("train", train)?;
    let test = judge("test", test)?;
    Ok((Corpus::new(docs)?, train, test))
}

/// The share of queries held out for validation when no validation set is given, by
/// `finerank mine` and by the server's mining alike.
pub const DEFAULT_VALID_SHARE: f64 = 0.1;

/// Split judged queries (never pairs, so no query leaks across parts) into train/valid/test
/// Judgements by shares, deterministically shuffled with ChaCha8 from seed. Each part keeps the
/// original query order; shares are rounded, capped at what is left, and train gets the rest.
pub fn split_by_query(
    j: &Judgements,
    valid_share: f64,
    test_share: f64,
    seed: u64,
) -> (Judgements, Judgements, Judgements) {
    let n = j.queries.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    // `as` saturates: a negative or NaN share takes nothing.
    let count = |share: f64, left: usize| ((share * n as f64).round() as usize).min(left);
    let test = count(test_share, n);
    let valid = count(valid_share, n - test);
    let (test_part, rest) = order.split_at(test);
    let (valid_part, train_part) = rest.split_at(valid);
    let part = |picked: &[usize]| {
        let mut picked = picked.to_vec();
        picked.sort_unstable();
        Judgements {
            queries: picked.iter().map(|&i| j.queries[i].clone()).collect(),
            grades: picked.iter().map(|&i| j.grades[i].clone()).collect(),
        }
    };
    (part(train_part), part(valid_part), part(test_part))
}

/// Cohere-format rows over a document collection, for mining: each row becomes a judged query
/// (id `line-<n>`, 1-based) whose relevant documents are its relevant passages, found in `corpus`
/// by exact text (a document's text or its title and text), or else added to it (ids
/// `passage-<k>`, skipping ids the corpus already has), so that no relevant passage can come back
/// as a negative. The corpus it returns takes a second set of rows, such as validation rows.
pub fn judge_rows(rows: &[TrainRow], corpus: Corpus) -> Result<(Corpus, Judgements), DataError> {
    let taken = corpus.index;
    let mut docs = corpus.docs;
    let mut by_text: HashMap<String, usize> = HashMap::new();
    for (i, d) in docs.iter().enumerate() {
        by_text.entry(d.text.clone()).or_insert(i);
        by_text.entry(d.full_text()).or_insert(i);
    }
    let mut judgements = Judgements {
        queries: Vec::with_capacity(rows.len()),
        grades: Vec::with_capacity(rows.len()),
    };
    let mut added = 0;
    for (n, row) in rows.iter().enumerate() {
        let grades = row
            .relevant_passages
            .iter()
            .map(|p| {
                let doc = *by_text.entry(p.clone()).or_insert_with(|| {
                    let id = loop {
                        added += 1;
                        let id = format!("passage-{added}");
                        if !taken.contains_key(&id) {
                            break id;
                        }
                    };
                    docs.push(Doc {
                        id,
                        title: String::new(),
                        text: p.clone(),
                    });
                    docs.len() - 1
                });
                (doc, 1)
            })
            .collect();
        judgements.queries.push(Query {
            id: format!("line-{}", n + 1),
            text: row.query.clone(),
        });
        judgements.grades.push(grades);
    }
    Ok((Corpus::new(docs)?, judgements))
}
