//! Choosing a query's hard negatives from its scored candidates, as sentence-transformers'
//! `mine_hard_negatives` does, counting what was dropped and why; and putting back the negatives
//! a user's own rows already had.
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use finerank_data::TrainRow;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::Hit;

/// Where candidates come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstStage {
    Bm25,
    Dense,
    /// BM25 and dense fused by reciprocal rank: lexical and semantic near misses both.
    Hybrid,
}

impl FromStr for FirstStage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bm25" => Ok(FirstStage::Bm25),
            "dense" => Ok(FirstStage::Dense),
            "hybrid" => Ok(FirstStage::Hybrid),
            other => Err(format!(
                "unknown first stage {other:?}: give bm25, dense or hybrid"
            )),
        }
    }
}

impl fmt::Display for FirstStage {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            FirstStage::Bm25 => "bm25",
            FirstStage::Dense => "dense",
            FirstStage::Hybrid => "hybrid",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// The best-scored survivors: the hardest negatives.
    Top,
    /// Drawn at random from the survivors: harder than random documents, less often false negatives.
    Random,
}

/// How negatives are mined. Ranks count candidates after the query's positives are removed.
///
/// The defaults differ from sentence-transformers' (3 negatives, no rank limit) where their
/// setting suits a ranking loss but not a reranker's training data: 7 negatives fill a
/// Cohere-style group, and `range_max` 50 keeps the scoring cost bounded. Margins are off, as
/// there: they judge false negatives by the base model's scores, and a base new to a domain often
/// ranks the relevant document below most candidates. On CaseHOLD as retrieval, a 5% relative
/// margin left 968 of 1,846 training queries without a single negative.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MineOptions {
    pub first_stage: FirstStage,
    /// Negatives per query.
    pub negatives: usize,
    /// Skip this many of the best candidates.
    pub range_min: usize,
    /// Look no further down than this rank.
    pub range_max: usize,
    /// A negative must score at most positive − margin (sentence-transformers' `absolute_margin`).
    pub absolute_margin: Option<f64>,
    /// A negative must score at most positive × (1 − margin) (sentence-transformers' `relative_margin`).
    pub relative_margin: Option<f64>,
    pub sampling: Sampling,
    /// Seeds the one generator that random sampling draws from, so a seed repeats exactly.
    pub seed: u64,
}

impl Default for MineOptions {
    fn default() -> Self {
        MineOptions {
            first_stage: FirstStage::Dense,
            negatives: 7,
            range_min: 0,
            range_max: 50,
            absolute_margin: None,
            relative_margin: None,
            sampling: Sampling::Top,
            seed: 0,
        }
    }
}

/// What a mining run looked at and kept.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MineReport {
    pub queries: usize,
    pub corpus_docs: usize,
    pub first_stage: String,
    /// "bi-encoder <name>", "cross-encoder <name>" or "bm25".
    pub scorer: String,
    /// Candidates inside the rank range.
    pub candidates: usize,
    /// Candidates judged relevant, met before the end of the rank range.
    pub dropped_positive: usize,
    /// Candidates whose text repeats a positive's or a better candidate's under another id.
    #[serde(default)]
    pub dropped_repeated_text: usize,
    /// Likely false negatives: scored too close to the positive.
    pub dropped_absolute_margin: usize,
    pub dropped_relative_margin: usize,
    /// Negatives kept in all.
    pub negatives: usize,
    /// Queries that got fewer negatives than asked (those with none included).
    pub queries_short: usize,
    pub queries_without_negatives: usize,
    /// Wall time of the mining, cache hits included.
    pub seconds: f64,
    /// Caches reused: "bm25 index", "corpus embeddings".
    pub cache_hits: Vec<String>,
}

