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
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use axum::extract::Multipart;
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
    pub fn open(root: PathBuf, known_ids: &[String]) -> io::Result<Uploads> {
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
        Ok(Uploads { root })
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

    /// Moves staged files under the dataset's id, in one rename.
    pub fn commit(&self, staged: &Staged, id: &str) -> io::Result<()> {
        let dest = self.dir(id)?;
        std::fs::rename(&staged.dir, &dest)?;
        sync_dir(&self.root)
    }

    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.dir(id)?) {
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
        let uploads = Uploads::open(root.path().join("uploads"), &[]).unwrap();
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
