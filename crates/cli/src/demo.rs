//! `finerank demo`: the Cohere tutorial's flow end to end on CaseHOLD and the default model.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use finerank_data::{prepare, validate, Mapping, PrepareOptions, Split, TestRow, ValidateOptions};
use finerank_engine::ModelRecord;
use finerank_engine::DEFAULT_MODEL;
use finerank_eval::{render_table, Bootstrap, Report};
use finerank_train::{Export, FinetuneJob, HyperOverrides};

use crate::evaluate::{measure, read_test_rows, report};
use crate::Ctx;

/// Tokens per input for training and for both models' evaluation, so the comparison is fair.
pub const MAX_LEN: usize = 384;

#[derive(clap::Args)]
pub struct Args {
    /// A directory with CaseHOLD's train.jsonl and test.jsonl (default: the shared copy).
    #[arg(long, env = "FINERANK_CASEHOLD")]
    pub data: Option<PathBuf>,
    /// Train on all of train.jsonl (less 154 validation rows) instead of the tutorial's 256 rows.
    #[arg(long, conflicts_with = "retrieval")]
    full: bool,
    /// CaseHOLD as search: mine negatives from a corpus of every holding, fine-tune, and re-rank
    /// BM25's top 100 for the 200 test queries.
    #[arg(long)]
    retrieval: bool,
    /// Where the prepared files and the report go (default: runs/demo, or runs/demo-retrieval).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Base model (default: the embedded default model).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub base: String,
    /// Also fine-tune LoRA adapters of this rank (saved as a PEFT adapter) beside the full
    /// fine-tune, and report both: accuracy, training time and the size of what is saved.
    #[arg(long, value_name = "RANK", conflicts_with = "retrieval")]
    lora: Option<usize>,
}

/// The CaseHOLD rows shipped beside the project for development and CI.
pub fn casehold_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = given.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/casehold")
    });
    if !dir.join("train.jsonl").is_file() {
        anyhow::bail!(
            "no CaseHOLD train.jsonl in {}; export the `casehold/casehold` dataset from Hugging Face \
             (columns citing_prompt, holding_0..4, label) as train.jsonl and test.jsonl and pass --data DIR",
            dir.display()
        );
    }
    Ok(dir)
}

/// A fine-tune of the demo's base on `dir`'s train.jsonl and valid.jsonl at the default
/// hyperparameters, reading `MAX_LEN` tokens as the evaluation does.
pub fn default_job(ctx: &Ctx, a: &Args, name: &str, dir: &Path) -> FinetuneJob {
    FinetuneJob {
        id: None,
        base: a.base.clone(),
        kind: None,
        name: Some(name.into()),
        train: dir.join("train.jsonl"),
        valid: Some(dir.join("valid.jsonl")),
        hyper: HyperOverrides::default(),
        seed: a.seed,
        max_len: Some(MAX_LEN),
        eval_every: None,
        max_steps: None,
        device: ctx.device,
        precision: ctx.precision,
        base_dtype: Default::default(),
        min_train_queries: None,
        min_valid_queries: None,
        resume_dir: None,
        instruction: None,
        export: Export::Merged,
    }
}

/// Bytes of the files in `dir`, its subfolders' included.
fn size_on_disk(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += match meta.is_dir() {
            true => size_on_disk(&entry.path())?,
            false => meta.len(),
        };
    }
    Ok(total)
}

