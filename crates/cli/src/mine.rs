//! `finerank mine`: a corpus, queries and their relevant documents (BEIR's layout) into training
//! and validation files with mined hard negatives.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use finerank_data::{
    judge_rows, read_beir, read_corpus, read_train, split_by_query, write_jsonl, Beir, Judgements,
    TrainRow, DEFAULT_VALID_SHARE,
};
use finerank_engine::{resolve, DEFAULT_MODEL};
use finerank_retrieve::{
    keep_given_negatives, mine, model_fingerprint, FirstStage, MineOptions, MineReport, Sampling,
};

use crate::progress::StageBars;
use crate::Ctx;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// A BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.
    #[arg(long, required_unless_present = "train", conflicts_with = "train")]
    beir: Option<PathBuf>,
    /// The qrels split whose queries become training data.
    #[arg(long, default_value = "train")]
    split: String,
    /// Or Cohere-format training rows (hard negatives optional; any given are kept first)...
    #[arg(long, requires = "corpus")]
    train: Option<PathBuf>,
    /// ...with the collection to mine from, as a BEIR corpus.jsonl ({"_id", "title", "text"}).
    #[arg(long, requires = "train")]
    corpus: Option<PathBuf>,
    /// Where train.jsonl, valid.jsonl and mining.json go.
    #[arg(long)]
    out: PathBuf,
    /// Share of the split's queries held out for validation (whole queries, never pairs).
    #[arg(long, default_value_t = DEFAULT_VALID_SHARE)]
    valid_share: f64,
    #[command(flatten)]
    mining: MiningArgs,
}

impl Args {
    /// What `flags` say, with every mining setting at its default: `prepare --beir` and
    /// `prepare --corpus` mine as `mine` does when told nothing more.
    pub fn with_defaults(flags: Vec<std::ffi::OsString>) -> Result<Args, clap::Error> {
        #[derive(clap::Parser)]
        struct Mine {
            #[command(flatten)]
            args: Args,
        }
        let argv = std::iter::once("mine".into()).chain(flags);
        Ok(<Mine as clap::Parser>::try_parse_from(argv)?.args)
    }
}

/// How negatives are mined.
#[derive(clap::Args, Clone)]
struct MiningArgs {
    /// The model that scores candidates (and, for `dense`, embeds the corpus): the base you
    /// will fine-tune. `none` mines on BM25 scores alone.
    #[arg(long = "mining-model", default_value = DEFAULT_MODEL)]
    model: String,
    /// Where candidates come from: the model's embeddings of the whole corpus (a cross-encoder
    /// has none and rescores BM25's), BM25 (tantivy), or both fused.
    #[arg(long, default_value_t = MineOptions::default().first_stage)]
    first_stage: FirstStage,
    /// Hard negatives per query.
    #[arg(long, default_value_t = MineOptions::default().negatives)]
    negatives: usize,
    /// Skip this many of the best-scored candidates (positives removed first).
    #[arg(long, default_value_t = MineOptions::default().range_min)]
    range_min: usize,
    /// Look no further down the candidates than this rank.
    #[arg(long, default_value_t = MineOptions::default().range_max)]
    range_max: usize,
    /// Drop a candidate scoring above the positive's score minus this (a likely unjudged positive).
    #[arg(long)]
    absolute_margin: Option<f64>,
    /// Drop a candidate scoring above the positive's score times (1 - this), e.g. 0.05.
    #[arg(long)]
    relative_margin: Option<f64>,
    /// Take the best-scored survivors, or draw them at random.
    #[arg(long, value_enum, default_value = "top")]
    sampling: SamplingArg,
    /// Makes a run repeat exactly: the validation split and random sampling draw from it.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where indexes and embeddings are cached (default: `.finerank-cache` inside the BEIR folder).
    #[arg(long)]
    cache: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SamplingArg {
    Top,
    Random,
}

impl MiningArgs {
    fn options(&self) -> MineOptions {
        MineOptions {
            first_stage: self.first_stage,
            negatives: self.negatives,
            range_min: self.range_min,
            range_max: self.range_max,
            absolute_margin: self.absolute_margin,
            relative_margin: self.relative_margin,
            sampling: match self.sampling {
                SamplingArg::Top => Sampling::Top,
                SamplingArg::Random => Sampling::Random,
            },
            seed: self.seed,
        }
    }
}

/// The cache folder for a BEIR folder's indexes and embeddings.
pub fn cache_dir(beir: &Path, given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| beir.join(".finerank-cache"), Path::to_path_buf)
}

