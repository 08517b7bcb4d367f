//! `finerank validate`: the "review data" step.
use std::path::PathBuf;
use std::process::ExitCode;

use finerank_data::{validate, FileStats, Review, ValidateOptions};

use crate::{Ctx, ModelArg};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    train: PathBuf,
    #[arg(long)]
    valid: Option<PathBuf>,
    /// The model whose tokenizer and window the length statistics use.
    #[command(flatten)]
    model: ModelArg,
    /// Window to check lengths against (default: the model's).
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long, default_value_t = 256)]
    min_train_queries: usize,
    #[arg(long, default_value_t = 64)]
    min_valid_queries: usize,
    /// Print the review as JSON.
    #[arg(long)]
    json: bool,
}

pub fn review(ctx: &Ctx, a: &Args) -> anyhow::Result<Review> {
    let reranker = ctx.load(&a.model.model, None)?;
    let opts = ValidateOptions {
        min_train_queries: a.min_train_queries,
        min_valid_queries: a.min_valid_queries,
        max_len: a.max_length.unwrap_or(reranker.window()),
    };
    let review = validate(
        &a.train,
        a.valid.as_deref(),
        &opts,
        &reranker.pair_counter(),
    );
    Ok(review)
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let review = review(ctx, &a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&review)?);
    } else {
        print!("{}", render(&review));
    }
    Ok(if review.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn render(r: &Review) -> String {
    let mut out = String::new();
    for stats in [&r.train, &r.valid].into_iter().flatten() {
        out += &render_stats(stats);
    }
    for e in &r.errors {
        out += &format!("error: {e}\n");
    }
    for w in &r.warnings {
        out += &format!("warning: {w}\n");
    }
    out += &format!(
        "{}: {} error(s), {} warning(s)\n",
        if r.ok { "ready to train" } else { "not ready" },
        r.errors.len(),
        r.warnings.len()
    );
    out
}

fn render_stats(s: &FileStats) -> String {
    let mut out = format!(
        "{}\n  rows {}  unique queries {}  relevant/query {:.2}  hard negatives/query {:.2}\n  \
         pair tokens: p50 {}  p95 {}  max {}  truncated {} of {}\n  length histogram:\n",
        s.file,
        s.rows,
        s.unique_queries,
        s.avg_relevant,
        s.avg_hard_negatives,
        s.p50_pair_tokens,
        s.p95_pair_tokens,
        s.max_pair_tokens,
        s.truncated_pairs,
        s.pairs
    );
    let most = s
        .length_histogram
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(0)
        .max(1);
    for b in &s.length_histogram {
        let bar = "#".repeat((b.count * 40).div_ceil(most));
        out += &format!("    <= {:>5} {:>7} {bar}\n", b.up_to, b.count);
    }
    for (i, row) in s.samples.iter().enumerate() {
        out += &format!("  sample {}: {}\n", i + 1, clip(&row.query, 100));
        for p in &row.relevant_passages {
            out += &format!("    + {}\n", clip(p, 100));
        }
        for n in row.hard_negatives.iter().take(2) {
            out += &format!("    - {}\n", clip(n, 100));
        }
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}
