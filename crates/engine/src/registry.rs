//! The local model registry: one Hugging Face checkpoint directory per fine-tuned model, with a
//! `finerank.json` record beside the weights.
//!
//! A model is published by renaming a complete staging directory into `models/`, and deleted by
//! renaming it out of `models/` before removing it, so the registry only ever lists whole models.
//! A staging directory belongs to the process writing it (see [`crate::staging`]): a crash
//! mid-write, or mid-delete, leaves debris in `staging/` that the next `open` removes, while a
//! model that a live process (another fine-tune) is about to publish stays.
//!
//! With a shared file store ([`Registry::with_store`]) the store holds the models and `models/`
//! is this process's cache of them. Publishing uploads every file to `models/<id>/files/`, then
//! writes `models/<id>/manifest.json` (the record, and each file's size and sha256) last: the
//! manifest is the commit, so a model without one (an upload cut short) is neither listed nor
//! served. A model is fetched into a staging directory, each file checked against the manifest,
//! and renamed into the cache whole; deleting removes the manifest first, then the files.
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use finerank_model::Kind;
use serde::{Deserialize, Serialize};

use crate::filestore::{key_of, local_path_of, Digest256, FileStore, FileStoreError};
use crate::staging::{self, REMOVING};

const RECORD: &str = "finerank.json";
/// In the store, `models/<id>/manifest.json`; in a cached model's directory, the copy of the
/// manifest it was fetched by, which tells whether the cache is still the store's model.
const MANIFEST: &str = "manifest.json";
const CACHED_MANIFEST: &str = ".manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0:?} is not a fine-tuned model id: ids look like <uuid>-ft")]
    BadId(String),
    #[error("{path}: unreadable record ({message}); delete the directory or restore the file")]
    BadRecord { path: String, message: String },
    #[error(
        "{path} is being written by another process (pid {owner}); wait for it, or use another id"
    )]
    StagingInUse { path: String, owner: String },
    /// Boxed: object_store's errors are large, and every registry result would carry their size.
    #[error(transparent)]
    Store(Box<FileStoreError>),
    #[error(
        "model {id}: {file} in the file store does not match its manifest (sha256 {found}, \
         {size} bytes; the manifest says {expected}, {expected_size} bytes), so it was not used: \
         the stored copy is damaged or was changed; delete the model and fine-tune it again"
    )]
    Corrupt {
        id: String,
        file: String,
        found: String,
        size: u64,
        expected: String,
        expected_size: u64,
    },
}

impl From<FileStoreError> for RegistryError {
    fn from(e: FileStoreError) -> RegistryError {
        RegistryError::Store(Box::new(e))
    }
}

