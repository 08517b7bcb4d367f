//! `finerank serve`: the HTTP API of the finerank-server crate, configured by flags and the
//! environment (`finerank serve --help`).
use std::process::ExitCode;

use crate::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: finerank_server::Config,
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let mut config = a.config;
    // Without --data-dir the server shares the registry of the other commands, so models trained
    // with `finerank finetune` are served and `finerank models` lists the server's.
    config.data_dir.get_or_insert_with(|| ctx.home.clone());
    config.device = ctx.device;
    config.precision = ctx.precision;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(finerank_server::serve(config))?;
    Ok(ExitCode::SUCCESS)
}
