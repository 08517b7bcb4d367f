//! SQLite's schema, versioned by `PRAGMA user_version`: one process holds the database (the data
//! directory's lock), so migrating at open needs no lock of its own.
use rusqlite::Connection;

use super::dataset_parts;

/// Schema changes, in order; entry `i` takes the database from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // Leases: the claim holding a running job and when it lapses (Unix milliseconds). Jobs left
    // running before leases get an expired one.
    r#"
    ALTER TABLE finetuned_models ADD COLUMN lease_owner TEXT;
    ALTER TABLE finetuned_models ADD COLUMN lease_expires_at INTEGER;
    UPDATE finetuned_models SET lease_owner = 'a finerank from before leases', lease_expires_at = 0
    WHERE status IN ('STATUS_FINETUNING', 'STATUS_DEPLOYING_API');
"#,
];

pub(super) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
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
