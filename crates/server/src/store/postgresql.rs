//! The shared backend: a PostgreSQL database (`--database postgres://...`), for servers and
//! training workers on several machines that record their datasets and jobs in one place.
//!
//! The driver is rust-postgres' blocking client (`postgres`, a thin wrapper that drives
//! `tokio-postgres` on a runtime of its own) in an r2d2 pool (`r2d2_postgres`, same maintainer).
//! Every caller of the store is already on a blocking thread (the API's `spawn_blocking`, the
//! job and validation workers), as SQLite needs, so a blocking client fits the one [`Store`]
//! interface as it is; an async driver would have to be driven back to blocking from each of
//! those threads. TLS is not built in: reach the server over a private network or a Unix socket.
//!
//! Where SQLite serializes writers, here writers from several processes meet, so: the schema is
//! migrated under an advisory lock (servers starting at once migrate once); every write is one
//! transaction; a status change locks its row (`FOR UPDATE`) before it compares and sets; and a
//! queue is claimed with `FOR UPDATE SKIP LOCKED`, so concurrent claimers take different rows;
//! a claimed job is leased, and a job whose worker stopped renewing its lease goes back to the
//! queue (see `store::jobs`), so no process needs to hold the database alone.
//! An identity column (`seq`) keeps the order of rows created in the same millisecond, as
//! SQLite's rowid does.
//!
//! [`Store`]: super::Store
use std::time::Duration;

use anyhow::Context;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Transaction};
use r2d2_postgres::r2d2::{self, Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use serde::de::DeserializeOwned;

use super::codec::{parse_status, Status};
use super::{ErrorKind, StoreError};

mod datasets;
mod jobs;
mod log;
pub(super) mod schema;

type Manager = PostgresConnectionManager<NoTls>;

/// How long a start waits for an unresponsive server, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Postgres {
    pool: Pool<Manager>,
}

/// The settings in a `postgres://` URL; an error says what was wrong with it, without the URL
/// (it may hold a password).
pub fn parse_url(url: &str) -> Result<postgres::Config, String> {
    let expected = "expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE";
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!("it is not a PostgreSQL URL; {expected}"));
    }
    url.parse()
        .map_err(|e| format!("it is not a valid PostgreSQL URL ({e}); {expected}"))
}

/// The URL's user, server and database, for logs: no password.
pub fn redacted(url: &str) -> Option<String> {
    let config = parse_url(url).ok()?;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    Some(format!(
        "PostgreSQL database {} on {} as {}",
        config.get_dbname().unwrap_or("(the user's)"),
        hosts.join(","),
        config.get_user().unwrap_or("(the OS user)")
    ))
}

impl Postgres {
    /// Connects (failing at once if the server cannot be reached), migrates the schema, and
    /// keeps a pool of connections for the calls to come.
    pub fn open(url: &str) -> anyhow::Result<Postgres> {
        let config = parse_url(url).map_err(anyhow::Error::msg)?;
        Postgres::connect(config)
    }

    pub fn connect(mut config: postgres::Config) -> anyhow::Result<Postgres> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mut client = config.connect(NoTls).context(
            "could not connect to the PostgreSQL server of --database; is it running, and \
             are the host, port, user, password and database right?",
        )?;
        schema::migrate(&mut client)?;
        // Connections are opened as calls need them: the first one just proved the server is there.
        let pool = Pool::builder()
            .min_idle(Some(0))
            .build_unchecked(Manager::new(config, NoTls));
        Ok(Postgres { pool })
    }

    fn conn(&self) -> super::Result<PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Transaction) -> super::Result<T>) -> super::Result<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        let kind = match e.code() {
            Some(code) if *code == SqlState::DISK_FULL => ErrorKind::Full,
            Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => ErrorKind::ReadOnly,
            // Class 08 is "connection exception"; 57P0x are a server shutting down or starting.
            Some(code)
                if code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                    ]
                    .contains(code) =>
            {
                ErrorKind::Unavailable
            }
            None if e.is_closed()
                || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
            {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Other,
        };
        StoreError::new(kind, e)
    }
}

/// No connection came free, or none could be opened, within the pool's timeout.
impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> StoreError {
        StoreError::new(ErrorKind::Unavailable, e)
    }
}

/// A status column, read back.
fn status<T: Status>(row: &Row, column: &str) -> super::Result<T> {
    parse_status(row.try_get(column)?).map_err(|e| StoreError::new(ErrorKind::Other, e))
}

/// A JSON column, read back into its type.
fn json<T: DeserializeOwned>(row: &Row, column: &str) -> super::Result<T> {
    let text: &str = row.try_get(column)?;
    serde_json::from_str(text).map_err(|e| {
        StoreError::new(
            ErrorKind::Other,
            format!("column {column} holds no valid JSON: {e}"),
        )
    })
}

fn json_opt<T: DeserializeOwned>(row: &Row, column: &str) -> super::Result<Option<T>> {
    match row.try_get::<_, Option<&str>>(column)? {
        Some(_) => json(row, column).map(Some),
        None => Ok(None),
    }
}

/// Moves the oldest row of `table` whose `column` is `from` to `to`, and returns it. Rows other
/// claimers hold locked are skipped, so two never take the same one.
fn claim_oldest(
    tx: &mut Transaction,
    table: &str,
    column: &str,
    from: impl Status,
    to: impl Status,
) -> super::Result<Option<Row>> {
    let sql = format!(
        "UPDATE {table} SET {column} = $2, updated_at = $3
         WHERE id = (SELECT id FROM {table} WHERE {column} = $1 ORDER BY created_at, seq
                     LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *"
    );
    Ok(tx.query_opt(&sql, &[&from.as_str(), &to.as_str(), &super::now()])?)
}

fn count_by(client: &mut Client, sql: &str) -> super::Result<Vec<(String, usize)>> {
    client
        .query(sql, &[])?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as usize)))
        .collect()
}
