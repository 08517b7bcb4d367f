//! The embedded backend: one SQLite database (WAL) in the data directory, behind one connection.
//! Its writes are serialized by that connection's lock, so a transaction may read a row and then
//! change it without a row lock.
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Type, ValueRef};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, ToSql, Transaction};
use serde::de::DeserializeOwned;

use super::codec::{now, parse_status, Status};
use super::{ErrorKind, StoreError};
use crate::jobs::JobStatus;
use crate::validator::ValidationStatus;

mod dataset_parts;
mod datasets;
mod jobs;
mod log;
mod schema;

pub struct Sqlite {
    conn: Mutex<Connection>,
}

impl Sqlite {
    pub fn open(path: &Path) -> anyhow::Result<Sqlite> {
        let mut conn = Connection::open(path)?;
        // WAL lets readers go on while a job writes; NORMAL sync is durable across process crashes
        // (only a power cut may lose the last commits); the busy timeout covers a second process
        // such as an operator's sqlite3 shell.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        Ok(Sqlite {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: the transaction rolls back.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction) -> rusqlite::Result<T>) -> super::Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => ErrorKind::Full,
            Some(ErrorCode::ReadOnly) => ErrorKind::ReadOnly,
            _ => ErrorKind::Other,
        };
        StoreError::new(kind, e)
    }
}

/// A JSON column, read back into its type.
fn json<T: DeserializeOwned>(row: &Row, column: &str) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        let index = row.as_ref().column_index(column).unwrap_or(0);
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e))
    })
}

fn json_opt<T: DeserializeOwned>(row: &Row, column: &str) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(column)? {
        Some(_) => json(row, column).map(Some),
        None => Ok(None),
    }
}

/// Statuses are stored under their wire names.
macro_rules! status_sql {
    ($t:ty) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(Status::as_str(*self)))
            }
        }
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                parse_status(value.as_str()?).map_err(FromSqlError::Other)
            }
        }
    };
}
status_sql!(JobStatus);
status_sql!(ValidationStatus);

/// Moves the oldest row of `table` whose `column` is `from` to `to`, and returns its id. Queues
/// are tables: the status column says where a row is.
fn claim_oldest(
    tx: &Connection,
    table: &str,
    column: &str,
    from: impl ToSql,
    to: impl ToSql,
) -> rusqlite::Result<Option<String>> {
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

fn count_by(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, usize)>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_or_read_only_database_says_so() {
        let kind = |code| {
            StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
            .kind()
        };
        assert_eq!(kind(rusqlite::ffi::SQLITE_FULL), ErrorKind::Full);
        assert_eq!(kind(rusqlite::ffi::SQLITE_READONLY), ErrorKind::ReadOnly);
        assert_eq!(kind(rusqlite::ffi::SQLITE_CORRUPT), ErrorKind::Other);
    }
}
