//! Everything the server must remember across restarts, in one SQLite database (WAL): datasets,
//! fine-tuned models (which double as the job queue), their status events, training-step
//! metrics and per-step training losses.
//!
//! The schema is versioned by `PRAGMA user_version` and migrated forward at open. Every write is
//! one transaction, so a crash never leaves half of a change, and every status change is a
//! compare-and-set: a worker finishing a job that was deleted meanwhile changes nothing.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Type, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use finerank_retrieve::MineOptions;

use crate::jobs::{FinetuneMetrics, JobStatus, Progress, Settings};
use crate::parts::Parts;
use crate::validator::{DatasetMetrics, ValidationStatus};

mod dataset_parts;

/// A model's status, `None` when there is no such model.
fn model_status(tx: &Transaction, id: &str) -> Result<Option<JobStatus>> {
    tx.query_row(
        "SELECT status FROM finetuned_models WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .optional()
}

/// Schema changes, in order; entry `i` takes the database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        dataset_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        validation_status TEXT NOT NULL,
        validation_error TEXT,
        validation_warnings TEXT NOT NULL DEFAULT '[]',
        data_filename TEXT NOT NULL,
        data_bytes INTEGER NOT NULL,
        eval_filename TEXT,
        eval_bytes INTEGER,
        review TEXT,
        metrics TEXT
    );
    CREATE INDEX datasets_by_status ON datasets (validation_status, created_at);
    CREATE TABLE finetuned_models (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        dataset_id TEXT NOT NULL,
        settings TEXT NOT NULL,
        status TEXT NOT NULL,
        failure_reason TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        completed_at TEXT,
        progress TEXT,
        metrics TEXT
    );
    CREATE INDEX finetuned_models_by_status ON finetuned_models (status, created_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model_id TEXT NOT NULL REFERENCES finetuned_models (id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        message TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX events_by_model ON events (model_id, id);
    CREATE TABLE step_metrics (
        model_id TEXT NOT NULL REFERENCES finetuned_models (id) ON DELETE CASCADE,
        step_number INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        metrics TEXT NOT NULL,
        PRIMARY KEY (model_id, step_number)
    );
"#,
    r#"
    CREATE TABLE step_losses (
        model_id TEXT NOT NULL REFERENCES finetuned_models (id) ON DELETE CASCADE,
        step_number INTEGER NOT NULL,
        loss REAL NOT NULL,
        PRIMARY KEY (model_id, step_number)
    );
"#,
    dataset_parts::MIGRATION,
    r#"
    CREATE TABLE deleted_models (
        id TEXT PRIMARY KEY,
        deleted_at TEXT NOT NULL
    );
"#,
];

/// Millisecond RFC 3339 in UTC: fixed width, so text order is time order.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub struct NewDataset {
    pub id: String,
    pub name: String,
    pub dataset_type: String,
    pub parts: Parts,
    /// How to mine negatives from the corpus, when the upload asked for it.
    pub mining: Option<MineOptions>,
}

#[derive(Clone, Debug)]
pub struct DatasetRow {
    pub id: String,
    pub name: String,
    pub dataset_type: String,
    pub created_at: String,
    pub updated_at: String,
    pub validation_status: ValidationStatus,
    pub validation_error: Option<String>,
    pub validation_warnings: Vec<String>,
    pub parts: Parts,
    pub mining: Option<MineOptions>,
    /// The validator's statistics and problems, as JSON.
    pub review: Option<serde_json::Value>,
    pub metrics: Option<DatasetMetrics>,
}

/// The outcome of validating a dataset.
pub struct Validation {
    pub ok: bool,
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub review: serde_json::Value,
    pub metrics: Option<DatasetMetrics>,
}

#[derive(Default)]
pub struct DatasetFilter {
    pub dataset_type: Option<String>,
    pub validation_status: Option<ValidationStatus>,
    /// Created strictly before / after, as [`now`] formats times.
    pub before: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub offset: usize,
}

pub enum DatasetDeletion {
    Deleted,
    Missing,
    /// A job still needs the files.
    InUse {
        model_id: String,
        status: JobStatus,
    },
}

#[derive(Clone, Debug)]
pub struct ModelRow {
    pub id: String,
    pub name: String,
    pub settings: Settings,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub completed_at: Option<String>,
    pub progress: Option<Progress>,
    pub metrics: Option<FinetuneMetrics>,
}

pub enum ModelUpdate {
    Updated(Box<ModelRow>),
    Missing,
    /// Settings may change only while the job waits in the queue.
    Locked(JobStatus),
}

