//! Files in a store that several processes share (`--store`): an S3-compatible bucket
//! (`s3://bucket/prefix`) or a directory, typically a shared volume (`file:///path`), both through
//! the `object_store` crate. Each object is written whole or not at all (S3's PUT and multipart
//! completion; a rename on the filesystem), which is what lets a manifest written last commit a
//! set of files.
//!
//! `object_store` is async; its callers here are not (the registry, dataset uploads and training
//! run on plain or blocking threads, and the CLI has no runtime at all). So the store owns a small
//! tokio runtime for its I/O and every method blocks on it: call them from a thread that is not
//! running async tasks (`spawn_blocking` in the server), as any other file I/O.
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error(
        "--store {url:?}: {message}; give s3://bucket[/prefix] (with the AWS_* variables, \
         AWS_ENDPOINT for another S3-compatible server) or file:///absolute/path"
    )]
    BadUrl { url: String, message: String },
    #[error("{key} in the file store {store}: {source}")]
    Store {
        store: String,
        key: String,
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A file's size and content hash, as uploaded or as downloaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest256 {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// A handle on the shared store. Cloning is cheap.
#[derive(Clone)]
pub struct FileStore(Arc<Inner>);

struct Inner {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// A `file://` store's directory: listing one that is gone finds nothing rather than fail.
    local_root: Option<PathBuf>,
    /// Taken only on drop, to shut down without waiting (dropping a runtime blocks, which panics
    /// where the last handle goes away on an async thread).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FileStore").field(&self.0.url).finish()
    }
}

fn io_error(path: &FsPath) -> impl FnOnce(std::io::Error) -> FileStoreError + '_ {
    move |source| FileStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How much of a file is read (and hashed, and sent) at a time.
const CHUNK: usize = 1 << 20;

