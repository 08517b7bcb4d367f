//! `finerank eval`: ranking metrics with confidence intervals, and a paired comparison.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use finerank_data::{examples_to_test, read_raw, read_test, Mapping, TestRow};
use finerank_engine::{assess, Assessment, LoadOptions, Reranker, ScoreOptions};
use finerank_eval::{
    compare, ranks_csv, render_retrieval, render_table, retrieval_csv, summarize, Bootstrap, Report,
};
use finerank_retrieve::DEFAULT_TOP_K;

use crate::progress::bar;
use crate::{retrieval, Ctx, ModelArg, PrecisionArg};

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
    #[arg(long, default_value_t = DEFAULT_TOP_K, requires = "beir")]
    top_k: usize,
    /// A second model to compare against (typically the base model).
    #[arg(long)]
    compare: Option<String>,
    /// Compare the model against itself at this precision instead, as --compare does, with the
    /// paired test: what a cheaper precision costs on these rows (`--precision int8 eval
    /// --compare-precision f32`).
    #[arg(long, value_enum, conflicts_with_all = ["compare", "beir"])]
    compare_precision: Option<PrecisionArg>,
    /// Tokens per model input (default: the model's own window). Compared models read at one
    /// window, the smaller of theirs, unless --own-windows.
    #[arg(long)]
    max_length: Option<usize>,
    /// Read each compared model at its own window (or --max-length, capped to what it allows)
    /// instead of one shared window.
    #[arg(long)]
    own_windows: bool,
    /// What the LLM rerankers (Qwen3, mxbai-rerank-v2) among the models judge by, in place of
    /// their own instruction. Refused when no model takes one.
    #[arg(long)]
    instruction: Option<String>,
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

/// Loads each model, in order, the ones that take an instruction (LLM rerankers) set to judge
/// by `instruction` when given; refused when none takes one.
pub fn load_models(
    ctx: &Ctx,
    models: &[&str],
    instruction: Option<&str>,
) -> anyhow::Result<Vec<Reranker>> {
    let mut rerankers = models
        .iter()
        .map(|&m| {
            ctx.load(m, None)
                .with_context(|| format!("loading model {m}"))
        })
        .collect::<anyhow::Result<Vec<Reranker>>>()?;
    if let Some(instruction) = instruction {
        if rerankers.iter().all(|r| r.instruction().is_none()) {
            anyhow::bail!(
                "--instruction: no model given takes an instruction; only LLM rerankers (Qwen3, \
                 mxbai-rerank-v2) do"
            );
        }
        for r in rerankers.iter_mut().filter(|r| r.instruction().is_some()) {
            r.set_instruction(instruction)?;
        }
    }
    Ok(rerankers)
}

/// The tokens per input each of `rerankers` reads with. Each model's own window is `max_len`
/// when given, else its own, capped at its position table. With `own`, each reads at that;
/// otherwise all read at the smallest of them, so that a comparison measures the models and not
/// how much of each text one of them saw (a model saved with a 384-token window and its base at
/// 256 both read 256).
pub fn windows(rerankers: &[Reranker], max_len: Option<usize>, own: bool) -> Vec<usize> {
    let each: Vec<usize> = rerankers.iter().map(|r| r.window_for(max_len)).collect();
    match each.iter().min() {
        Some(&smallest) if !own => vec![smallest; each.len()],
        _ => each,
    }
}

/// A model measured on a test set, with the window it read.
pub struct Measured {
    pub name: String,
    pub window: usize,
    pub assessment: Assessment,
}

/// `reranker` measured on `rows` at `window` tokens per input, with a progress bar. A model that
/// outputs NaN or infinite scores is warned about: those rank last, so they never count as hits.
pub fn measure(reranker: &Reranker, rows: &[TestRow], window: usize) -> Measured {
    let name = reranker.name().to_string();
    let pb = bar(rows.len(), "eval");
    pb.set_message(name.clone());
    let opts = ScoreOptions {
        max_len: Some(window),
        ..Default::default()
    };
    let assessment = assess(reranker, rows, &opts, &mut |done, _| {
        pb.set_position(done as u64)
    });
    pb.finish_and_clear();
    if assessment.non_finite > 0 {
        let pairs: usize = rows.iter().map(|r| r.documents.len()).sum();
        eprintln!(
            "warning: {name}: {} of {pairs} scores are NaN or infinite, a broken model output; \
             they rank after every finite score, so they never count as hits",
            assessment.non_finite
        );
    }
    Measured {
        name,
        window,
        assessment,
    }
}

/// The report for `model`, and for `baseline` beside it when given.
pub fn report(
    model: &Measured,
    baseline: Option<&Measured>,
    boot: &Bootstrap,
) -> anyhow::Result<Report> {
    Ok(Report {
        model: model.name.clone(),
        metrics: summarize(&model.assessment.per_query, boot),
        compare_to: baseline.map(|b| b.name.clone()),
        baseline: baseline.map(|b| summarize(&b.assessment.per_query, boot)),
        comparison: baseline
            .map(|b| compare(&b.assessment.per_query, &model.assessment.per_query, boot))
            .transpose()?,
        ece: Some(model.assessment.ece),
        baseline_ece: baseline.map(|b| b.assessment.ece),
        window: Some(model.window),
        baseline_window: baseline.map(|b| b.window),
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
        own_windows: a.own_windows,
        instruction: a.instruction.as_deref(),
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
    let names: Vec<&str> = [a.model.model.as_str()]
        .into_iter()
        .chain(a.compare.as_deref())
        .collect();
    let mut rerankers = load_models(ctx, &names, a.instruction.as_deref())?;
    if let Some(precision) = a.compare_precision {
        // The model beside itself, each labelled with its precision ("<name> (int8)").
        let model = rerankers
            .pop()
            .expect("--compare-precision conflicts with --compare");
        let name = model.name().to_string();
        let opts = LoadOptions {
            precision: precision.into(),
            ..ctx.load_options(None)
        };
        let mut twin = ctx.load_with(&a.model.model, &opts)?;
        // load_models has checked that this model takes an instruction.
        if let Some(instruction) = a.instruction.as_deref() {
            twin.set_instruction(instruction)?;
        }
        rerankers.push(model.named(format!("{name} ({})", ctx.precision)));
        rerankers.push(twin.named(format!("{name} ({})", opts.precision)));
    }
    let windows = windows(&rerankers, a.max_length, a.own_windows);
    let measured: Vec<Measured> = rerankers
        .iter()
        .zip(windows)
        .map(|(r, w)| measure(r, &rows, w))
        .collect();
    let (ours, baseline) = (&measured[0], measured.get(1));
    let report = report(ours, baseline, &boot)?;
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
    write_outputs(&a, &json, || {
        ranks_csv(
            &ours.name,
            &ours.assessment.per_query,
            baseline.map(|b| (b.name.as_str(), b.assessment.per_query.as_slice())),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