/// What commits a model to the store: its record, and every file it needs with its digest.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    record: ModelRecord,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestFile {
    /// Relative to the checkpoint directory, with `/` between parts.
    path: String,
    #[serde(flatten)]
    digest: Digest256,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What the registry knows about a fine-tuned model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelRecord {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// The base model as the user named it, and the directory it was loaded from.
    pub base_model: String,
    pub base_model_dir: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub hyperparameters: serde_json::Value,
    /// Validation metrics of the fine-tuned model and of its base, and training figures.
    pub metrics: serde_json::Value,
    /// sha256 of the training and validation files, so a result can be traced to its data.
    pub train_sha256: String,
    pub valid_sha256: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Registry {
    root: PathBuf,
    /// The staging directories this process writes, by id, each with the file that holds its
    /// lock: held until the model is published, or until every clone of the registry is dropped.
    staged: Arc<Mutex<HashMap<String, File>>>,
    /// Where published models live when several processes share them; `models/` then caches.
    shared: Option<FileStore>,
}

impl Registry {
    /// `$FINERANK_HOME`, else `$XDG_DATA_HOME/finerank`, else `~/.local/share/finerank`.
    pub fn default_home() -> PathBuf {
        if let Some(home) = std::env::var_os("FINERANK_HOME") {
            return PathBuf::from(home);
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("finerank")
    }

    /// Opens (creating if needed) the registry under `home`, and removes what dead processes left
    /// in staging: unfinished models and unfinished deletes. Live writers' models stay.
    pub fn open(home: &Path) -> Result<Registry, RegistryError> {
        let reg = Registry {
            root: home.to_path_buf(),
            staged: Arc::default(),
            shared: None,
        };
        for dir in [reg.models_dir(), reg.staging_root()] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        let staging = reg.staging_root();
        staging::sweep(&staging).map_err(io(&staging))?;
        Ok(reg)
    }

    /// Keeps published models in `store` from now on, `models/` being this process's cache of
    /// them. Models published here before are not in the store and no longer listed.
    pub fn with_store(self, store: FileStore) -> Registry {
        Registry {
            shared: Some(store),
            ..self
        }
    }

    /// The shared store the models live in, if any.
    pub fn store(&self) -> Option<&FileStore> {
        self.shared.as_ref()
    }

    pub fn home(&self) -> &Path {
        &self.root
    }

    fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join("staging")
    }

    pub fn new_id() -> String {
        format!("{}-ft", uuid::Uuid::new_v4())
    }

    /// Only ids we mint are accepted, so no user-supplied string becomes a path.
    fn check_id(id: &str) -> Result<(), RegistryError> {
        let uuid = id
            .strip_suffix("-ft")
            .ok_or_else(|| RegistryError::BadId(id.into()))?;
        match uuid::Uuid::parse_str(uuid) {
            Ok(u) if u.hyphenated().to_string() == uuid => Ok(()),
            _ => Err(RegistryError::BadId(id.into())),
        }
    }

    /// Whether `id` has the shape of an id we mint (`<uuid>-ft`), without touching the disk.
    pub fn is_id(id: &str) -> bool {
        Self::check_id(id).is_ok()
    }

    /// Where a model being trained is written before it is published: created, and held by this
    /// process until [`publish`](Self::publish), so that no other process's `open` removes it.
    /// The caller saves the checkpoint to `staging_dir(id)/model`.
    pub fn staging_dir(&self, id: &str) -> Result<PathBuf, RegistryError> {
        Self::check_id(id)?;
        let dir = self.staging_root().join(id);
        let mut staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        if !staged.contains_key(id) {
            let lock = staging::claim(&dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock => RegistryError::StagingInUse {
                    path: dir.display().to_string(),
                    owner: staging::owner(&dir).map_or("unknown".into(), |p| p.to_string()),
                },
                _ => io(&dir)(e),
            })?;
            staged.insert(id.to_string(), lock);
        }
        Ok(dir)
    }

    /// Adds the record to a staged model, moves it into the registry in one rename, then lets go
    /// of its staging directory.
    pub fn publish(&self, record: &ModelRecord) -> Result<PathBuf, RegistryError> {
        Self::check_id(&record.id)?;
        let staging_dir = self.staging_root().join(&record.id);
        let staged = staging_dir.join("model");
        let path = staged.join(RECORD);
        let text = serde_json::to_string_pretty(record).expect("records serialize");
        let tmp = staged.join(".finerank.json.tmp");
        fs::write(&tmp, text).map_err(io(&tmp))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Some(store) = &self.shared {
            let manifest = upload(store, record, &staged)?;
            let cached = staged.join(CACHED_MANIFEST);
            fs::write(&cached, manifest).map_err(io(&cached))?;
        }
        let dest = self.models_dir().join(&record.id);
        fs::rename(&staged, &dest).map_err(io(&dest))?;
        // Removed while still held, then released; what a failure leaves, a later sweep removes.
        let _ = fs::remove_dir_all(&staging_dir);
        self.staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&record.id);
        Ok(dest)
    }

    /// Gives up a staged model that will not be published: its directory is removed while still
    /// held, then let go. What cannot be removed now, a later sweep removes.
    pub fn abandon(&self, id: &str) {
        let mut staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        if staged.contains_key(id) {
            let _ = fs::remove_dir_all(self.staging_root().join(id));
            staged.remove(id);
        }
    }

    /// All published models, newest first.
    pub fn list(&self) -> Result<Vec<ModelRecord>, RegistryError> {
        let mut out = Vec::new();
        if let Some(store) = &self.shared {
            for id in store.list_dirs("models")? {
                if !Self::is_id(&id) {
                    continue;
                }
                if let Some((manifest, _)) = self.manifest(store, &id)? {
                    out.push(manifest.record);
                }
            }
        } else {
            let dir = self.models_dir();
            for entry in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if Self::check_id(&name).is_ok() {
                    out.push(self.read_record(&entry.path())?);
                }
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn read_record(&self, dir: &Path) -> Result<ModelRecord, RegistryError> {
        let path = dir.join(RECORD);
        let bad = |message: String| RegistryError::BadRecord {
            path: path.display().to_string(),
            message,
        };
        let text = fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
    }

    /// The record and checkpoint directory of a published model, if there is one.
    /// With a store, the model is the store's: fetched into the cache unless the cache already
    /// holds it, and gone from the cache when the store no longer has it.
    pub fn get(&self, id: &str) -> Result<Option<(ModelRecord, PathBuf)>, RegistryError> {
        Self::check_id(id)?;
        if let Some(store) = &self.shared {
            return match self.manifest(store, id)? {
                Some((manifest, bytes)) => {
                    let dir = self.fetch(store, id, &manifest, &bytes)?;
                    Ok(Some((manifest.record, dir)))
                }
                None => {
                    self.remove_local(id)?;
                    Ok(None)
                }
            };
        }
        let dir = self.models_dir().join(id);
        if !dir.join(RECORD).exists() {
            return Ok(None);
        }
        Ok(Some((self.read_record(&dir)?, dir)))
    }

    /// Removes a model: renamed out of `models/` first (to `staging/<id>.removing`), so it is
    /// never listed without its files. A crash before the removal ends leaves the renamed
    /// directory, which the next `open` finishes removing. `false` when there is no such model.
    ///
    /// With a store, its manifest goes first (from then on no process lists or fetches it),
    /// then its files, then this process's cached copy; other processes drop theirs at their
    /// next `get`. A crash between leaves files that the next delete of the id removes.
    pub fn delete(&self, id: &str) -> Result<bool, RegistryError> {
        Self::check_id(id)?;
        let Some(store) = &self.shared else {
            return self.remove_local(id);
        };
        let prefix = format!("models/{id}");
        let existed = store.get(&format!("{prefix}/{MANIFEST}"))?.is_some();
        store.delete(&format!("{prefix}/{MANIFEST}"))?;
        store.delete_all(&prefix)?;
        self.remove_local(id)?;
        Ok(existed)
    }

    /// Whether the registry can be read now: the store's root is listed, or, without a store,
    /// the models directory.
    pub fn check(&self) -> Result<(), RegistryError> {
        match &self.shared {
            Some(store) => Ok(store.check()?),
            None => {
                let dir = self.models_dir();
                fs::read_dir(&dir).map(drop).map_err(io(&dir))
            }
        }
    }

    /// The manifest of a model in the store, parsed and as stored; `None` when it has none.
    fn manifest(
        &self,
        store: &FileStore,
        id: &str,
    ) -> Result<Option<(Manifest, Vec<u8>)>, RegistryError> {
        let key = format!("models/{id}/{MANIFEST}");
        let Some(bytes) = store.get(&key)? else {
            return Ok(None);
        };
        let manifest = serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadRecord {
            path: format!("{key} in the file store {}", store.url()),
            message: e.to_string(),
        })?;
        Ok(Some((manifest, bytes)))
    }

    /// The cached directory of a model in the store: the cache's if it was fetched by this very
    /// manifest, else downloaded into staging, every file checked against the manifest, and
    /// renamed into the cache in place of any older copy. A file that does not match fails the
    /// fetch and leaves the cache as it was.
    fn fetch(
        &self,
        store: &FileStore,
        id: &str,
        manifest: &Manifest,
        bytes: &[u8],
    ) -> Result<PathBuf, RegistryError> {
        let dest = self.models_dir().join(id);
        let current = |dir: &Path| fs::read(dir.join(CACHED_MANIFEST)).is_ok_and(|b| b == bytes);
        if current(&dest) {
            return Ok(dest);
        }
        // A directory of its own, held while it fills, so that no sweep removes it meanwhile
        // and a fetch of the same model by another thread does not collide with it.
        let fetching = self
            .staging_root()
            .join(format!("{id}.fetch-{}", uuid::Uuid::new_v4()));
        let _held = staging::claim(&fetching).map_err(io(&fetching))?;
        let fetched = self.download(store, id, manifest, bytes, &fetching.join("model"));
        let moved = fetched.and_then(|model| {
            let staging = self.staging_root();
            let _staging = staging::lock_root(&staging).map_err(io(&staging))?;
            // Another thread may have cached the same manifest while this one downloaded.
            if !current(&dest) {
                self.remove_local_locked(id)?;
                fs::rename(&model, &dest).map_err(io(&dest))?;
            }
            Ok(())
        });
        let _ = fs::remove_dir_all(&fetching);
        moved.map(|()| dest)
    }

    /// Downloads a model's files into `dir`, each checked against the manifest.
    fn download(
        &self,
        store: &FileStore,
        id: &str,
        manifest: &Manifest,
        bytes: &[u8],
        dir: &Path,
    ) -> Result<PathBuf, RegistryError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        for file in &manifest.files {
            let rel = local_path_of(&file.path).ok_or_else(|| RegistryError::BadRecord {
                path: format!("models/{id}/{MANIFEST} in the file store {}", store.url()),
                message: format!("{:?} is not a relative path", file.path),
            })?;
            let local = dir.join(rel);
            let parent = local.parent().expect("joined to dir");
            fs::create_dir_all(parent).map_err(io(parent))?;
            let got = store.download(&format!("models/{id}/files/{}", file.path), &local)?;
            if got != file.digest {
                return Err(RegistryError::Corrupt {
                    id: id.to_string(),
                    file: file.path.clone(),
                    found: got.sha256,
                    size: got.size,
                    expected: file.digest.sha256.clone(),
                    expected_size: file.digest.size,
                });
            }
        }
        let cached = dir.join(CACHED_MANIFEST);
        fs::write(&cached, bytes).map_err(io(&cached))?;
        Ok(dir.to_path_buf())
    }

    /// Removes the local copy of a model (the model itself without a store, the cached copy with
    /// one); `false` when there is none.
    fn remove_local(&self, id: &str) -> Result<bool, RegistryError> {
        let staging = self.staging_root();
        // Under the staging lock, so that a sweep does not remove the same files at once.
        let _staging = staging::lock_root(&staging).map_err(io(&staging))?;
        self.remove_local_locked(id)
    }

    /// [`Registry::remove_local`], for a caller that holds the staging lock.
    fn remove_local_locked(&self, id: &str) -> Result<bool, RegistryError> {
        let dir = self.models_dir().join(id);
        let doomed = self.staging_root().join(format!("{id}{REMOVING}"));
        match fs::rename(&dir, &doomed) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            renamed => renamed.map_err(io(&dir))?,
        }
        fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
        Ok(true)
    }
}

/// Uploads a staged model's files, then its manifest, which commits it; returns the manifest.
/// What a failure leaves in the store, without a manifest, is no model.
fn upload(
    store: &FileStore,
    record: &ModelRecord,
    staged: &Path,
) -> Result<Vec<u8>, RegistryError> {
    let prefix = format!("models/{}", record.id);
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(staged).sort_by_file_name() {
        let entry = entry.map_err(|e| io(staged)(e.into()))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(staged)
            .expect("walked from staged");
        let path = key_of(rel);
        let digest = store.upload(entry.path(), &format!("{prefix}/files/{path}"))?;
        files.push(ManifestFile { path, digest });
    }
    let manifest = Manifest {
        record: record.clone(),
        files,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    store.put(&format!("{prefix}/{MANIFEST}"), bytes.clone())?;
    Ok(bytes)
}

/// The current time as RFC 3339, for records.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
