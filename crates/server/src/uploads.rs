//! Uploaded dataset files: `<data-dir>/uploads/<dataset-id>/{train,eval}.jsonl`.
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
use crate::store::FilePart;

const STAGING_PREFIX: &str = ".staging-";
const TRAIN_FILE: &str = "train.jsonl";
const EVAL_FILE: &str = "eval.jsonl";

pub struct Uploads {
    root: PathBuf,
}

/// Files received but not yet committed to a dataset id; dropped, they are deleted.
pub struct Staged {
    dir: PathBuf,
    pub data: Option<FilePart>,
    pub eval: Option<FilePart>,
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

    pub fn train_path(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.dir(id)?.join(TRAIN_FILE))
    }

    pub fn eval_path(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.dir(id)?.join(EVAL_FILE))
    }

    /// Streams the multipart fields `data` (required) and `eval_data` (optional) to disk.
    /// `limit` is the body limit in force, for the message when a body exceeds it.
    pub async fn receive(
        &self,
        mut multipart: Multipart,
        limit: usize,
    ) -> Result<Staged, ApiError> {
        let dir = self
            .root
            .join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4()));
        tokio::fs::create_dir(&dir).await?;
        let mut staged = Staged {
            dir,
            data: None,
            eval: None,
        };
        let read_error = |e: axum::extract::multipart::MultipartError| {
            unreadable_body(e.status(), e.body_text(), limit, "--max-upload-bytes")
        };
        while let Some(mut field) = multipart.next_field().await.map_err(read_error)? {
            let (slot, file) = match field.name() {
                Some("data") => (&mut staged.data, TRAIN_FILE),
                Some("eval_data") => (&mut staged.eval, EVAL_FILE),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unexpected multipart field {:?}: send the training file as `data` and the \
                         optional evaluation file as `eval_data`",
                        other.unwrap_or_default()
                    )))
                }
            };
            if slot.is_some() {
                return Err(ApiError::bad_request(format!(
                    "the multipart field `{}` appears twice; send one file per field",
                    field.name().unwrap_or_default()
                )));
            }
            let filename = display_name(field.file_name().unwrap_or(file));
            let path = staged.dir.join(file);
            let mut out = tokio::fs::File::create(&path).await?;
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
        if staged.data.is_none() {
            return Err(ApiError::bad_request(
                "the multipart field `data` (the training file, JSONL) is missing",
            ));
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
