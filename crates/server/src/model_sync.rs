//! Keeps the models this server has loaded in step with the other processes that share its
//! database and file store (serving replicas, workers), so that any number of servers answer
//! alike.
//!
//! A model that another process publishes needs nothing here: the first request for it finds it
//! in the registry, which fetches it from the store. A model deleted elsewhere must stop
//! answering here too, and the rerank worker keeps what it loaded; so every
//! `--model-sync-interval` a thread:
//!
//! - reads the database's tombstones ([`crate::store::JobQueue::deleted_models`]): a model deleted
//!   since the last look is evicted from the rerank worker and its files are removed, from the
//!   store too, which finishes a delete that the deleting process did not live to end;
//! - asks the registry whether each loaded fine-tuned model is still published (its manifest in
//!   the store, else its directory): one that is not is evicted, and its cached copy goes. This
//!   covers a model deleted with no database row, by `finerank models delete`.
//!
//! A deleted model therefore answers 404 everywhere at most one interval, and one pass, after its
//! delete returned. Requests never wait on the database or the store for this.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use finerank_engine::Registry;

use crate::batcher::Batcher;
use crate::catalog::Catalog;
use crate::jobs::model_of;
use crate::store::Store;
use crate::wake::Wake;

pub struct ModelSync {
    wake: Arc<Wake>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ModelSync {
    /// Starts the thread; its first pass takes the tombstones already there as seen (the start's
    /// recovery removed their files).
    pub fn start(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        batcher: Batcher,
        interval: Duration,
    ) -> anyhow::Result<ModelSync> {
        let wake = Arc::new(Wake::default());
        let mut sync = SyncState {
            store,
            catalog,
            batcher,
            seen: None,
            failing: false,
        };
        let stop = wake.clone();
        let thread = std::thread::Builder::new()
            .name("model-sync".into())
            .spawn(move || {
                sync.pass();
                while stop.pause(interval) {
                    sync.pass();
                }
            })?;
        Ok(ModelSync {
            wake,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread after the pass in hand.
    pub fn shutdown(&self) {
        self.wake.stop();
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
    }
}

struct SyncState {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    batcher: Batcher,
    /// The job ids of the tombstones seen so far; `None` before the first pass.
    seen: Option<HashSet<String>>,
    /// Whether the last pass failed, so that an outage is logged when it begins and ends, not
    /// at every pass.
    failing: bool,
}

impl SyncState {
    fn pass(&mut self) {
        // Each half runs even when the other fails: a store outage does not hold back the
        // tombstones' evictions, nor a database outage the manifests'.
        let tombstones = self.tombstones();
        let result = self.loaded().and(tombstones);
        match (result, self.failing) {
            (Err(e), false) => {
                tracing::warn!("model sync: {e:#}; deletes made by other servers wait for it");
                self.failing = true;
            }
            (Ok(()), true) => {
                tracing::info!("model sync: the database and the store answer again");
                self.failing = false;
            }
            _ => {}
        }
    }

    /// Models deleted since the last pass: evicted, and their files removed.
    fn tombstones(&mut self) -> anyhow::Result<()> {
        let deleted = self.store.deleted_models()?;
        let Some(seen) = &mut self.seen else {
            self.seen = Some(deleted.into_iter().collect());
            return Ok(());
        };
        let registry = self.catalog.registry();
        let mut failed = None;
        let new: Vec<String> = deleted
            .into_iter()
            .filter(|id| !seen.contains(id))
            .collect();
        for id in new {
            let model = model_of(&id);
            self.batcher.evict(&model);
            // A failed removal is tried again at the next pass.
            match registry.delete(&model) {
                Ok(removed) => {
                    if removed {
                        tracing::info!(%model, "removed the files of a model deleted elsewhere");
                    }
                    seen.insert(id);
                }
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Loaded fine-tuned models that are no longer published: evicted.
    fn loaded(&self) -> anyhow::Result<()> {
        let default = self.catalog.default_name();
        let registry = self.catalog.registry();
        for model in self.batcher.loaded() {
            if model == default || !Registry::is_id(&model) {
                continue;
            }
            // A model still published is in the cache already: this reads its manifest alone.
            if registry.get(&model)?.is_none() {
                tracing::info!(%model, "no longer published: unloaded");
                self.batcher.evict(&model);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::jobs::tests::{make_ready, publish_staged, queue};
    use crate::metrics::Metrics;
    use crate::store::{self, Database};

    /// The shared tiny test model.
    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/tiny-bert-cross-encoder")
    }

    /// Publishes a copy of the tiny test model as `model`.
    fn publish(registry: &Registry, model: &str) {
        let fixture = fixture();
        let staged = registry.staging_dir(model).unwrap().join("model");
        std::fs::create_dir_all(&staged).unwrap();
        for entry in std::fs::read_dir(&fixture).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), staged.join(entry.file_name())).unwrap();
        }
        publish_staged(registry, model);
    }

    /// Another server deleted a model's row, and died before its files went: the tombstone alone
    /// unloads the model here and removes its files.
    #[test]
    fn a_tombstone_unloads_the_model_and_finishes_its_delete() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = fixture();
        let config = Config::from_flags([
            "--data-dir".as_ref(),
            dir.path().as_os_str(),
            "--default-model".as_ref(),
            fixture.as_os_str(),
        ])
        .unwrap();
        let store = store::open(&Database::Sqlite(dir.path().join("finerank.db"))).unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let catalog = Arc::new(Catalog::new(&config, registry.clone()).unwrap());
        let batcher = Batcher::start(catalog.clone(), &config, Metrics::new()).unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        let model = model_of(&id);
        queue(&*store, &id);
        make_ready(&*store, &id);
        publish(&registry, &model);
        batcher.warm_blocking(&model).unwrap();
        let mut sync = SyncState {
            store: store.clone(),
            catalog,
            batcher: batcher.clone(),
            seen: None,
            failing: false,
        };
        sync.pass();
        assert!(batcher.loaded().contains(&model));

        store.delete_model(&id).unwrap();
        sync.pass();
        assert!(registry.get(&model).unwrap().is_none(), "files still there");
        // The eviction is queued to the rerank thread; a warm queued behind it is answered after.
        let default = sync.catalog.default_name().to_string();
        batcher.warm_blocking(&default).unwrap();
        assert!(!batcher.loaded().contains(&model), "{:?}", batcher.loaded());
        assert!(!sync.failing);
        batcher.shutdown();
    }
}