/// Mines negatives for every judged query of `judgements` with `model` scoring the candidates
/// (`none`: BM25 scores), caching under `cache`, and returns the training rows.
pub fn mine_rows(
    ctx: &Ctx,
    beir: &Beir,
    judgements: &Judgements,
    model: &str,
    opts: &MineOptions,
    cache: &Path,
) -> anyhow::Result<(Vec<TrainRow>, MineReport)> {
    let scorer = if model == "none" {
        None
    } else {
        let (_, dir) = resolve(model, &ctx.registry()?)?;
        let key = model_fingerprint(&dir)?;
        Some((ctx.load(model, None)?, key))
    };
    let mut bars = StageBars::default();
    let mined = mine(
        &beir.corpus,
        judgements,
        scorer.as_ref().map(|(r, k)| (r, k.as_str())),
        opts,
        cache,
        &mut |stage, done, total| bars.update(stage, done, total),
    );
    bars.finish();
    Ok(mined?)
}

pub fn render_report(r: &MineReport) -> String {
    format!(
        "mined {} negatives for {} queries over {} documents ({} first stage, scored by {}) in {:.1} s\n\
         candidates looked at: {}; dropped as judged relevant: {}; as repeated texts: {}; as likely \
         false negatives: {} (absolute margin) + {} (relative margin)\n\
         queries short of negatives: {} ({} with none){}\n",
        r.negatives,
        r.queries,
        r.corpus_docs,
        r.first_stage,
        r.scorer,
        r.seconds,
        r.candidates,
        r.dropped_positive,
        r.dropped_repeated_text,
        r.dropped_absolute_margin,
        r.dropped_relative_margin,
        r.queries_short,
        r.queries_without_negatives,
        if r.cache_hits.is_empty() {
            String::new()
        } else {
            format!("; reused from cache: {}", r.cache_hits.join(", "))
        },
    )
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    if !(0.0..1.0).contains(&a.valid_share) {
        anyhow::bail!(
            "--valid-share {} is outside [0, 1): give the share of queries held out, e.g. 0.1",
            a.valid_share
        );
    }
    let (beir, given, folder) = match (&a.beir, &a.train, &a.corpus) {
        (Some(dir), _, _) => (read_beir(dir, &a.split)?, Vec::new(), dir.clone()),
        (None, Some(train), Some(corpus)) => {
            let rows = read_train(train)?;
            let (corpus_docs, judgements) = judge_rows(&rows, read_corpus(corpus)?)?;
            let beir = Beir {
                corpus: corpus_docs,
                judgements,
            };
            let folder = corpus.parent().unwrap_or(Path::new(".")).to_path_buf();
            (beir, rows, folder)
        }
        _ => unreachable!("clap requires --beir, or --train with --corpus"),
    };
    let (train, valid, _) = split_by_query(&beir.judgements, a.valid_share, 0.0, a.mining.seed);
    let opts = a.mining.options();
    let cache = cache_dir(&folder, a.mining.cache.as_deref());
    // Both parts are mined before anything is written, so a failure leaves no half a dataset.
    let mut mined = Vec::new();
    for (name, judgements) in [("train", &train), ("valid", &valid)] {
        if judgements.queries.is_empty() {
            continue;
        }
        let (mut rows, report) = mine_rows(ctx, &beir, judgements, &a.mining.model, &opts, &cache)?;
        keep_given_negatives(&mut rows, &given);
        eprint!("{name}: {}", render_report(&report));
        mined.push((name, rows, report));
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut reports = Vec::new();
    for (name, rows, report) in mined {
        let file = a.out.join(format!("{name}.jsonl"));
        write_jsonl(&file, &rows)?;
        eprintln!("wrote {} rows to {}", rows.len(), file.display());
        reports.push(serde_json::json!({"file": file, "report": report}));
    }
    let report_file = a.out.join("mining.json");
    std::fs::write(&report_file, serde_json::to_string_pretty(&reports)?)
        .with_context(|| format!("writing {}", report_file.display()))?;
    Ok(ExitCode::SUCCESS)
}
