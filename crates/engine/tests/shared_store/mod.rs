//! The registry over a shared file store, as two processes (two homes, one store) see it; run
//! against each backend by `filestore.rs` and `s3.rs`. `engine.rs` takes its model records.
#![allow(dead_code)] // Each test binary uses its own part of this.

use std::path::{Path, PathBuf};

use finerank_engine::{
    DeviceChoice, FileStore, Group, Kind, LoadOptions, ModelRecord, Registry, RegistryError,
    Reranker, ScoreOptions,
};

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/tiny-bert-cross-encoder")
}

pub fn record(id: &str) -> ModelRecord {
    ModelRecord {
        id: id.into(),
        name: "n".into(),
        kind: Kind::CrossEncoder,
        base_model: "b".into(),
        base_model_dir: "d".into(),
        created_at: finerank_engine::now_rfc3339(),
        hyperparameters: serde_json::json!({}),
        metrics: serde_json::json!({}),
        train_sha256: "0".into(),
        valid_sha256: None,
    }
}

/// A registry in a home of its own over the store at `url`, as another process would open it.
pub fn replica(home: &Path, url: &str) -> Registry {
    Registry::open(home)
        .unwrap()
        .with_store(FileStore::open(url).unwrap())
}

/// Stages the tiny fixture as a trained model would be: a checkpoint, one file in a folder.
pub fn stage(reg: &Registry, id: &str) {
    let model = reg.staging_dir(id).unwrap().join("model");
    std::fs::create_dir_all(model.join("1_Extra")).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    std::fs::write(model.join("1_Extra/config.json"), "{}").unwrap();
}

pub fn score(dir: &Path) -> f32 {
    let opts = LoadOptions {
        device: DeviceChoice::Cpu,
        ..LoadOptions::default()
    };
    let model = Reranker::load("test", dir, &opts).unwrap();
    let group = Group {
        query: "a query",
        documents: vec!["a document"],
    };
    model.score(&[group], &ScoreOptions::default())[0].raw_scores[0]
}

/// The names in `dir`, sorted; none when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Published by one process, the model is listed by another, fetched into its cache whole (the
/// folder too) and scores as the original; deleted by the first, it is gone from the second,
/// cache included.
pub fn published_models_are_shared_and_deleted_everywhere(url: &str) {
    let (a_home, b_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(a_home.path(), url), replica(b_home.path(), url));
    let id = Registry::new_id();
    stage(&a, &id);
    a.publish(&record(&id)).unwrap();

    assert!(b.list().unwrap().iter().any(|r| r.id == id));
    let (got, dir) = b.get(&id).unwrap().unwrap();
    assert_eq!(got.id, id);
    assert_eq!(dir, b_home.path().join("models").join(&id));
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(fixture().join("model.safetensors")).unwrap()
    );
    assert!(dir.join("1_Extra/config.json").exists());
    assert_eq!(score(&dir), score(&fixture()));
    // A second get is served from the cache.
    assert_eq!(b.get(&id).unwrap().unwrap().1, dir);

    assert!(a.delete(&id).unwrap());
    assert!(!a.list().unwrap().iter().any(|r| r.id == id));
    assert!(b.get(&id).unwrap().is_none());
    assert!(
        !dir.exists(),
        "the deleted model stayed in the other's cache"
    );
    assert!(!b.delete(&id).unwrap());
}

/// A stored file that no longer matches the manifest is refused by name, and nothing reaches
/// the cache, nor stays in staging.
pub fn a_damaged_file_is_refused_and_nothing_is_cached(url: &str) {
    let (a_home, b_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(a_home.path(), url), replica(b_home.path(), url));
    let id = Registry::new_id();
    stage(&a, &id);
    a.publish(&record(&id)).unwrap();

    let store = FileStore::open(url).unwrap();
    let key = format!("models/{id}/files/model.safetensors");
    let mut bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    store.put(&key, bytes).unwrap();

    match b.get(&id) {
        Err(e @ RegistryError::Corrupt { .. }) => {
            let message = e.to_string();
            assert!(message.contains("model.safetensors"), "{message}");
        }
        other => panic!("a damaged model was fetched: {other:?}"),
    }
    assert_eq!(entries(&b_home.path().join("models")), Vec::<String>::new());
    assert_eq!(
        entries(&b_home.path().join("staging")),
        Vec::<String>::new()
    );
    a.delete(&id).unwrap();
}
