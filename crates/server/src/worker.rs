//! `finerank worker`: a process that only trains. It claims queued fine-tunes from the database
//! that the servers share, runs them as a server's training workers do (`jobs`), and publishes
//! their models into the shared `--store` (or, without one, the data directory it shares with
//! the server on its machine). It answers no requests. SIGTERM or Ctrl-C puts its job back in
//! the queue at its next step, for another worker to resume at once.
use std::sync::Arc;

use anyhow::Context;
use finerank_engine::{FileStore, Registry};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::jobs::{Crew, Jobs};
use crate::store::{self, Database};
use crate::uploads::Uploads;

/// Trains queued jobs until Ctrl-C or SIGTERM, then requeues the one in hand and returns.
pub async fn work(config: Config) -> anyhow::Result<()> {
    let database = config.database().map_err(anyhow::Error::msg)?;
    let data_dir = config.data_dir();
    let jobs = tokio::task::spawn_blocking(move || start(config)).await??;
    eprintln!(
        "finerank worker: training jobs from {database} (data in {})",
        data_dir.display()
    );
    crate::shutdown_signal().await;
    tokio::task::spawn_blocking(move || jobs.shutdown()).await?;
    Ok(())
}

fn start(config: Config) -> anyhow::Result<Jobs> {
    config.check().map_err(anyhow::Error::msg)?;
    if config.training_workers == 0 {
        anyhow::bail!("--training-workers must be at least 1 for a worker");
    }
    let database = config.database().map_err(anyhow::Error::msg)?;
    if let Database::Sqlite(path) = &database {
        anyhow::bail!(
            "finerank worker needs the servers' --database postgres://... (it would train from \
             {} alone, which a server holds); on one machine without PostgreSQL, `finerank \
             serve --training-workers N` trains in the server",
            path.display()
        );
    }
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    crate::check_writable(&data_dir)?;
    let files = config.store.as_deref().map(FileStore::open).transpose()?;
    let mut registry = Registry::open(&data_dir)?;
    if let Some(files) = &files {
        registry = registry.with_store(files.clone());
    }
    let uploads = Arc::new(Uploads::attach(data_dir.join("uploads"), files));
    let crew = Crew {
        store: store::open(&database)?,
        catalog: Arc::new(Catalog::new(&config, registry)?),
        batcher: None,
        uploads,
        sole: false,
        role: "worker",
    };
    Jobs::start(crew, &config)
}