pub struct EventRow {
    pub status: JobStatus,
    pub message: Option<String>,
    pub created_at: String,
}

pub struct StepRow {
    pub step_number: usize,
    pub created_at: String,
    pub metrics: BTreeMap<String, f64>,
}

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

pub struct Store {
    conn: Mutex<Connection>,
}

type Result<T> = rusqlite::Result<T>;

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("stored types serialize")
}

/// A JSON column, read back into its type.
fn json<T: DeserializeOwned>(row: &Row, column: &str) -> Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        let index = row.as_ref().column_index(column).unwrap_or(0);
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e))
    })
}

fn json_opt<T: DeserializeOwned>(row: &Row, column: &str) -> Result<Option<T>> {
    match row.get::<_, Option<String>>(column)? {
        Some(_) => json(row, column).map(Some),
        None => Ok(None),
    }
}

/// Statuses are stored under their wire names.
macro_rules! text_enum_sql {
    ($t:ty) => {
        impl ToSql for $t {
            fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$t>::parse(text)
                    .ok_or_else(|| FromSqlError::Other(format!("unknown status {text:?}").into()))
            }
        }
    };
}
text_enum_sql!(JobStatus);
text_enum_sql!(ValidationStatus);

fn dataset_row(row: &Row) -> Result<DatasetRow> {
    Ok(DatasetRow {
        id: row.get("id")?,
        name: row.get("name")?,
        dataset_type: row.get("dataset_type")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        validation_status: row.get("validation_status")?,
        validation_error: row.get("validation_error")?,
        validation_warnings: json(row, "validation_warnings")?,
        parts: dataset_parts::read(row)?,
        mining: json_opt(row, "mining")?,
        review: json_opt(row, "review")?,
        metrics: json_opt(row, "metrics")?,
    })
}

fn model_row(row: &Row) -> Result<ModelRow> {
    Ok(ModelRow {
        id: row.get("id")?,
        name: row.get("name")?,
        settings: json(row, "settings")?,
        status: row.get("status")?,
        failure_reason: row.get("failure_reason")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        completed_at: row.get("completed_at")?,
        progress: json_opt(row, "progress")?,
        metrics: json_opt(row, "metrics")?,
    })
}

fn get_dataset(tx: &Connection, id: &str) -> Result<Option<DatasetRow>> {
    tx.query_row("SELECT * FROM datasets WHERE id = ?1", [id], dataset_row)
        .optional()
}

fn get_model(tx: &Connection, id: &str) -> Result<Option<ModelRow>> {
    tx.query_row(
        "SELECT * FROM finetuned_models WHERE id = ?1",
        [id],
        model_row,
    )
    .optional()
}

fn add_event(tx: &Connection, id: &str, status: JobStatus, message: Option<&str>) -> Result<()> {
    tx.execute(
        "INSERT INTO events (model_id, status, message, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, status, message, now()],
    )?;
    Ok(())
}