fn step(n: usize, what: &str) {
    eprintln!("\n[{n}/6] {what}");
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    // The demo fine-tunes; int8 only scores.
    ctx.precision.training()?;
    if a.retrieval {
        return crate::demo_retrieval::run(ctx, a);
    }
    let started = Instant::now();
    let data = casehold_dir(a.data.clone())?;
    let out = a.out.clone().unwrap_or_else(|| "runs/demo".into());
    let prepared = out.join("data");

    step(1, "prepare: CaseHOLD rows -> rerank fine-tuning JSONL");
    let split = match a.full {
        true => Split::Counts {
            train: 1846,
            valid: 154,
            test: 0,
        },
        false => PrepareOptions::default().split,
    };
    let summary = prepare(
        &data.join("train.jsonl"),
        &Mapping::casehold(),
        &PrepareOptions {
            split,
            ..Default::default()
        },
        &prepared,
    )?;
    eprintln!(
        "{} train, {} validation, {} test rows in {}",
        summary.train,
        summary.valid,
        summary.test,
        prepared.display()
    );

    step(2, "review data");
    let base = ctx.load(&a.base, None)?;
    let opts = ValidateOptions {
        max_len: MAX_LEN,
        ..Default::default()
    };
    let review = validate(
        &prepared.join("train.jsonl"),
        Some(&prepared.join("valid.jsonl")),
        &opts,
        &base.pair_counter(),
    );
    drop(base);
    eprint!("{}", crate::validate::render(&review));
    if !review.ok {
        anyhow::bail!("the prepared data failed review");
    }

    let mut test_sets: Vec<(String, Vec<TestRow>)> = Vec::new();
    if summary.test > 0 {
        test_sets.push((
            "tutorial test (10 rows)".into(),
            read_test_rows(&prepared.join("test.jsonl"))?,
        ));
    }
    let test_file = data.join("test.jsonl");
    if test_file.is_file() {
        let rows = read_test_rows(&test_file)?;
        test_sets.push((format!("CaseHOLD test ({} rows)", rows.len()), rows));
    }

    step(3, "assess the base model");
    let base = ctx
        .load(&a.base, None)
        .with_context(|| format!("loading model {}", a.base))?;
    let mut base_measured = Vec::new();
    for (name, rows) in &test_sets {
        let measured = measure(&base, rows, base.window_for(Some(MAX_LEN)));
        let r = report(&measured, None, &Bootstrap::default())?;
        eprintln!("{name}: accuracy@1 {:.3}", r.metrics.accuracy_at_1.mean);
        base_measured.push(measured);
    }
    // Training loads its own copy of the base.
    drop(base);

    step(4, "fine-tune with the default hyperparameters");
    let mut jobs = vec![default_job(ctx, &a, "casehold-demo", &prepared)];
    if let Some(rank) = a.lora {
        let mut lora = default_job(ctx, &a, "casehold-demo-lora", &prepared);
        lora.hyper.lora_rank = Some(rank);
        lora.export = Export::Adapter;
        jobs.push(lora);
    }
    let mut records: Vec<ModelRecord> = Vec::new();
    for job in &jobs {
        let record = crate::finetune::train(ctx, job)?;
        eprintln!("registered {}", record.id);
        records.push(record);
    }

    step(5, "evaluate the fine-tuned model");
    // Per model, one report per test set.
    let mut reports: Vec<Vec<(String, Report)>> = Vec::new();
    for record in &records {
        let tuned = ctx
            .load(&record.id, None)
            .with_context(|| format!("loading model {}", record.id))?;
        let mut of_model = Vec::new();
        for ((name, rows), base) in test_sets.iter().zip(&base_measured) {
            let measured = measure(&tuned, rows, tuned.window_for(Some(MAX_LEN)));
            let r = report(&measured, Some(base), &Bootstrap::default())?;
            of_model.push((name.clone(), r));
        }
        reports.push(of_model);
    }

    step(6, "report: fine-tuned (B) against base (A)");
    let record = &records[0];
    let mut md = format!(
        "# finerank demo\n\nBase `{}`, fine-tuned `{}` on {} CaseHOLD queries ({} for validation), seed {}.\n\
         Training: {:.0} s at {:.1} pairs/s; total demo time {:.0} s.\n",
        a.base,
        record.id,
        summary.train,
        summary.valid,
        a.seed,
        record.metrics["train_seconds"].as_f64().unwrap_or_default(),
        record.metrics["train_pairs_per_second"].as_f64().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    let registry = ctx.registry()?;
    let mut summary_rows = String::new();
    for (record, of_model) in records.iter().zip(&reports) {
        let what = match record.hyperparameters["lora_rank"].as_u64() {
            Some(rank) => format!("LoRA rank {rank}, adapter saved"),
            None => "full fine-tune, model saved".to_string(),
        };
        for (name, r) in of_model {
            let table = render_table(r);
            println!("\n{name}, {what}\n{table}");
            md += &format!("\n## {name}, {what} (`{}`)\n\n```\n{table}```\n", record.id);
        }
        let (_, dir) = registry
            .get(&record.id)?
            .with_context(|| format!("{} is not in the registry", record.id))?;
        let accuracy = of_model
            .last()
            .map_or(f64::NAN, |(_, r)| r.metrics.accuracy_at_1.mean);
        summary_rows += &format!(
            "| {what} | {accuracy:.3} | {:.0} | {:.1} |\n",
            record.metrics["train_seconds"].as_f64().unwrap_or_default(),
            size_on_disk(&dir)? as f64 / 1e6
        );
    }
    if records.len() > 1 {
        let test = test_sets.last().map_or("", |(n, _)| n.as_str());
        let table = format!(
            "| run | accuracy@1 ({test}) | training s | saved MB |\n| --- | --- | --- | --- |\n{summary_rows}"
        );
        println!("\n{table}");
        md += &format!("\n## Full fine-tune and LoRA\n\n{table}");
    }
    let json = serde_json::json!({
        "model": record,
        "reports": reports[0].iter().map(|(n, r)| serde_json::json!({"test_set": n, "report": r})).collect::<Vec<_>>(),
        "lora": records.get(1).map(|r| serde_json::json!({
            "model": r,
            "reports": reports[1].iter().map(|(n, r)| serde_json::json!({"test_set": n, "report": r})).collect::<Vec<_>>(),
        })),
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )
    .with_context(|| format!("writing {}", out.join("report.json").display()))?;
    std::fs::write(out.join("report.md"), md)?;
    eprintln!(
        "\nreport written to {}/report.md and report.json ({:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
