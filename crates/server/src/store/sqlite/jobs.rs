//! Fine-tuned models and their jobs' state machine in SQLite: writes are serialized (the
//! connection's lock), so each compare-and-set reads the status and then changes it. Leases
//! run on this machine's clock, the only one: a SQLite database has one process.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{claim_oldest, count_by, json, json_opt, Sqlite};
use crate::jobs::{FinetuneMetrics, JobStatus, Progress, Settings};
use crate::store::codec::{now, sql_int, to_json};
use crate::store::jobs::{changed_settings, ended_at, failure, lease_ms, leased};
use crate::store::{JobQueue, ModelRow, ModelUpdate, Mover, Order, Page, Result};

fn model_row(row: &Row) -> rusqlite::Result<ModelRow> {
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

pub(super) fn get_model(tx: &Connection, id: &str) -> rusqlite::Result<Option<ModelRow>> {
    tx.query_row(
        "SELECT * FROM finetuned_models WHERE id = ?1",
        [id],
        model_row,
    )
    .optional()
}

/// A model's status, `None` when there is no such model.
fn model_status(tx: &Connection, id: &str) -> rusqlite::Result<Option<JobStatus>> {
    tx.query_row(
        "SELECT status FROM finetuned_models WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .optional()
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    lease_ms(since)
}

/// Job `id`'s status, if there is such a job and `by` may move it.
fn status_for(tx: &Connection, id: &str, by: Mover) -> rusqlite::Result<Option<JobStatus>> {
    let row = tx
        .query_row(
            "SELECT status, lease_owner, lease_expires_at FROM finetuned_models WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, JobStatus>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            },
        )
        .optional()?;
    Ok(row.and_then(|(status, owner, expires)| {
        let expired = expires.is_some_and(|at| at < now_ms());
        by.allowed(owner.as_deref(), expired).then_some(status)
    }))
}

fn add_event(
    tx: &Connection,
    id: &str,
    status: JobStatus,
    message: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO events (model_id, status, message, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, status, message, now()],
    )?;
    Ok(())
}

impl JobQueue for Sqlite {
    fn insert_model(&self, id: &str, name: &str, settings: &Settings) -> Result<ModelRow> {
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

    fn model(&self, id: &str) -> Result<Option<ModelRow>> {
        Ok(get_model(&self.conn(), id)?)
    }

    fn models(&self, order: Order, offset: usize, limit: usize) -> Result<Page<ModelRow>> {
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
            .collect::<rusqlite::Result<_>>()?;
        Ok(Page { items, total })
    }

    fn update_model(
        &self,
        id: &str,
        name: Option<&str>,
        settings: Option<&Settings>,
    ) -> Result<ModelUpdate> {
        self.write(|tx| {
            let Some(current) = get_model(tx, id)? else {
                return Ok(ModelUpdate::Missing);
            };
            let changed = match changed_settings(&current, settings) {
                Ok(changed) => changed,
                Err(status) => return Ok(ModelUpdate::Locked(status)),
            };
            if let Some(settings) = changed {
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

    fn delete_model(&self, id: &str) -> Result<Option<JobStatus>> {
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

    fn deleted_models(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM deleted_models")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn claim_job(&self, owner: &str, lease: Duration) -> Result<Option<ModelRow>> {
        self.write(|tx| {
            let running = JobStatus::Finetuning;
            match claim_oldest(tx, "finetuned_models", "status", JobStatus::Queued, running)? {
                Some(id) => {
                    tx.execute(
                        "UPDATE finetuned_models SET lease_owner = ?2, lease_expires_at = ?3
                         WHERE id = ?1",
                        params![id, owner, now_ms().saturating_add(lease_ms(lease))],
                    )?;
                    get_model(tx, &id)
                }
                None => Ok(None),
            }
        })
    }

    fn renew_lease(&self, id: &str, owner: &str, lease: Duration) -> Result<bool> {
        self.write(|tx| {
            let renewed = tx.execute(
                "UPDATE finetuned_models SET lease_expires_at = ?3
                 WHERE id = ?1 AND lease_owner = ?2",
                params![id, owner, now_ms().saturating_add(lease_ms(lease))],
            )?;
            Ok(renewed == 1)
        })
    }

    fn expired_leases(&self) -> Result<Vec<(String, JobStatus, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, status, lease_owner FROM finetuned_models
             WHERE lease_owner IS NOT NULL AND lease_expires_at < ?1",
        )?;
        let rows = stmt.query_map([now_ms()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn training_started(&self, id: &str, owner: &str, note: Option<&str>) -> Result<()> {
        self.write(|tx| {
            if status_for(tx, id, Mover::Holder(owner))? == Some(JobStatus::Finetuning) {
                add_event(tx, id, JobStatus::Finetuning, note)?;
            }
            Ok(())
        })
    }

    fn transition(
        &self,
        id: &str,
        from: &[JobStatus],
        to: JobStatus,
        reason: Option<&str>,
        by: Mover,
    ) -> Result<bool> {
        self.write(|tx| {
            if !status_for(tx, id, by)?.is_some_and(|c| from.contains(&c)) {
                return Ok(false);
            }
            let at = now();
            tx.execute(
                "UPDATE finetuned_models SET status = ?2, updated_at = ?3,
                     failure_reason = coalesce(?4, failure_reason), completed_at = coalesce(?5, completed_at),
                     lease_owner = CASE WHEN ?6 THEN lease_owner END,
                     lease_expires_at = CASE WHEN ?6 THEN lease_expires_at END
                 WHERE id = ?1",
                params![id, to, at, failure(to, reason), ended_at(to, &at), leased(to)],
            )?;
            add_event(tx, id, to, reason)?;
            Ok(true)
        })
    }

    fn requeue(&self, id: &str, from: &[JobStatus], note: &str, by: Mover) -> Result<bool> {
        self.write(|tx| {
            if !status_for(tx, id, by)?.is_some_and(|c| from.contains(&c)) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE finetuned_models SET status = ?2, updated_at = ?3, failure_reason = NULL,
                     completed_at = NULL, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = ?1",
                params![id, JobStatus::Queued, now()],
            )?;
            add_event(tx, id, JobStatus::Queued, Some(note))?;
            Ok(true)
        })
    }

    fn set_progress(&self, id: &str, owner: &str, progress: &Progress) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE finetuned_models SET progress = ?3
                 WHERE id = ?1 AND lease_owner = ?2 AND status = ?4",
                params![id, owner, to_json(progress), JobStatus::Finetuning],
            )?;
            Ok(())
        })
    }

    fn set_metrics(&self, id: &str, by: Mover, metrics: &FinetuneMetrics) -> Result<()> {
        self.write(|tx| {
            if status_for(tx, id, by)?.is_some() {
                tx.execute(
                    "UPDATE finetuned_models SET metrics = ?2 WHERE id = ?1",
                    params![id, to_json(metrics)],
                )?;
            }
            Ok(())
        })
    }

    fn running_jobs(&self) -> Result<Vec<(String, JobStatus)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, status FROM finetuned_models WHERE status IN (?1, ?2)")?;
        let rows = stmt.query_map(
            params![JobStatus::Finetuning, JobStatus::DeployingApi],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn models_by_status(&self) -> Result<Vec<(String, usize)>> {
        Ok(count_by(
            &self.conn(),
            "SELECT status, count(*) FROM finetuned_models GROUP BY 1",
        )?)
    }
}
