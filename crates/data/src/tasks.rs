//! Training rows as ranking tasks: what validation ranks during fine-tuning, and the pool a
//! calibration is fitted on.
use crate::{TestRow, TrainRow};

/// Candidates a query is ranked against when its row has no hard negatives.
const BORROWED_DISTRACTORS: usize = 9;

/// Rows as ranking tasks: relevant passages first, then the hard negatives. A row without
/// negatives would rank its relevant passages against nothing, where every model scores
/// MRR@10 = 1 and no checkpoint can beat the base; it is ranked instead against the relevant
/// passages of the next rows (wrapping around), which a model can get wrong.
pub fn ranking_tasks(rows: &[TrainRow]) -> Vec<TestRow> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let borrowed = if r.hard_negatives.is_empty() {
                borrowed_passages(rows, i, BORROWED_DISTRACTORS)
            } else {
                Vec::new()
            };
            TestRow {
                query: r.query.clone(),
                documents: r
                    .relevant_passages
                    .iter()
                    .chain(&r.hard_negatives)
                    .chain(borrowed)
                    .cloned()
                    .collect(),
                gold_indices: (0..r.relevant_passages.len()).collect(),
            }
        })
        .collect()
}

/// Up to `n` distinct relevant passages of the rows after `row`, wrapping around, that are not
/// among `row`'s own relevant passages (two queries may share one).
fn borrowed_passages(rows: &[TrainRow], row: usize, n: usize) -> Vec<&String> {
    let own = &rows[row].relevant_passages;
    let mut borrowed = Vec::with_capacity(n);
    for k in 1..rows.len() {
        if borrowed.len() == n {
            break;
        }
        if let Some(p) = rows[(row + k) % rows.len()].relevant_passages.first() {
            if !own.contains(p) && !borrowed.contains(&p) {
                borrowed.push(p);
            }
        }
    }
    borrowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(q: &str, relevant: &[&str], negatives: &[&str]) -> TrainRow {
        TrainRow {
            query: q.into(),
            relevant_passages: relevant.iter().map(|s| s.to_string()).collect(),
            hard_negatives: negatives.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rows_without_negatives_rank_against_other_queries_passages() {
        let mut rows: Vec<TrainRow> = (0..12)
            .map(|i| row(&format!("q{i}"), &[&format!("p{i}")], &[]))
            .collect();
        // Two queries sharing one relevant passage: it is never a distractor for either.
        rows[1].relevant_passages = vec!["p0".into()];
        rows.push(row("mined", &["pm"], &["n1", "n2"]));
        let tasks = ranking_tasks(&rows);

        assert_eq!(tasks[0].gold_indices, [0]);
        assert_eq!(tasks[0].documents.len(), 1 + BORROWED_DISTRACTORS);
        assert_eq!(tasks[0].documents[0], "p0");
        assert!(!tasks[0].documents[1..].contains(&"p0".to_string()));
        // The last rows wrap around to the first ones.
        assert_eq!(tasks[11].documents[1], "pm");
        let p0 = tasks[11].documents.iter().filter(|d| *d == "p0").count();
        assert_eq!(p0, 1, "a passage two queries share is borrowed once");
        // A row with mined negatives is ranked against those alone.
        assert_eq!(tasks[12].documents, ["pm", "n1", "n2"]);
    }
}