/// Moves the oldest row of `table` whose `column` is `from` to `to`, and returns its id. Queues
/// are tables: the status column says where a row is.
fn claim_oldest(
    tx: &Connection,
    table: &str,
    column: &str,
    from: impl ToSql,
    to: impl ToSql,
) -> Result<Option<String>> {
    let id: Option<String> = tx
        .query_row(
            &format!(
                "SELECT id FROM {table} WHERE {column} = ?1 ORDER BY created_at, rowid LIMIT 1"
            ),
            [from],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = &id {
        tx.execute(
            &format!("UPDATE {table} SET {column} = ?2, updated_at = ?3 WHERE id = ?1"),
            params![id, to, now()],
        )?;
    }
    Ok(id)
}

/// A count or position as SQLite's integer. Clients choose offsets and limits, and a wrapping
/// cast would turn a huge one negative, which SQLite reads as "from the start" or "no limit".
fn sql_int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count_by(tx: &Connection, sql: &str) -> Result<Vec<(String, usize)>> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let mut conn = Connection::open(path)?;
        // WAL lets readers go on while a job writes; NORMAL sync is durable across process crashes
        // (only a power cut may lose the last commits); the busy timeout covers a second process
        // such as an operator's sqlite3 shell.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: the transaction rolls back.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    // Datasets.

    pub fn insert_dataset(&self, d: &NewDataset) -> Result<()> {
        self.write(|tx| {
            let at = now();
            tx.execute(
                "INSERT INTO datasets (id, name, dataset_type, created_at, updated_at, validation_status, mining)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
                params![
                    d.id,
                    d.name,
                    d.dataset_type,
                    at,
                    ValidationStatus::Queued,
                    d.mining.as_ref().map(to_json),
                ],
            )?;
            dataset_parts::write(tx, &d.id, &d.parts)
        })
    }

    pub fn dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        get_dataset(&self.conn(), id)
    }

    pub fn datasets(&self, f: &DatasetFilter) -> Result<Vec<DatasetRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT * FROM datasets
             WHERE (?1 IS NULL OR dataset_type = ?1) AND (?2 IS NULL OR validation_status = ?2)
               AND (?3 IS NULL OR created_at < ?3) AND (?4 IS NULL OR created_at > ?4)
             ORDER BY created_at DESC, rowid DESC LIMIT ?5 OFFSET ?6",
        )?;
        let limit = f.limit.map_or(-1, sql_int);
        let rows = stmt.query_map(
            params![
                f.dataset_type,
                f.validation_status,
                f.before,
                f.after,
                limit,
                sql_int(f.offset)
            ],
            dataset_row,
        )?;
        rows.collect()
    }

    /// Refuses while a queued or running job still needs the dataset's files.
    pub fn delete_dataset(&self, id: &str) -> Result<DatasetDeletion> {
        self.write(|tx| {
            if get_dataset(tx, id)?.is_none() {
                return Ok(DatasetDeletion::Missing);
            }
            let user: Option<(String, JobStatus)> = tx
                .query_row(
                    "SELECT id, status FROM finetuned_models
                     WHERE dataset_id = ?1 AND status IN (?2, ?3) LIMIT 1",
                    params![id, JobStatus::Queued, JobStatus::Finetuning],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((model_id, status)) = user {
                return Ok(DatasetDeletion::InUse { model_id, status });
            }
            tx.execute("DELETE FROM datasets WHERE id = ?1", [id])?;
            Ok(DatasetDeletion::Deleted)
        })
    }

    pub fn dataset_ids(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM datasets")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    /// Bytes of every uploaded file.
    pub fn dataset_usage(&self) -> Result<u64> {
        dataset_parts::usage(&self.conn())
    }

    /// Takes the oldest queued dataset for validation.
    pub fn claim_dataset(&self) -> Result<Option<DatasetRow>> {
        self.write(|tx| {
            let from = ValidationStatus::Queued;
            match claim_oldest(
                tx,
                "datasets",
                "validation_status",
                from,
                ValidationStatus::Processing,
            )? {
                Some(id) => get_dataset(tx, &id),
                None => Ok(None),
            }
        })
    }

    pub fn finish_validation(&self, id: &str, v: &Validation) -> Result<()> {
        let status = if v.ok {
            ValidationStatus::Validated
        } else {
            ValidationStatus::Failed
        };
        self.write(|tx| {
            tx.execute(
                "UPDATE datasets SET validation_status = ?2, validation_error = ?3,
                     validation_warnings = ?4, review = ?5, metrics = ?6, updated_at = ?7
                 WHERE id = ?1 AND validation_status = ?8",
                params![
                    id,
                    status,
                    v.error,
                    to_json(&v.warnings),
                    to_json(&v.review),
                    v.metrics.as_ref().map(to_json),
                    now(),
                    ValidationStatus::Processing,
                ],
            )?;
            Ok(())
        })
    }

    /// Validations cut short by a restart start over (they are repeatable).
    pub fn requeue_validations(&self) -> Result<usize> {
        self.write(|tx| {
            tx.execute(
                "UPDATE datasets SET validation_status = ?1 WHERE validation_status = ?2",
                params![ValidationStatus::Queued, ValidationStatus::Processing],
            )
        })
    }

    pub fn datasets_by_status(&self) -> Result<Vec<(String, usize)>> {
        count_by(
            &self.conn(),
            "SELECT validation_status, count(*) FROM datasets GROUP BY 1",
        )
    }

    // Fine-tuned models and their jobs.

    pub fn insert_model(&self, id: &str, name: &str, settings: &Settings) -> Result<ModelRow> {
        self.write(|tx| {
            let at = now();
            tx.execute(
                "INSERT INTO finetuned_models (id, name, dataset_id, settings, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![id, name, settings.dataset_id, to_json(settings), JobStatus::Queued, at],
            )?;
            add_event(tx, id, JobStatus::Queued, None)?;
            Ok(get_model(tx, id)?.expect("just inserted"))
        })
    }

    pub fn model(&self, id: &str) -> Result<Option<ModelRow>> {
        get_model(&self.conn(), id)
    }

    pub fn models(&self, order: Order, offset: usize, limit: usize) -> Result<Page<ModelRow>> {
        let conn = self.conn();
        let total: usize =
            conn.query_row("SELECT count(*) FROM finetuned_models", [], |r| r.get(0))?;
        let sql = format!(
            "SELECT * FROM finetuned_models ORDER BY created_at {o}, rowid {o} LIMIT ?1 OFFSET ?2",
            o = order.sql()
        );
        let mut stmt = conn.prepare(&sql)?;
        let items = stmt
            .query_map(params![sql_int(limit), sql_int(offset)], model_row)?
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    pub fn update_model(
        &self,
        id: &str,
        name: Option<&str>,
        settings: Option<&Settings>,
    ) -> Result<ModelUpdate> {
        self.write(|tx| {
            let Some(current) = get_model(tx, id)? else {
                return Ok(ModelUpdate::Missing);
            };
            if let Some(settings) = settings.filter(|s| **s != current.settings) {
                if current.status != JobStatus::Queued {
                    return Ok(ModelUpdate::Locked(current.status));
                }
                tx.execute(
                    "UPDATE finetuned_models SET settings = ?2, dataset_id = ?3 WHERE id = ?1",
                    params![id, to_json(settings), settings.dataset_id],
                )?;
            }
            if let Some(name) = name {
                tx.execute(
                    "UPDATE finetuned_models SET name = ?2 WHERE id = ?1",
                    params![id, name],
                )?;
            }
            tx.execute(
                "UPDATE finetuned_models SET updated_at = ?2 WHERE id = ?1",
                params![id, now()],
            )?;
            Ok(ModelUpdate::Updated(Box::new(
                get_model(tx, id)?.expect("exists in this transaction"),
            )))
        })
    }

    /// Deletes a model with its events and metrics, and leaves a tombstone: the caller removes
    /// the model's files next, and a start after a crash in between removes them from the
    /// tombstone ([`Store::deleted_models`]). Returns the status the model had.
    pub fn delete_model(&self, id: &str) -> Result<Option<JobStatus>> {
        self.write(|tx| {
            let status = model_status(tx, id)?;
            if status.is_some() {
                tx.execute("DELETE FROM finetuned_models WHERE id = ?1", [id])?;
                tx.execute(
                    "INSERT OR IGNORE INTO deleted_models (id, deleted_at) VALUES (?1, ?2)",
                    params![id, now()],
                )?;
            }
            Ok(status)
        })
    }

    /// Every model ever deleted. Tombstones stay: a job deleted while it trained may still
    /// publish its model, and a crash before the worker removes it leaves one for the next start.
    pub fn deleted_models(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM deleted_models")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    /// Takes the oldest queued job and marks it running. Its STATUS_FINETUNING event waits for
    /// training to start ([`Store::training_started`]), after the data is read and the base
    /// model loaded, so that the event says when training began.
    pub fn claim_job(&self) -> Result<Option<ModelRow>> {
        self.write(|tx| {
            let running = JobStatus::Finetuning;
            match claim_oldest(tx, "finetuned_models", "status", JobStatus::Queued, running)? {
                Some(id) => get_model(tx, &id),
                None => Ok(None),
            }
        })
    }

    /// Stamps a running job's STATUS_FINETUNING event: its first step is next. `note` says
    /// where a resumed run goes on from.
    pub fn training_started(&self, id: &str, note: Option<&str>) -> Result<()> {
        self.write(|tx| {
            let status = model_status(tx, id)?;
            // Deleted meanwhile: nothing started.
            if status == Some(JobStatus::Finetuning) {
                add_event(tx, id, JobStatus::Finetuning, note)?;
            }
            Ok(())
        })
    }

    /// Moves a job from one of `from` to `to`, with an event; false if it was not in `from`
    /// (deleted, or already moved on). A failure records its reason; an end records its time.
    pub fn transition(
        &self,
        id: &str,
        from: &[JobStatus],
        to: JobStatus,
        reason: Option<&str>,
    ) -> Result<bool> {
        self.write(|tx| {
            let current: Option<JobStatus> = tx
                .query_row("SELECT status FROM finetuned_models WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            if !current.is_some_and(|c| from.contains(&c)) {
                return Ok(false);
            }
            let at = now();
            let ended = matches!(to, JobStatus::Ready | JobStatus::Failed).then_some(&at);
            tx.execute(
                "UPDATE finetuned_models SET status = ?2, updated_at = ?3,
                     failure_reason = coalesce(?4, failure_reason), completed_at = coalesce(?5, completed_at)
                 WHERE id = ?1",
                params![id, to, at, reason, ended],
            )?;
            add_event(tx, id, to, reason)?;
            Ok(true)
        })
    }

    /// Puts a job from one of `from` back in the queue, with an event that says why; false if
    /// it was not in `from`. A failure's reason and end time go: the job is not over.
    pub fn requeue(&self, id: &str, from: &[JobStatus], note: &str) -> Result<bool> {
        self.write(|tx| {
            if !model_status(tx, id)?.is_some_and(|c| from.contains(&c)) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE finetuned_models SET status = ?2, updated_at = ?3, failure_reason = NULL,
                     completed_at = NULL
                 WHERE id = ?1",
                params![id, JobStatus::Queued, now()],
            )?;
            add_event(tx, id, JobStatus::Queued, Some(note))?;
            Ok(true)
        })
    }

    pub fn set_progress(&self, id: &str, progress: &Progress) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE finetuned_models SET progress = ?2 WHERE id = ?1 AND status = ?3",
                params![id, to_json(progress), JobStatus::Finetuning],
            )?;
            Ok(())
        })
    }

    pub fn set_metrics(&self, id: &str, metrics: &FinetuneMetrics) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE finetuned_models SET metrics = ?2 WHERE id = ?1",
                params![id, to_json(metrics)],
            )?;
            Ok(())
        })
    }

    pub fn add_step_metrics(
        &self,
        id: &str,
        step: usize,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<()> {
        self.write(|tx| {
            // The job may have been deleted while it trained; its metrics go with it.
            if get_model(tx, id)?.is_some() {
                tx.execute(
                    "INSERT OR REPLACE INTO step_metrics (model_id, step_number, created_at, metrics)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, step as i64, now(), to_json(metrics)],
                )?;
            }
            Ok(())
        })
    }

    /// The training loss of one optimizer step.
    pub fn add_step_loss(&self, id: &str, step: usize, loss: f64) -> Result<()> {
        self.write(|tx| {
            // As with step metrics, a deleted job's losses go with it.
            tx.execute(
                "INSERT OR REPLACE INTO step_losses (model_id, step_number, loss)
                 SELECT id, ?2, ?3 FROM finetuned_models WHERE id = ?1",
                params![id, step as i64, loss],
            )?;
            Ok(())
        })
    }

    /// Losses of the steps after `after_step`, in step order.
    pub fn step_losses(&self, id: &str, after_step: usize) -> Result<Vec<(usize, f64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT step_number, loss FROM step_losses WHERE model_id = ?1 AND step_number > ?2
             ORDER BY step_number",
        )?;
        let rows = stmt.query_map(params![id, sql_int(after_step)], |r| {
            Ok((r.get::<_, i64>(0)? as usize, r.get(1)?))
        })?;
        rows.collect()
    }

    /// Jobs that were running when the process stopped.
    pub fn running_jobs(&self) -> Result<Vec<(String, JobStatus)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, status FROM finetuned_models WHERE status IN (?1, ?2)")?;
        let rows = stmt.query_map(
            params![JobStatus::Finetuning, JobStatus::DeployingApi],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.collect()
    }

    pub fn models_by_status(&self) -> Result<Vec<(String, usize)>> {
        count_by(
            &self.conn(),
            "SELECT status, count(*) FROM finetuned_models GROUP BY 1",
        )
    }

    pub fn events(
        &self,
        id: &str,
        order: Order,
        offset: usize,
        limit: usize,
    ) -> Result<Page<EventRow>> {
        let conn = self.conn();
        let total: usize = conn.query_row(
            "SELECT count(*) FROM events WHERE model_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT status, message, created_at FROM events WHERE model_id = ?1
             ORDER BY id {} LIMIT ?2 OFFSET ?3",
            order.sql()
        );
        let mut stmt = conn.prepare(&sql)?;
        let items = stmt
            .query_map(params![id, sql_int(limit), sql_int(offset)], |r| {
                Ok(EventRow {
                    status: r.get(0)?,
                    message: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })?
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    /// Most recent step first, as Cohere lists them.
    pub fn step_metrics(&self, id: &str, offset: usize, limit: usize) -> Result<Page<StepRow>> {
        let conn = self.conn();
        let total: usize = conn.query_row(
            "SELECT count(*) FROM step_metrics WHERE model_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(
            "SELECT * FROM step_metrics WHERE model_id = ?1 ORDER BY step_number DESC LIMIT ?2 OFFSET ?3",
        )?;
        let items = stmt
            .query_map(params![id, sql_int(limit), sql_int(offset)], |r| {
                Ok(StepRow {
                    step_number: r.get::<_, i64>("step_number")? as usize,
                    created_at: r.get("created_at")?,
                    metrics: json(r, "metrics")?,
                })
            })?
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "the database was written by a newer finerank (schema {version}, this one knows {}); \
             upgrade finerank or use another --data-dir",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}
