//! The local model registry: one Hugging Face checkpoint directory per fine-tuned model, with a
//! `finerank.json` record beside the weights.
//!
//! A model is published by renaming a complete staging directory into `models/`, and deleted by
//! renaming it out of `models/` before removing it, so the registry only ever lists whole models.
//! A staging directory belongs to the process writing it (see [`crate::staging`]): a crash
//! mid-write, or mid-delete, leaves debris in `staging/` that the next `open` removes, while a
//! model that a live process (another fine-tune) is about to publish stays.
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use finerank_model::Kind;
use serde::{Deserialize, Serialize};

use crate::staging::{self, REMOVING};

const RECORD: &str = "finerank.json";

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
        };
        for dir in [reg.models_dir(), reg.staging_root()] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        let staging = reg.staging_root();
        staging::sweep(&staging).map_err(io(&staging))?;
        Ok(reg)
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
        let dir = self.models_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if Self::check_id(&name).is_ok() {
                out.push(self.read_record(&entry.path())?);
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
    pub fn get(&self, id: &str) -> Result<Option<(ModelRecord, PathBuf)>, RegistryError> {
        Self::check_id(id)?;
        let dir = self.models_dir().join(id);
        if !dir.join(RECORD).exists() {
            return Ok(None);
        }
        Ok(Some((self.read_record(&dir)?, dir)))
    }

    /// Removes a model: renamed out of `models/` first (to `staging/<id>.removing`), so it is
    /// never listed without its files. A crash before the removal ends leaves the renamed
    /// directory, which the next `open` finishes removing. `false` when there is no such model.
    pub fn delete(&self, id: &str) -> Result<bool, RegistryError> {
        Self::check_id(id)?;
        let dir = self.models_dir().join(id);
        let staging = self.staging_root();
        let doomed = staging.join(format!("{id}{REMOVING}"));
        // Under the staging lock, so that a sweep does not remove the same files at once.
        let _staging = staging::lock_root(&staging).map_err(io(&staging))?;
        match fs::rename(&dir, &doomed) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            renamed => renamed.map_err(io(&dir))?,
        }
        fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
        Ok(true)
    }
}

/// The current time as RFC 3339, for records.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