/// Chooses one query's negatives. `candidates` are (doc, score) best first, positives included;
/// `positive_score` is the lowest score among the positives, the conservative reference for the
/// margins. Returns the chosen documents, best first, and adds to `report`. Random sampling draws
/// without replacement from the candidates that survive the range and margins.
pub fn select_negatives(
    candidates: &[Hit],
    positives: &[usize],
    positive_score: f64,
    opts: &MineOptions,
    rng: &mut ChaCha8Rng,
    report: &mut MineReport,
) -> Vec<usize> {
    let mut survivors = Vec::new();
    let mut rank = 0;
    for hit in candidates {
        if rank >= opts.range_max {
            break;
        }
        if positives.contains(&hit.doc) {
            report.dropped_positive += 1;
            continue;
        }
        rank += 1;
        if rank <= opts.range_min {
            continue;
        }
        report.candidates += 1;
        // The comparisons are sentence-transformers' own, so the same margin drops the same candidates.
        if opts
            .absolute_margin
            .is_some_and(|m| hit.score + m > positive_score)
        {
            report.dropped_absolute_margin += 1;
        } else if opts
            .relative_margin
            .is_some_and(|m| hit.score > positive_score * (1.0 - m))
        {
            report.dropped_relative_margin += 1;
        } else {
            survivors.push(hit.doc);
        }
    }
    let chosen: Vec<usize> = match opts.sampling {
        Sampling::Top => survivors.into_iter().take(opts.negatives).collect(),
        Sampling::Random => {
            let amount = opts.negatives.min(survivors.len());
            let mut picks = rand::seq::index::sample(rng, survivors.len(), amount).into_vec();
            picks.sort_unstable();
            picks.into_iter().map(|i| survivors[i]).collect()
        }
    };
    report.negatives += chosen.len();
    if chosen.len() < opts.negatives {
        report.queries_short += 1;
        if chosen.is_empty() {
            report.queries_without_negatives += 1;
        }
    }
    chosen
}

