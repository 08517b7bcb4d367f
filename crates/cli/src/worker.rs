//! `finerank worker`: trains the fine-tunes that servers queue in a shared PostgreSQL database,
//! one process per GPU (`finerank worker --device cuda:1 ...`), configured as `serve` is.
use std::process::ExitCode;

use crate::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: finerank_server::Config,
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    crate::serve::run_with(ctx, a.config, finerank_server::work)
}
