//! `finerank rerank`: rank a file of documents for one query.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use finerank_data::read_documents;
use finerank_engine::ScoreOptions;

use crate::{Ctx, ModelArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    #[arg(long)]
    query: String,
    /// One document per line, or a JSON array of strings when the name ends in `.json`.
    #[arg(long)]
    documents: PathBuf,
    /// Keep only the best N results.
    #[arg(long)]
    top_n: Option<usize>,
    /// Score at most this many overlapping windows of a long document (its best window counts).
    #[arg(long)]
    max_chunks_per_doc: Option<usize>,
    /// Tokens per model input (default: the model's window).
    #[arg(long)]
    max_length: Option<usize>,
    /// What an LLM reranker (Qwen3, mxbai-rerank-v2) judges the documents by, in place of its
    /// own instruction (the one it was fine-tuned with, else its model card's). Refused for
    /// other models.
    #[arg(long)]
    instruction: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    if a.query.trim().is_empty() {
        anyhow::bail!("--query is empty; give the text to rank the documents against");
    }
    let docs = read_documents(&a.documents)?;
    let reranker = ctx
        .load(&a.model.model, None)
        .with_context(|| format!("loading model {}", a.model.model))?;
    reranker.check_instruction(a.instruction.as_deref())?;
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let opts = ScoreOptions {
        max_len: a.max_length,
        max_chunks_per_doc: a.max_chunks_per_doc,
        instruction: a.instruction,
        ..Default::default()
    };
    let out = reranker.rerank(&a.query, &refs, a.top_n, &opts);
    if out.query_truncated {
        eprintln!("warning: the query is longer than the model allows and was cut; the score reads only its start");
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