/// Puts the negatives the user's own rows had (`given`, matched by query text, the first row of
/// a query winning) before the mined ones, each once: a user's negatives are chosen with knowledge
/// mining lacks.
pub fn keep_given_negatives(rows: &mut [TrainRow], given: &[TrainRow]) {
    let mut own: HashMap<&str, &[String]> = HashMap::new();
    for g in given {
        own.entry(g.query.as_str()).or_insert(&g.hard_negatives);
    }
    for row in rows.iter_mut() {
        let Some(&own) = own.get(row.query.as_str()) else {
            continue;
        };
        let mined = std::mem::replace(&mut row.hard_negatives, own.to_vec());
        row.hard_negatives
            .extend(mined.into_iter().filter(|n| !own.contains(n)));
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// Documents 0..n scoring 1.0, 0.9, 0.8, ... best first.
    fn ladder(n: usize) -> Vec<Hit> {
        (0..n)
            .map(|doc| Hit {
                doc,
                score: 1.0 - doc as f64 / 10.0,
            })
            .collect()
    }

    fn opts(negatives: usize) -> MineOptions {
        MineOptions {
            negatives,
            absolute_margin: None,
            relative_margin: None,
            ..MineOptions::default()
        }
    }

    fn select(
        cands: &[Hit],
        positives: &[usize],
        pos: f64,
        o: &MineOptions,
    ) -> (Vec<usize>, MineReport) {
        let mut report = MineReport::default();
        let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
        let chosen = select_negatives(cands, positives, pos, o, &mut rng, &mut report);
        (chosen, report)
    }

    #[test]
    fn positives_are_dropped_before_ranks_count() {
        let (chosen, report) = select(&ladder(10), &[0, 2], 1.0, &opts(3));
        assert_eq!(chosen, [1, 3, 4]);
        assert_eq!(report.dropped_positive, 2);
        assert_eq!((report.negatives, report.queries_short), (3, 0));
    }

    #[test]
    fn rank_range_bounds_the_candidates() {
        let o = MineOptions {
            range_min: 2,
            range_max: 5,
            ..opts(10)
        };
        // Ranks without the positive 2: doc 0→1, 1→2, 3→3, 4→4, 5→5; skip two, stop after the fifth.
        let (chosen, report) = select(&ladder(10), &[2], 1.0, &o);
        assert_eq!(chosen, [3, 4, 5]);
        assert_eq!((report.candidates, report.dropped_positive), (3, 1));
        assert_eq!(
            (report.queries_short, report.queries_without_negatives),
            (1, 0)
        );
        let (none, report) = select(&ladder(10), &[], 1.0, &MineOptions { range_min: 10, ..o });
        assert!(none.is_empty());
        assert_eq!(
            (report.queries_short, report.queries_without_negatives),
            (1, 1)
        );
    }

    #[test]
    fn margins_drop_and_count_likely_false_negatives() {
        // Positive scores 0.85. Absolute 0.1: keep ≤ 0.75. Relative 0.2: keep ≤ 0.68.
        let absolute = MineOptions {
            absolute_margin: Some(0.1),
            ..opts(10)
        };
        let (chosen, report) = select(&ladder(10), &[], 0.85, &absolute);
        assert_eq!(chosen, (3..10).collect::<Vec<_>>());
        assert_eq!(report.dropped_absolute_margin, 3);
        let relative = MineOptions {
            relative_margin: Some(0.2),
            ..opts(10)
        };
        let (chosen, report) = select(&ladder(10), &[], 0.85, &relative);
        assert_eq!(chosen, (4..10).collect::<Vec<_>>());
        assert_eq!(report.dropped_relative_margin, 4);
        // Both: each candidate counted once, under the first margin that drops it.
        let both = MineOptions {
            absolute_margin: Some(0.1),
            ..relative
        };
        let (chosen, report) = select(&ladder(10), &[], 0.85, &both);
        assert_eq!(chosen, (4..10).collect::<Vec<_>>());
        assert_eq!(
            (
                report.dropped_absolute_margin,
                report.dropped_relative_margin
            ),
            (3, 1)
        );
        // As in sentence-transformers, a zero margin keeps a candidate tying the positive.
        let zero = MineOptions {
            absolute_margin: Some(0.0),
            ..opts(10)
        };
        let tied = ladder(3);
        assert_eq!(select(&tied, &[], tied[1].score, &zero).0, [1, 2]);
    }

    #[test]
    fn random_sampling_is_seeded_and_best_first() {
        let random = |seed| MineOptions {
            sampling: Sampling::Random,
            seed,
            ..opts(5)
        };
        let cands = ladder(40);
        let (a, _) = select(
            &cands,
            &[],
            1.0,
            &MineOptions {
                range_max: 40,
                ..random(1)
            },
        );
        let (b, _) = select(
            &cands,
            &[],
            1.0,
            &MineOptions {
                range_max: 40,
                ..random(1)
            },
        );
        let (c, _) = select(
            &cands,
            &[],
            1.0,
            &MineOptions {
                range_max: 40,
                ..random(2)
            },
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 5);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "best first: {a:?}");
        assert_ne!(a, [0, 1, 2, 3, 4], "not the top five");
        // Fewer survivors than asked: all of them.
        assert_eq!(select(&ladder(3), &[], 1.0, &random(1)).0, [0, 1, 2]);
    }

    #[test]
    fn given_negatives_come_first_and_once() {
        let row = |q: &str, negatives: &[&str]| TrainRow {
            query: q.into(),
            relevant_passages: vec!["p".into()],
            hard_negatives: negatives.iter().map(|n| n.to_string()).collect(),
        };
        let mut mined = vec![row("a", &["m1", "own"]), row("b", &["m2"])];
        keep_given_negatives(
            &mut mined,
            &[row("a", &["own", "mine"]), row("a", &["later"])],
        );
        assert_eq!(mined[0].hard_negatives, ["own", "mine", "m1"]);
        assert_eq!(mined[1].hard_negatives, ["m2"]);
    }

    #[test]
    fn first_stage_reads_what_it_writes() {
        for s in [FirstStage::Bm25, FirstStage::Dense, FirstStage::Hybrid] {
            assert_eq!(s.to_string().parse::<FirstStage>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("splade".parse::<FirstStage>().unwrap_err().contains("bm25"));
    }
}
