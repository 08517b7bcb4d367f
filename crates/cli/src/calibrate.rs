//! `finerank calibrate`: fit how a model's raw scores become relevance scores on rows whose
//! relevant passages are known, report the expected calibration error before and after, and with
//! `--write` keep the fit as `calibration.json` beside the model.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use finerank_data::{ranking_tasks, read_train};
use finerank_engine::{
    default_model_dir, fit_calibration, resolve, ScoreOptions, CALIBRATION_FILE, DEFAULT_MODEL,
};

use crate::progress::bar;
use crate::{Ctx, ModelArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Rows to fit on: JSONL of {query, relevant_passages, hard_negatives}. A row without
    /// negatives is ranked against other rows' relevant passages, as validation ranks it.
    #[arg(long)]
    data: PathBuf,
    /// Write the fit as calibration.json into the model's directory: a fine-tuned <uuid>-ft model
    /// or a checkpoint directory of your own, never the built-in default model.
    #[arg(long)]
    write: bool,
    /// Tokens per model input (default: the model's window).
    #[arg(long)]
    max_length: Option<usize>,
}

/// The built-in default model stays as its package installed it: a calibration of it belongs in
/// the code's default, where every user gets it, not in one machine's copy.
fn is_default_model(reference: &str, dir: &Path) -> bool {
    let canonical = |p: &Path| p.canonicalize().ok();
    reference == DEFAULT_MODEL
        || canonical(dir).is_some_and(|d| Some(d) == canonical(&default_model_dir()))
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let model = &a.model.model;
    let (_, dir) = resolve(model, &ctx.registry()?)?;
    if a.write && is_default_model(model, &dir) {
        bail!(
            "--write: {model} is the built-in default model ({}), whose files stay as installed; \
             calibrate a fine-tuned model (<uuid>-ft) or a checkpoint directory of your own, or \
             leave out --write to measure only",
            dir.display()
        );
    }
    let rows = read_train(&a.data)?;
    let tasks = ranking_tasks(&rows);
    let reranker = ctx
        .load(model, None)
        .with_context(|| format!("loading model {model}"))?;
    let opts = ScoreOptions {
        max_len: a.max_length,
        ..Default::default()
    };
    let pb = bar(tasks.len(), "calibrate");
    let fitted = fit_calibration(
        &reranker,
        &tasks,
        &opts,
        reranker.calibration(),
        &mut |done, _| pb.set_position(done as u64),
    );
    pb.finish_and_clear();
    let fitted = fitted.with_context(|| format!("calibrating {model} on {}", a.data.display()))?;
    let report = fitted
        .fitted_on
        .as_ref()
        .expect("a fitted calibration carries its report");

    let source = match dir.join(CALIBRATION_FILE).is_file() {
        true => "its calibration.json",
        false => "its kind's default",
    };
    eprintln!(
        "{model} ({:?}): {} pairs, {} relevant, from {} queries in {}",
        reranker.kind(),
        report.pairs,
        report.positives,
        tasks.len(),
        a.data.display()
    );
    eprintln!(
        "before: {} ({source}): ECE {:.4}",
        reranker.calibration(),
        report.ece_before
    );
    eprintln!(
        "after:  {fitted}: ECE {:.4} (2-fold cross-fitted by query)",
        report.ece_after
    );
    if a.write {
        fitted.write(&dir)?;
        eprintln!("wrote {}", dir.join(CALIBRATION_FILE).display());
    }
    println!("{}", serde_json::to_string_pretty(&fitted)?);
    Ok(ExitCode::SUCCESS)
}
