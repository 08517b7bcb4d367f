//! Everything the server must remember across restarts: datasets (`datasets`, which double as the
//! validation queue), fine-tuned models (`jobs`, which double as the job queue), their status
//! events, training-step metrics and per-step training losses (`log`).
//!
//! The [`Store`] trait is that memory's one interface, with two backends: SQLite (`sqlite`), a
//! file in the data directory and the default, and PostgreSQL (`postgresql`), for servers that
//! share their metadata (`--database postgres://...`). Both keep the same promises: the schema is
//! versioned and migrated forward at open; every write is one transaction, so a crash never
//! leaves half of a change; every status change is a compare-and-set, so a worker finishing a job
//! that was deleted meanwhile changes nothing; and lists come in creation order, rows created in
//! the same millisecond in the order they were inserted. Both store values the same way
//! (`codec`), and fail with one error type, [`StoreError`].
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

mod codec;
mod datasets;
mod jobs;
mod log;
mod postgresql;
mod sqlite;
#[cfg(test)]
mod tests;

pub use codec::now;
pub use datasets::{
    DatasetDeletion, DatasetFilter, DatasetQueue, DatasetRow, NewDataset, Validation,
};
pub use jobs::{JobQueue, ModelRow, ModelUpdate, Mover};
pub use log::{EventRow, JobLog, StepRow};

/// The whole store: one object of each backend implements all three parts.
pub trait Store: DatasetQueue + JobQueue + JobLog + Send + Sync {}

impl<T: DatasetQueue + JobQueue + JobLog + Send + Sync> Store for T {}

/// Where the metadata lives.
#[derive(Clone, Debug, PartialEq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL, as libpq takes it.
    Postgres(String),
}

impl Database {
    /// A `postgres://` URL, checked; the error says what is wrong with it.
    pub fn postgres(url: &str) -> std::result::Result<Database, String> {
        postgresql::parse_url(url)?;
        Ok(Database::Postgres(url.to_string()))
    }
}

impl fmt::Display for Database {
    /// The password of a URL stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => match postgresql::redacted(url) {
                Some(shown) => write!(f, "{shown}"),
                None => write!(f, "an unparsable PostgreSQL URL"),
            },
        }
    }
}

/// Opens the store, creating or migrating its schema.
pub fn open(database: &Database) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match database {
        Database::Sqlite(path) => Arc::new(
            sqlite::Sqlite::open(path).with_context(|| format!("opening {}", path.display()))?,
        ),
        Database::Postgres(url) => Arc::new(postgresql::Postgres::open(url)?),
    })
}

/// Why a store call failed, in the terms the API answers by; the backend's own error is the source.
#[derive(Debug, thiserror::Error)]
#[error("database: {source}")]
pub struct StoreError {
    kind: ErrorKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No room left for the write.
    Full,
    /// The database takes no writes (a read-only mount, a standby server).
    ReadOnly,
    /// The database server cannot be reached now.
    Unavailable,
    Other,
}

impl StoreError {
    pub(crate) fn new(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError {
            kind,
            source: source.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Oldest,
    Newest,
}

impl Order {
    fn sql(self) -> &'static str {
        match self {
            Order::Oldest => "ASC",
            Order::Newest => "DESC",
        }
    }
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
}
