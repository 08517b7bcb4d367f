//! `finerank serve`: the HTTP API of the finerank-server crate, configured by flags and the
//! environment (`finerank serve --help`).
use std::future::Future;
use std::process::ExitCode;

use finerank_server::Config;

use crate::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: Config,
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    run_with(ctx, a.config, finerank_server::serve)
}

/// Runs `f` (serving, or a worker's training) on `config` completed from the global flags.
pub fn run_with<F>(
    ctx: &Ctx,
    mut config: Config,
    f: impl FnOnce(Config) -> F,
) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<()>>,
{
    // Without --data-dir the server shares the registry of the other commands, so models trained
    // with `finerank finetune` are served and `finerank models` lists the server's.
    config.data_dir.get_or_insert_with(|| ctx.home.clone());
    config.device = ctx.device;
    config.precision = ctx.precision;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(f(config))?;
    Ok(ExitCode::SUCCESS)
}
