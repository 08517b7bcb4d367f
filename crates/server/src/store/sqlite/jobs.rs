//! Fine-tuned models and their jobs' state machine in SQLite: writes are serialized (the
//! connection's lock), so each compare-and-set reads the status and then changes it.
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{claim_oldest, count_by, json, json_opt, Sqlite};
use crate::jobs::{FinetuneMetrics, JobStatus, Progress, Settings};
use crate::store::codec::{now, sql_int, to_json};
use crate::store::jobs::{changed_settings, ended_at};
use crate::store::{JobQueue, ModelRow, ModelUpdate, Order, Page, Result};

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

    fn claim_job(&self) -> Result<Option<ModelRow>> {
        self.write(|tx| {
            let running = JobStatus::Finetuning;
            match claim_oldest(tx, "finetuned_models", "status", JobStatus::Queued, running)? {
                Some(id) => get_model(tx, &id),
                None => Ok(None),
            }
        })
    }

    fn training_started(&self, id: &str, note: Option<&str>) -> Result<()> {
        self.write(|tx| {
            if model_status(tx, id)? == Some(JobStatus::Finetuning) {
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
    ) -> Result<bool> {
        self.write(|tx| {
            if !model_status(tx, id)?.is_some_and(|c| from.contains(&c)) {
                return Ok(false);
            }
            let at = now();
            tx.execute(
                "UPDATE finetuned_models SET status = ?2, updated_at = ?3,
                     failure_reason = coalesce(?4, failure_reason), completed_at = coalesce(?5, completed_at)
                 WHERE id = ?1",
                params![id, to, at, reason, ended_at(to, &at)],
            )?;
            add_event(tx, id, to, reason)?;
            Ok(true)
        })
    }

    fn requeue(&self, id: &str, from: &[JobStatus], note: &str) -> Result<bool> {
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

    fn set_progress(&self, id: &str, progress: &Progress) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE finetuned_models SET progress = ?2 WHERE id = ?1 AND status = ?3",
                params![id, to_json(progress), JobStatus::Finetuning],
            )?;
            Ok(())
        })
    }

    fn set_metrics(&self, id: &str, metrics: &FinetuneMetrics) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE finetuned_models SET metrics = ?2 WHERE id = ?1",
                params![id, to_json(metrics)],
            )?;
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
