//! PostgreSQL's schema, versioned in `finerank_schema` (one row per migration applied). Several
//! servers may start at once on one database: each migrates inside a transaction that first takes
//! an advisory lock, so one applies what is missing and the others, let in after it commits, find
//! nothing left to do. PostgreSQL's DDL is transactional: a migration applies whole or not at all.
use postgres::Client;

/// The advisory lock key of migrations (advisory locks are per database): "finerank" in ASCII.
const MIGRATION_LOCK: i64 = 0x66696e6572616e6b;

/// Schema changes, in order; entry `i` takes the database from version `i` to `i + 1`. The first
/// is SQLite's schema as it stood when this backend came, with `seq` in place of SQLite's rowid.
/// The text in them is as it was applied: a migration never changes once released.
pub(in crate::store) const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        dataset_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        validation_status TEXT NOT NULL,
        validation_error TEXT,
        validation_warnings TEXT NOT NULL DEFAULT '[]',
        data_filename TEXT,
        data_bytes BIGINT,
        eval_filename TEXT,
        eval_bytes BIGINT,
        corpus_filename TEXT,
        corpus_bytes BIGINT,
        queries_filename TEXT,
        queries_bytes BIGINT,
        qrels_filename TEXT,
        qrels_bytes BIGINT,
        mining TEXT,
        review TEXT,
        metrics TEXT
    );
    CREATE INDEX datasets_by_status ON datasets (validation_status, created_at, seq);
    CREATE INDEX datasets_by_time ON datasets (created_at, seq);
    CREATE TABLE finetuned_models (
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
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
    CREATE INDEX finetuned_models_by_status ON finetuned_models (status, created_at, seq);
    CREATE INDEX finetuned_models_by_time ON finetuned_models (created_at, seq);
    CREATE INDEX finetuned_models_by_dataset ON finetuned_models (dataset_id);
    CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        model_id TEXT NOT NULL REFERENCES finetuned_models (id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        message TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX events_by_model ON events (model_id, id);
    CREATE TABLE step_metrics (
        model_id TEXT NOT NULL REFERENCES finetuned_models (id) ON DELETE CASCADE,
        step_number BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        metrics TEXT NOT NULL,
        PRIMARY KEY (model_id, step_number)
    );
    CREATE TABLE step_losses (
        model_id TEXT NOT NULL REFERENCES finetuned_models (id) ON DELETE CASCADE,
        step_number BIGINT NOT NULL,
        loss DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model_id, step_number)
    );
    CREATE TABLE deleted_models (
        id TEXT PRIMARY KEY,
        deleted_at TEXT NOT NULL
    );
"#,
    // Leases: the claim holding a running job and when it lapses, by the database's clock (one
    // clock for every machine). Jobs left running before leases get an expired one.
    r#"
    ALTER TABLE finetuned_models ADD COLUMN lease_owner TEXT,
        ADD COLUMN lease_expires_at TIMESTAMPTZ;
    UPDATE finetuned_models SET lease_owner = 'a finerank from before leases',
        lease_expires_at = now()
    WHERE status IN ('STATUS_FINETUNING', 'STATUS_DEPLOYING_API');
    CREATE INDEX finetuned_models_by_lease ON finetuned_models (lease_expires_at)
        WHERE lease_owner IS NOT NULL;
"#,
];

pub(in crate::store) fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS finerank_schema (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM finerank_schema", &[])?
        .get(0);
    let version = version as usize;
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "the database was written by a newer finerank (schema {version}, this one knows {}); \
             upgrade finerank or use another --database",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO finerank_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}
