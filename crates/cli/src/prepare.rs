//! `finerank prepare`: raw rows into train, validation and test files; or a corpus with its
//! queries and relevant documents into training files with mined negatives, as `finerank mine`.
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use finerank_data::{prepare, Mapping, PrepareOptions, Split};

use crate::{mine, Ctx};

#[derive(clap::Args)]
pub struct Args {
    /// JSONL or CSV rows (CaseHOLD columns by default), or with --corpus, Cohere-format rows
    /// (hard negatives optional).
    #[arg(long, required_unless_present = "beir")]
    input: Option<PathBuf>,
    /// A BEIR folder (corpus.jsonl, queries.jsonl, qrels/train.tsv) instead: its queries are
    /// split into training and validation by query, and each gets hard negatives mined from the
    /// corpus with the default model, as `finerank mine --beir` does at its defaults (`mine`
    /// takes every mining setting).
    #[arg(long, conflicts_with_all = ["input", "train", "ratios", "limit", "query_col",
          "candidate_cols", "candidates_col", "positive_cols"])]
    beir: Option<PathBuf>,
    /// A BEIR corpus.jsonl to mine the --input rows' negatives from (`finerank mine --train
    /// --corpus` at its defaults).
    #[arg(long, requires = "input", conflicts_with_all = ["train", "ratios", "limit",
          "query_col", "candidate_cols", "candidates_col", "positive_cols"])]
    corpus: Option<PathBuf>,
    /// Directory for train.jsonl, valid.jsonl and test.jsonl.
    #[arg(long, default_value = "data")]
    out: PathBuf,
    /// Rows for each split, taken in file order (or after --seed shuffles). Default: 256/154/10,
    /// the Cohere tutorial's split of the first 420 rows.
    #[arg(long, requires_all = ["valid", "test"], conflicts_with = "ratios")]
    train: Option<usize>,
    #[arg(long, requires_all = ["train", "test"])]
    valid: Option<usize>,
    #[arg(long, requires_all = ["train", "valid"])]
    test: Option<usize>,
    /// Split by shares instead, e.g. 0.8,0.1,0.1.
    // Not `num_args = 3`: clap counts the comma-joined list as one value and refuses it, so
    // `split` checks the count.
    #[arg(long, value_delimiter = ',')]
    ratios: Option<Vec<f64>>,
    /// Shuffle with this seed before splitting.
    #[arg(long)]
    seed: Option<u64>,
    /// Use only the first N rows.
    #[arg(long)]
    limit: Option<usize>,
    /// Column holding the query (generic data).
    #[arg(long)]
    query_col: Option<String>,
    /// Columns holding the candidates, in order, with --label-col naming the relevant one.
    #[arg(long, value_delimiter = ',')]
    candidate_cols: Option<Vec<String>>,
    /// One column holding a JSON list of candidates, with --label-col.
    #[arg(long)]
    candidates_col: Option<String>,
    /// Column holding the index of the relevant candidate.
    #[arg(long)]
    label_col: Option<String>,
    /// Columns holding relevant passages (a string or a JSON list each).
    #[arg(long, value_delimiter = ',')]
    positive_cols: Option<Vec<String>>,
    /// Columns holding hard negatives (a string or a JSON list each).
    #[arg(long, value_delimiter = ',')]
    negative_cols: Option<Vec<String>>,
}

impl Args {
    fn mapping(&self) -> anyhow::Result<Mapping> {
        let query = self
            .query_col
            .clone()
            .unwrap_or_else(|| "citing_prompt".into());
        let label = || self.label_col.clone().unwrap_or_else(|| "label".into());
        Ok(match (&self.candidate_cols, &self.candidates_col, &self.positive_cols) {
            (None, None, None) if self.query_col.is_none() => Mapping::casehold(),
            (Some(cols), None, None) => Mapping::Candidates { query, candidates: cols.clone(), label: label() },
            (None, Some(col), None) => Mapping::CandidateList { query, candidates: col.clone(), label: label() },
            (None, None, Some(pos)) => Mapping::PosNeg {
                query,
                positives: pos.clone(),
                negatives: self.negative_cols.clone().unwrap_or_default(),
            },
            _ => bail!(
                "give exactly one of --candidate-cols (with --label-col), --candidates-col (with --label-col) \
                 or --positive-cols (with --negative-cols), or none of them for CaseHOLD columns"
            ),
        })
    }

    fn split(&self) -> anyhow::Result<Split> {
        Ok(match (&self.ratios, self.train) {
            (Some(r), _) => match r[..] {
                [train, valid, test] => Split::Ratios { train, valid, test },
                _ => bail!(
                    "--ratios takes three shares, train, validation and test, e.g. 0.8,0.1,0.1 \
                     (got {})",
                    r.len()
                ),
            },
            (None, Some(train)) => Split::Counts {
                train,
                valid: self.valid.unwrap_or(0),
                test: self.test.unwrap_or(0),
            },
            (None, None) => PrepareOptions::default().split,
        })
    }
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let mut flags: Vec<OsString> = match (&a.beir, &a.input, &a.corpus) {
        (Some(beir), _, _) => vec!["--beir".into(), beir.into()],
        (None, Some(rows), Some(corpus)) => {
            vec![
                "--train".into(),
                rows.into(),
                "--corpus".into(),
                corpus.into(),
            ]
        }
        _ => Vec::new(),
    };
    if !flags.is_empty() {
        flags.extend(["--out".into(), a.out.clone().into()]);
        if let Some(seed) = a.seed {
            flags.extend(["--seed".into(), seed.to_string().into()]);
        }
        return mine::run(ctx, mine::Args::with_defaults(flags)?);
    }
    let opts = PrepareOptions {
        split: a.split()?,
        shuffle_seed: a.seed,
        limit: a.limit,
    };
    let input = a
        .input
        .as_ref()
        .expect("clap requires --input without --beir");
    let summary = prepare(input, &a.mapping()?, &opts, &a.out)?;
    eprintln!(
        "wrote {} train, {} validation and {} test rows to {}",
        summary.train,
        summary.valid,
        summary.test,
        a.out.display()
    );
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}
