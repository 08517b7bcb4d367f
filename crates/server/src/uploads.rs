//! Uploaded dataset files: `<data-dir>/uploads/<dataset-id>/`, one file per multipart field
//! (`train.jsonl`, `eval.jsonl`, `corpus.jsonl`, `queries.jsonl`, `qrels.tsv`), and beside them the
//! rows the validator mined, when the upload asked for mining (`mined-train.jsonl`,
//! `mined-eval.jsonl`).
//!
//! Every name on disk is the server's: a dataset id is a uuid it minted, checked again before it
//! becomes a path, and the client's file names are kept only for display. An upload streams into
//! a staging directory (never held in memory, cut off at the size limit) and appears under its id
//! in one rename, so a crash mid-upload leaves no half dataset. At start, staging debris and
//! directories without a dataset row are removed.
//!
//! With a shared file store (`--store`), a dataset's files are also uploaded to
//! `datasets/<dataset-id>/<file>` before the commit returns (so before its row is written), the
//! mined rows as soon as they are mined, and a server that trains on a dataset first fetches what
//! its own directory lacks ([`Uploads::fetch`]): the directory is then a cache of the store.
use std::collections::HashSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use axum::extract::Multipart;
use finerank_engine::FileStore;
use tokio::io::AsyncWriteExt;

use crate::error::{unreadable_body, ApiError};
use crate::parts::{FilePart, Part, Parts};
use crate::store::DatasetRow;

const STAGING_PREFIX: &str = ".staging-";
const MINED_TRAIN_FILE: &str = "mined-train.jsonl";
const MINED_EVAL_FILE: &str = "mined-eval.jsonl";

/// A part's file in its dataset's directory. `data` and `eval_data` keep the names they had
/// before the other parts existed, so older datasets read as they are.
fn file_name(part: Part) -> &'static str {
    match part {
        Part::Data => "train.jsonl",
        Part::Eval => "eval.jsonl",
        Part::Corpus => "corpus.jsonl",
        Part::Queries => "queries.jsonl",
        Part::Qrels => "qrels.tsv",
    }
}

pub struct Uploads {
    root: PathBuf,
    shared: Option<FileStore>,
}

/// Files received but not yet committed to a dataset id; dropped, they are deleted.
pub struct Staged {
    dir: PathBuf,
    pub parts: Parts,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the directory has been renamed away and this finds nothing.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bad_id(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{id:?} is not a dataset id"),
    )
}

/// The client's file name, without any directory part, for display only.
fn display_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    base.chars().filter(|c| !c.is_control()).take(255).collect()
}

