//! `finerank eval`: ranking metrics with confidence intervals, and a paired comparison.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use finerank_data::{examples_to_test, read_raw, read_test, Mapping, TestRow};
use finerank_engine::{assess, ScoreOptions};
use finerank_eval::{
    compare, ranks_csv, render_retrieval, render_table, retrieval_csv, summarize, Bootstrap,
    QueryMetrics, Report,
};

use crate::progress::bar;
use crate::{retrieval, Ctx, ModelArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Test JSONL: {query, documents, gold_indices} rows, or raw CaseHOLD rows.
    #[arg(long, required_unless_present = "beir", conflicts_with = "beir")]
    test: Option<PathBuf>,
    /// Evaluate as search uses a reranker instead: a BEIR folder (corpus.jsonl, queries.jsonl,
    /// qrels/<split>.tsv), whose first stage's top k each model re-ranks.
    #[arg(long)]
    beir: Option<PathBuf>,
    /// The qrels split to evaluate on, with --beir.
    #[arg(long, default_value = "test", requires = "beir")]
    split: String,
    /// A TREC run file ("qid Q0 docid rank score tag") to re-rank instead of BM25's top k.
    #[arg(long, requires = "beir")]
    run: Option<PathBuf>,
    /// How many of the first stage's candidates each model re-ranks, with --beir.
    #[arg(long, default_value_t = 100, requires = "beir")]
    top_k: usize,
    /// A second model to compare against (typically the base model).
    #[arg(long)]
    compare: Option<String>,
    /// Tokens per model input for both models (default: each model's window).
    #[arg(long)]
    max_length: Option<usize>,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write per-query figures as CSV here (first relevant ranks; with --beir, every metric).
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Our test format, or CaseHOLD's own columns (so its test split evaluates as it comes).
pub fn read_test_rows(path: &Path) -> anyhow::Result<Vec<TestRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let first = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    if first.contains("\"citing_prompt\"") {
        Ok(examples_to_test(&read_raw(path, &Mapping::casehold())?))
    } else {
        Ok(read_test(path)?)
    }
}

/// Per-query metrics of one model on `rows`, with a progress bar.
pub fn score_model(
    ctx: &Ctx,
    model: &str,
    rows: &[TestRow],
    max_len: Option<usize>,
) -> anyhow::Result<Vec<QueryMetrics>> {
    let reranker = ctx
        .load(model, None)
        .with_context(|| format!("loading model {model}"))?;
    let pb = bar(rows.len(), "eval");
    pb.set_message(model.to_string());
    let opts = ScoreOptions {
        max_len,
        ..Default::default()
    };
    let out = assess(&reranker, rows, &opts, &mut |done, _| {
        pb.set_position(done as u64)
    });
    pb.finish_and_clear();
    Ok(out)
}

/// The report for `model`, and for `baseline` beside it when given.
pub fn report(
    model: (&str, &[QueryMetrics]),
    baseline: Option<(&str, &[QueryMetrics])>,
    boot: &Bootstrap,
) -> anyhow::Result<Report> {
    Ok(Report {
        model: model.0.to_string(),
        metrics: summarize(model.1, boot),
        compare_to: baseline.map(|b| b.0.to_string()),
        baseline: baseline.map(|b| summarize(b.1, boot)),
        comparison: baseline.map(|b| compare(b.1, model.1, boot)).transpose()?,
    })
}

/// Writes `json` to `--out` and `csv` to `--csv` when asked.
fn write_outputs(a: &Args, json: &str, csv: impl FnOnce() -> String) -> anyhow::Result<()> {
    if let Some(out) = &a.out {
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(path) = &a.csv {
        std::fs::write(path, csv()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_retrieval(ctx: &Ctx, a: &Args, beir: &Path, boot: Bootstrap) -> anyhow::Result<ExitCode> {
    let setup = retrieval::Setup {
        beir,
        split: &a.split,
        run: a.run.as_deref(),
        top_k: a.top_k,
        max_len: a.max_length,
        boot,
    };
    // The baseline first, so the report compares the model against it as well as the first stage.
    let models: Vec<&str> = a
        .compare
        .iter()
        .map(String::as_str)
        .chain([a.model.model.as_str()])
        .collect();
    let report = retrieval::evaluate(ctx, &setup, &models)?;
    let json = serde_json::to_string_pretty(&report)?;
    if a.json {
        println!("{json}");
    } else {
        println!("{}", render_retrieval(&report));
    }
    write_outputs(a, &json, || retrieval_csv(&report))?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let boot = Bootstrap {
        resamples: a.bootstrap,
        ..Default::default()
    };
    if let Some(beir) = &a.beir {
        return run_retrieval(ctx, &a, beir, boot);
    }
    let test = a.test.as_deref().expect("clap requires --test or --beir");
    let rows = read_test_rows(test)?;
    let ours = score_model(ctx, &a.model.model, &rows, a.max_length)?;
    let theirs = a
        .compare
        .as_deref()
        .map(|m| score_model(ctx, m, &rows, a.max_length))
        .transpose()?;
    let baseline = a.compare.as_deref().zip(theirs.as_deref());
    let report = report((&a.model.model, &ours), baseline, &boot)?;
    let json = serde_json::to_string_pretty(&report)?;
    if a.json {
        println!("{json}");
    } else {
        println!(
            "{} queries from {}\n{}",
            rows.len(),
            test.display(),
            render_table(&report)
        );
    }
    write_outputs(&a, &json, || ranks_csv(&a.model.model, &ours, baseline))?;
    Ok(ExitCode::SUCCESS)
}
