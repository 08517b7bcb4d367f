//! The registry over a shared store on the filesystem (`--store file:///path`).
mod shared_store;

use finerank_engine::Registry;
use shared_store::*;

fn store_url(dir: &std::path::Path) -> String {
    url::Url::from_directory_path(dir).unwrap().to_string()
}

#[test]
fn published_models_are_shared_and_deleted_everywhere_on_a_filesystem() {
    let store = tempfile::tempdir().unwrap();
    published_models_are_shared_and_deleted_everywhere(&store_url(store.path()));
}

#[test]
fn a_damaged_file_on_a_filesystem_is_refused() {
    let store = tempfile::tempdir().unwrap();
    a_damaged_file_is_refused_and_nothing_is_cached(&store_url(store.path()));
}

/// A publish cut short after the files and before the manifest (here the manifest cannot be
/// written) leaves files in the store but no model: not listed, not fetched, by either process.
#[test]
fn a_publish_cut_short_before_its_manifest_leaves_no_model() {
    let store = tempfile::tempdir().unwrap();
    let url = store_url(store.path());
    let (a_home, b_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(a_home.path(), &url), replica(b_home.path(), &url));
    let id = Registry::new_id();
    stage(&a, &id);
    let blocker = store.path().join("models").join(&id).join("manifest.json");
    std::fs::create_dir_all(&blocker).unwrap();

    assert!(a.publish(&record(&id)).is_err());
    a.abandon(&id);
    std::fs::remove_dir(&blocker).unwrap();
    let files = store.path().join("models").join(&id).join("files");
    assert!(
        files.join("model.safetensors").exists(),
        "the files were not uploaded"
    );

    for reg in [&a, &b] {
        assert!(!reg.list().unwrap().iter().any(|r| r.id == id));
        assert!(reg.get(&id).unwrap().is_none());
    }
    assert_eq!(entries(&a_home.path().join("models")), Vec::<String>::new());
    assert_eq!(entries(&b_home.path().join("models")), Vec::<String>::new());
    // Deleting the id clears what the cut-short publish left.
    a.delete(&id).unwrap();
    assert!(!files.exists());
}

#[test]
fn a_store_url_that_is_neither_s3_nor_a_file_path_is_refused_with_the_forms_it_takes() {
    let e = finerank_engine::FileStore::open("ftp://host/dir").unwrap_err();
    assert!(e.to_string().contains("s3://bucket"), "{e}");
}