impl Uploads {
    pub fn open(
        root: PathBuf,
        known_ids: &[String],
        shared: Option<FileStore>,
    ) -> io::Result<Uploads> {
        std::fs::create_dir_all(&root)?;
        let known: HashSet<&str> = known_ids.iter().map(String::as_str).collect();
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(name.as_str()) {
                tracing::warn!(path = %entry.path().display(), "removing an upload without a dataset");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(Uploads::attach(root, shared))
    }

    /// The uploads of a data directory this process shares with the server that holds it
    /// (`finerank worker`): it reads them and fetches what they lack, and sweeps nothing, since
    /// a staging directory may be that server's upload in progress.
    pub fn attach(root: PathBuf, shared: Option<FileStore>) -> Uploads {
        Uploads { root, shared }
    }

    fn dir(&self, id: &str) -> io::Result<PathBuf> {
        match uuid::Uuid::parse_str(id) {
            Ok(u) if u.hyphenated().to_string() == id => Ok(self.root.join(id)),
            _ => Err(bad_id(id)),
        }
    }

    pub fn path(&self, id: &str, part: Part) -> io::Result<PathBuf> {
        Ok(self.dir(id)?.join(file_name(part)))
    }

    /// Where the validator writes the mined training and evaluation rows.
    pub fn mined(&self, id: &str) -> io::Result<(PathBuf, PathBuf)> {
        let dir = self.dir(id)?;
        Ok((dir.join(MINED_TRAIN_FILE), dir.join(MINED_EVAL_FILE)))
    }

    /// The files a fine-tune trains and validates on: the mined rows when the dataset asked for
    /// mining, else the uploaded ones.
    pub fn training_files(&self, dataset: &DatasetRow) -> io::Result<(PathBuf, Option<PathBuf>)> {
        if dataset.mining.is_some() {
            let (train, eval) = self.mined(&dataset.id)?;
            return Ok((train, Some(eval)));
        }
        let eval = match dataset.parts.eval {
            Some(_) => Some(self.path(&dataset.id, Part::Eval)?),
            None => None,
        };
        Ok((self.path(&dataset.id, Part::Data)?, eval))
    }

    /// Streams each multipart field to its file, each at most once; which combinations make a
    /// dataset is [`Parts::check`]'s to say. `limit` is the body limit in force, for the message
    /// when a body exceeds it.
    pub async fn receive(
        &self,
        mut multipart: Multipart,
        limit: usize,
    ) -> Result<Staged, ApiError> {
        let dir = self
            .root
            .join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4()));
        // The directory and each file are made without an await between their creation and the
        // guard that removes them: a client that goes away drops this future at any await, and
        // what a blocking task made after that would have no guard.
        std::fs::create_dir(&dir)?;
        let mut staged = Staged {
            dir,
            parts: Parts::default(),
        };
        let read_error = |e: axum::extract::multipart::MultipartError| {
            unreadable_body(e.status(), e.body_text(), limit, "--max-upload-bytes")
        };
        while let Some(mut field) = multipart.next_field().await.map_err(read_error)? {
            let Some(part) = field.name().and_then(Part::from_field) else {
                return Err(ApiError::bad_request(format!(
                    "unexpected multipart field {:?}: send Cohere rows as `data` (with `eval_data` \
                     and `corpus` optional), or a BEIR collection as `corpus`, `queries` and `qrels`",
                    field.name().unwrap_or_default()
                )));
            };
            let (slot, file) = (staged.parts.slot(part), file_name(part));
            if slot.is_some() {
                return Err(ApiError::bad_request(format!(
                    "the multipart field `{}` appears twice; send one file per field",
                    field.name().unwrap_or_default()
                )));
            }
            let filename = display_name(field.file_name().unwrap_or(file));
            let path = staged.dir.join(file);
            let mut out = tokio::fs::File::from_std(std::fs::File::create(&path)?);
            let mut size_bytes = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(read_error)? {
                size_bytes += chunk.len() as u64;
                out.write_all(&chunk).await?;
            }
            out.sync_all().await?;
            *slot = Some(FilePart {
                filename,
                size_bytes,
            });
        }
        Ok(staged)
    }

    /// Uploads the staged files to the store, if there is one, then moves them under the
    /// dataset's id, in one rename. On error the caller removes what got through ([`remove`]).
    ///
    /// [`remove`]: Uploads::remove
    pub fn commit(&self, staged: &Staged, id: &str) -> io::Result<()> {
        let dest = self.dir(id)?;
        if let Some(store) = &self.shared {
            for entry in std::fs::read_dir(&staged.dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = format!("datasets/{id}/{name}");
                store
                    .upload(&entry.path(), &key)
                    .map_err(io::Error::other)?;
            }
        }
        std::fs::rename(&staged.dir, &dest)?;
        sync_dir(&self.root)
    }

    /// Uploads the mined rows of dataset `id` to the store, if there is one.
    pub fn share_mined(&self, id: &str) -> io::Result<()> {
        let Some(store) = &self.shared else {
            return Ok(());
        };
        for name in [MINED_TRAIN_FILE, MINED_EVAL_FILE] {
            let key = format!("datasets/{id}/{name}");
            store
                .upload(&self.dir(id)?.join(name), &key)
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Downloads the files of dataset `id` that the store has and this directory lacks: the
    /// dataset was uploaded through, or mined by, another server. Each file is downloaded beside
    /// the datasets and renamed into place, so none is ever read half-written.
    pub fn fetch(&self, id: &str) -> io::Result<()> {
        let Some(store) = &self.shared else {
            return Ok(());
        };
        let dir = self.dir(id)?;
        std::fs::create_dir_all(&dir)?;
        for (name, size) in store
            .list(&format!("datasets/{id}"))
            .map_err(io::Error::other)?
        {
            // Only the flat file names this module writes become paths.
            let path = dir.join(&name);
            let plain = matches!(
                Path::new(&name).components().collect::<Vec<_>>()[..],
                [Component::Normal(_)]
            );
            if !plain || std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
                continue;
            }
            let tmp = self
                .root
                .join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4()));
            let fetched = store
                .download(&format!("datasets/{id}/{name}"), &tmp)
                .map_err(io::Error::other)
                .and_then(|_| std::fs::rename(&tmp, &path));
            if fetched.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            fetched?;
        }
        Ok(())
    }

    /// Removes the dataset's files, here and in the store.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let dir = self.dir(id)?;
        if let Some(store) = &self.shared {
            store
                .delete_all(&format!("datasets/{id}"))
                .map_err(io::Error::other)?;
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, Bytes};
    use axum::extract::{FromRequest, Request};
    use futures_util::FutureExt;

    use super::*;

    /// A client that goes away drops the handler's future at whatever await it had reached; the
    /// first is before a byte of the body has come.
    #[tokio::test]
    async fn an_upload_dropped_at_any_await_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(root.path().join("uploads"), &[], None).unwrap();
        let waiting = futures_util::stream::pending::<Result<Bytes, io::Error>>();
        let req = Request::builder()
            .header("content-type", "multipart/form-data; boundary=b")
            .body(Body::from_stream(waiting))
            .unwrap();
        let multipart = Multipart::from_request(req, &()).await.unwrap();
        assert!(uploads.receive(multipart, 1 << 20).now_or_never().is_none());
        // Whatever a blocking task was still doing for the dropped future is done by now.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let left: Vec<_> = std::fs::read_dir(&uploads.root).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
