//! `finerank demo --retrieval`: CaseHOLD as a search problem. The queries are the citing prompts,
//! the corpus is every holding of the shared rows, and each query's one relevant document is its
//! correct holding. Negatives are mined from the corpus (CaseHOLD's own four wrong holdings are
//! not used), the default model is fine-tuned on them, and the base and fine-tuned models re-rank
//! BM25's top 100 for the test queries.
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use finerank_data::{
    casehold_retrieval, read_raw, split_by_query, validate, write_beir, write_jsonl, Beir, Mapping,
    ValidateOptions,
};
use finerank_eval::{render_retrieval, Bootstrap};
use finerank_retrieve::MineOptions;

use crate::demo::{casehold_dir, default_job, Args, MAX_LEN};
use crate::mine::{mine_rows, render_report};
use crate::retrieval::{evaluate, Setup};
use crate::Ctx;

/// Validation queries held out of CaseHOLD's 2,000 training rows, as `demo --full` holds out 154.
const VALID_SHARE: f64 = 0.077;

fn step(n: usize, what: &str) {
    eprintln!("\n[{n}/5] {what}");
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let data = casehold_dir(a.data.clone())?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| "runs/demo-retrieval".into());

    step(
        1,
        "CaseHOLD as retrieval: a corpus of holdings, queries and qrels (BEIR layout)",
    );
    let mapping = Mapping::casehold();
    let train_rows = read_raw(&data.join("train.jsonl"), &mapping)?;
    let test_rows = read_raw(&data.join("test.jsonl"), &mapping)?;
    let (corpus, train, test) = casehold_retrieval(&train_rows, &test_rows)?;
    let beir_dir = out.join("casehold-beir");
    let mut queries = train.queries.clone();
    queries.extend(test.queries.iter().cloned());
    write_beir(
        &beir_dir,
        &corpus,
        &queries,
        &[("train", &train), ("test", &test)],
    )?;
    eprintln!(
        "{} documents, {} training and {} test queries in {}",
        corpus.len(),
        train.queries.len(),
        test.queries.len(),
        beir_dir.display()
    );

    step(
        2,
        "mine hard negatives from the corpus for the training queries",
    );
    let (fit, valid, _) = split_by_query(&train, VALID_SHARE, 0.0, a.seed);
    let beir = Beir {
        corpus,
        judgements: train,
    };
    let opts = MineOptions {
        seed: a.seed,
        ..Default::default()
    };
    let cache = beir_dir.join(".finerank-cache");
    let prepared = out.join("data");
    std::fs::create_dir_all(&prepared)
        .with_context(|| format!("creating {}", prepared.display()))?;
    let mut mining = Vec::new();
    for (name, judgements) in [("train", &fit), ("valid", &valid)] {
        let (rows, report) = mine_rows(ctx, &beir, judgements, &a.base, &opts, &cache)?;
        eprint!("{name}: {}", render_report(&report));
        write_jsonl(&prepared.join(format!("{name}.jsonl")), &rows)?;
        mining.push(report);
    }
    let mining_seconds: f64 = mining.iter().map(|r| r.seconds).sum();
    drop(beir);

    step(3, "review the mined data");
    let base = ctx.load(&a.base, None)?;
    let review = validate(
        &prepared.join("train.jsonl"),
        Some(&prepared.join("valid.jsonl")),
        &ValidateOptions {
            max_len: MAX_LEN,
            ..Default::default()
        },
        &base.pair_counter(),
    );
    drop(base);
    eprint!("{}", crate::validate::render(&review));
    if !review.ok {
        anyhow::bail!("the mined data failed review");
    }

    step(4, "fine-tune with the default hyperparameters");
    let job = default_job(ctx, &a, "casehold-retrieval-demo", &prepared);
    let record = crate::finetune::train(ctx, &job)?;
    eprintln!("registered {}", record.id);

    step(
        5,
        "re-rank BM25's top 100 for the test queries: BM25, base and fine-tuned",
    );
    let setup = Setup {
        beir: &beir_dir,
        split: "test",
        run: None,
        top_k: 100,
        max_len: Some(MAX_LEN),
        own_windows: false,
        instruction: None,
        boot: Bootstrap::default(),
    };
    let report = evaluate(ctx, &setup, &[&a.base, &record.id])?;
    let table = render_retrieval(&report);
    println!("\n{table}");
    let seconds = started.elapsed().as_secs_f64();
    let md = format!(
        "# finerank retrieval demo\n\nBase `{}`, fine-tuned `{}` on {} CaseHOLD queries with mined \
         negatives ({} for validation), seed {}. Mining: {mining_seconds:.0} s. Training: {:.0} s \
         at {:.1} pairs/s; total demo time {seconds:.0} s.\n\n{table}",
        a.base,
        record.id,
        fit.queries.len(),
        valid.queries.len(),
        a.seed,
        record.metrics["train_seconds"].as_f64().unwrap_or_default(),
        record.metrics["train_pairs_per_second"].as_f64().unwrap_or_default(),
    );
    write(&out.join("report.md"), &md)?;
    let json = serde_json::json!({
        "model": record, "mining": mining, "mining_seconds": mining_seconds,
        "report": report, "seconds": seconds,
    });
    write(
        &out.join("report.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    eprintln!(
        "\nreport written to {}/report.md and report.json ({seconds:.0} s)",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