impl FileStore {
    /// Opens the store at `url` and lists its root once, so that a wrong bucket, endpoint or
    /// credentials stop the caller now rather than at the first upload.
    pub fn open(url: &str) -> Result<FileStore, FileStoreError> {
        let bad = |message: String| FileStoreError::BadUrl {
            url: url.to_string(),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(e.to_string()))?;
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                let local =
                    LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
                local_root = Some(dir);
                // Deleting a model's or a dataset's files leaves no empty directories behind.
                Arc::new(local.with_automatic_cleanup(true))
            }
            ObjectStoreScheme::AmazonS3 => {
                let s3 = AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                if prefix.as_ref().is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                }
            }
            other => return Err(bad(format!("{other:?} stores are not supported"))),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("file-store")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("starting its I/O runtime: {e}")))?;
        let files = FileStore(Arc::new(Inner {
            url: url.to_string(),
            store,
            local_root,
            runtime: Some(runtime),
        }));
        files.check()?;
        Ok(files)
    }

    /// Lists the store's root: an error says the store cannot be reached now (a wrong bucket or
    /// endpoint, expired credentials, an unmounted volume).
    pub fn check(&self) -> Result<(), FileStoreError> {
        if let Some(dir) = &self.0.local_root {
            std::fs::read_dir(dir).map_err(io_error(dir))?;
        }
        self.run("", |s| async move { s.list_with_delimiter(None).await })
            .map(drop)
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// Runs one store operation to its end on the store's runtime, its error naming `key`.
    fn run<T, F: Future<Output = object_store::Result<T>>>(
        &self,
        key: &str,
        op: impl FnOnce(Arc<dyn ObjectStore>) -> F,
    ) -> Result<T, FileStoreError> {
        let runtime = self.0.runtime.as_ref().expect("taken only on drop");
        runtime
            .block_on(op(self.0.store.clone()))
            .map_err(|source| self.error(key, source))
    }

    fn error(&self, key: &str, source: object_store::Error) -> FileStoreError {
        FileStoreError::Store {
            store: self.0.url.clone(),
            key: key.to_string(),
            source,
        }
    }

    /// Writes a small object whole.
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), FileStoreError> {
        self.run(key, |s| async move {
            s.put(&Path::from(key), bytes.into()).await
        })
        .map(drop)
    }

    /// A small object, or `None` when there is none at `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, FileStoreError> {
        let got = self.run(key, |s| async move {
            s.get(&Path::from(key)).await?.bytes().await
        });
        match got {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(FileStoreError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uploads a local file to `key`, hashing it on the way. The object appears whole when the
    /// upload completes; a failed upload is aborted and leaves none.
    pub fn upload(&self, local: &FsPath, key: &str) -> Result<Digest256, FileStoreError> {
        let mut file = File::open(local).map_err(io_error(local))?;
        let runtime = self.0.runtime.as_ref().expect("taken only on drop");
        let mut writer = BufWriter::new(self.0.store.clone(), Path::from(key));
        let (mut hash, mut size, mut buf) = (Sha256::new(), 0u64, vec![0; CHUNK]);
        let sent: Result<(), FileStoreError> = runtime.block_on(async {
            loop {
                let n = file.read(&mut buf).map_err(io_error(local))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                size += n as u64;
                writer.write_all(&buf[..n]).await.map_err(io_error(local))?;
            }
            writer.shutdown().await.map_err(io_error(local))
        });
        if let Err(e) = sent {
            let _ = runtime.block_on(writer.abort());
            return Err(e);
        }
        Ok(Digest256 {
            size,
            sha256: hex::encode(hash.finalize()),
        })
    }

    /// Downloads `key` into a new local file, hashing it on the way.
    pub fn download(&self, key: &str, local: &FsPath) -> Result<Digest256, FileStoreError> {
        let mut file = File::create_new(local).map_err(io_error(local))?;
        let (mut hash, mut size) = (Sha256::new(), 0u64);
        let runtime = self.0.runtime.as_ref().expect("taken only on drop");
        runtime.block_on(async {
            let got = self.0.store.get(&Path::from(key)).await;
            let mut stream = got.map_err(|e| self.error(key, e))?.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error(key, e))?;
                hash.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).map_err(io_error(local))?;
            }
            Ok::<_, FileStoreError>(())
        })?;
        file.sync_all().map_err(io_error(local))?;
        Ok(Digest256 {
            size,
            sha256: hex::encode(hash.finalize()),
        })
    }

    /// Every object under `prefix/`, as its key below `prefix/` and its size.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, FileStoreError> {
        let base = Path::from(prefix);
        let objects: Vec<_> = self.run(prefix, |s| async move {
            s.list(Some(&Path::from(prefix)))
                .try_collect::<Vec<_>>()
                .await
        })?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let parts = o.location.prefix_match(&base)?;
                let key = parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>();
                Some((key.join("/"), o.size))
            })
            .collect())
    }

    /// The names one level below `prefix/` that hold objects ("directories").
    pub fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, FileStoreError> {
        let listed = self.run(prefix, |s| async move {
            s.list_with_delimiter(Some(&Path::from(prefix))).await
        })?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Removes the object at `key`; none there is no error.
    pub fn delete(&self, key: &str) -> Result<(), FileStoreError> {
        match self.run(key, |s| async move { s.delete(&Path::from(key)).await }) {
            Err(FileStoreError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(()),
            done => done,
        }
    }

    /// Removes every object under `prefix/`.
    pub fn delete_all(&self, prefix: &str) -> Result<(), FileStoreError> {
        for (key, _) in self.list(prefix)? {
            self.delete(&format!("{prefix}/{key}"))?;
        }
        Ok(())
    }
}

/// `rel`, a path relative to a directory, as the key of its object below some prefix.
pub(crate) fn key_of(rel: &FsPath) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A key from the store as a relative local path, refused unless every part of it is a plain
/// name, so that what the store says never writes outside the directory it is joined to.
pub(crate) fn local_path_of(key: &str) -> Option<PathBuf> {
    let path = PathBuf::from(key);
    let plain = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && !key.is_empty()).then_some(path)
}
