//! Fine-tuned models and their jobs' state machine in PostgreSQL: each compare-and-set locks the
//! job's row (`FOR UPDATE`) before it reads the status, so a concurrent change waits for it.
//! Leases run on the database's clock (`clock_timestamp()`), the one clock every worker shares.
use std::time::Duration;

use postgres::{GenericClient, Row, Transaction};

use super::{count_by, json, json_opt, status, Postgres};
use crate::jobs::{FinetuneMetrics, JobStatus, Progress, Settings};
use crate::store::codec::{now, sql_int, to_json, Status};
use crate::store::jobs::{changed_settings, ended_at, failure, lease_ms, leased};
use crate::store::{JobQueue, ModelRow, ModelUpdate, Mover, Order, Page, Result};

fn model_row(row: &Row) -> Result<ModelRow> {
    Ok(ModelRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        settings: json(row, "settings")?,
        status: status(row, "status")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        completed_at: row.try_get("completed_at")?,
        progress: json_opt(row, "progress")?,
        metrics: json_opt(row, "metrics")?,
    })
}

fn get_model(client: &mut impl GenericClient, id: &str) -> Result<Option<ModelRow>> {
    client
        .query_opt("SELECT * FROM finetuned_models WHERE id = $1", &[&id])?
        .as_ref()
        .map(model_row)
        .transpose()
}

/// A model's status, `None` when there is no such model; its row stays locked until the
/// transaction ends.
fn lock_status(tx: &mut Transaction, id: &str) -> Result<Option<JobStatus>> {
    tx.query_opt(
        "SELECT status FROM finetuned_models WHERE id = $1 FOR UPDATE",
        &[&id],
    )?
    .map(|row| status(&row, "status"))
    .transpose()
}

/// Whether `by` may move job `id`, and its status if so; `None` when there is no such job or
/// `by` may not. Its row stays locked until the transaction ends.
fn lock_for(tx: &mut Transaction, id: &str, by: Mover) -> Result<Option<JobStatus>> {
    let Some(row) = tx.query_opt(
        "SELECT status, lease_owner, coalesce(lease_expires_at < clock_timestamp(), false)
         FROM finetuned_models WHERE id = $1 FOR UPDATE",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let owner: Option<&str> = row.try_get(1)?;
    by.allowed(owner, row.try_get(2)?)
        .then(|| status(&row, "status"))
        .transpose()
}

fn add_event(
    tx: &mut Transaction,
    id: &str,
    status: JobStatus,
    message: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (model_id, status, message, created_at) VALUES ($1, $2, $3, $4)",
        &[&id, &status.as_str(), &message, &now()],
    )?;
    Ok(())
}

impl JobQueue for Postgres {
    fn insert_model(&self, id: &str, name: &str, settings: &Settings) -> Result<ModelRow> {
        self.write(|tx| {
            let row = tx.query_one(
                "INSERT INTO finetuned_models (id, name, dataset_id, settings, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING *",
                &[&id, &name, &settings.dataset_id, &to_json(settings), &JobStatus::Queued.as_str(), &now()],
            )?;
            add_event(tx, id, JobStatus::Queued, None)?;
            model_row(&row)
        })
    }

    fn model(&self, id: &str) -> Result<Option<ModelRow>> {
        get_model(&mut *self.conn()?, id)
    }

    fn models(&self, order: Order, offset: usize, limit: usize) -> Result<Page<ModelRow>> {
        let mut conn = self.conn()?;
        let total: i64 = conn
            .query_one("SELECT count(*) FROM finetuned_models", &[])?
            .try_get(0)?;
        let sql = format!(
            "SELECT * FROM finetuned_models ORDER BY created_at {o}, seq {o} LIMIT $1 OFFSET $2",
            o = order.sql()
        );
        let items = conn
            .query(&sql, &[&sql_int(limit), &sql_int(offset)])?
            .iter()
            .map(model_row)
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            total: total as usize,
        })
    }

    fn update_model(
        &self,
        id: &str,
        name: Option<&str>,
        settings: Option<&Settings>,
    ) -> Result<ModelUpdate> {
        self.write(|tx| {
            if lock_status(tx, id)?.is_none() {
                return Ok(ModelUpdate::Missing);
            }
            let current = get_model(tx, id)?.expect("locked in this transaction");
            let changed = match changed_settings(&current, settings) {
                Ok(changed) => changed,
                Err(status) => return Ok(ModelUpdate::Locked(status)),
            };
            let row = tx.query_one(
                "UPDATE finetuned_models SET settings = coalesce($2, settings),
                     dataset_id = coalesce($3, dataset_id), name = coalesce($4, name), updated_at = $5
                 WHERE id = $1 RETURNING *",
                &[
                    &id,
                    &changed.map(to_json),
                    &changed.map(|s| &s.dataset_id),
                    &name,
                    &now(),
                ],
            )?;
            Ok(ModelUpdate::Updated(Box::new(model_row(&row)?)))
        })
    }

    fn delete_model(&self, id: &str) -> Result<Option<JobStatus>> {
        self.write(|tx| {
            let status = lock_status(tx, id)?;
            if status.is_some() {
                tx.execute("DELETE FROM finetuned_models WHERE id = $1", &[&id])?;
                tx.execute(
                    "INSERT INTO deleted_models (id, deleted_at) VALUES ($1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[&id, &now()],
                )?;
            }
            Ok(status)
        })
    }

    fn deleted_models(&self) -> Result<Vec<String>> {
        let rows = self.conn()?.query("SELECT id FROM deleted_models", &[])?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?)
    }

    fn claim_job(&self, owner: &str, lease: Duration) -> Result<Option<ModelRow>> {
        self.write(|tx| {
            // Rows other claimers hold locked are skipped, so two never take the same one.
            let claimed = tx.query_opt(
                "UPDATE finetuned_models SET status = $2, updated_at = $3, lease_owner = $4,
                     lease_expires_at = clock_timestamp() + $5::float8 * interval '1 millisecond'
                 WHERE id = (SELECT id FROM finetuned_models WHERE status = $1
                             ORDER BY created_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING *",
                &[
                    &JobStatus::Queued.as_str(),
                    &JobStatus::Finetuning.as_str(),
                    &now(),
                    &owner,
                    &(lease_ms(lease) as f64),
                ],
            )?;
            claimed.as_ref().map(model_row).transpose()
        })
    }

    fn renew_lease(&self, id: &str, owner: &str, lease: Duration) -> Result<bool> {
        self.write(|tx| {
            let renewed = tx.execute(
                "UPDATE finetuned_models
                 SET lease_expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
                 WHERE id = $1 AND lease_owner = $2",
                &[&id, &owner, &(lease_ms(lease) as f64)],
            )?;
            Ok(renewed == 1)
        })
    }

    fn expired_leases(&self) -> Result<Vec<(String, JobStatus, String)>> {
        self.conn()?
            .query(
                "SELECT id, status, lease_owner FROM finetuned_models
                 WHERE lease_owner IS NOT NULL AND lease_expires_at < clock_timestamp()",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    status(r, "status")?,
                    r.try_get("lease_owner")?,
                ))
            })
            .collect()
    }

    fn training_started(&self, id: &str, owner: &str, note: Option<&str>) -> Result<()> {
        self.write(|tx| {
            if lock_for(tx, id, Mover::Holder(owner))? == Some(JobStatus::Finetuning) {
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
            if !lock_for(tx, id, by)?.is_some_and(|c| from.contains(&c)) {
                return Ok(false);
            }
            let at = now();
            tx.execute(
                "UPDATE finetuned_models SET status = $2, updated_at = $3,
                     failure_reason = coalesce($4, failure_reason), completed_at = coalesce($5, completed_at),
                     lease_owner = CASE WHEN $6 THEN lease_owner END,
                     lease_expires_at = CASE WHEN $6 THEN lease_expires_at END
                 WHERE id = $1",
                &[&id, &to.as_str(), &at, &failure(to, reason), &ended_at(to, &at), &leased(to)],
            )?;
            add_event(tx, id, to, reason)?;
            Ok(true)
        })
    }

    fn requeue(&self, id: &str, from: &[JobStatus], note: &str, by: Mover) -> Result<bool> {
        self.write(|tx| {
            if !lock_for(tx, id, by)?.is_some_and(|c| from.contains(&c)) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE finetuned_models SET status = $2, updated_at = $3, failure_reason = NULL,
                     completed_at = NULL, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = $1",
                &[&id, &JobStatus::Queued.as_str(), &now()],
            )?;
            add_event(tx, id, JobStatus::Queued, Some(note))?;
            Ok(true)
        })
    }

    fn set_progress(&self, id: &str, owner: &str, progress: &Progress) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE finetuned_models SET progress = $3
                 WHERE id = $1 AND lease_owner = $2 AND status = $4",
                &[
                    &id,
                    &owner,
                    &to_json(progress),
                    &JobStatus::Finetuning.as_str(),
                ],
            )?;
            Ok(())
        })
    }

    fn set_metrics(&self, id: &str, by: Mover, metrics: &FinetuneMetrics) -> Result<()> {
        self.write(|tx| {
            if lock_for(tx, id, by)?.is_some() {
                tx.execute(
                    "UPDATE finetuned_models SET metrics = $2 WHERE id = $1",
                    &[&id, &to_json(metrics)],
                )?;
            }
            Ok(())
        })
    }

    fn running_jobs(&self) -> Result<Vec<(String, JobStatus)>> {
        let running = [JobStatus::Finetuning, JobStatus::DeployingApi].map(Status::as_str);
        self.conn()?
            .query(
                "SELECT id, status FROM finetuned_models WHERE status = ANY($1)",
                &[&&running[..]],
            )?
            .iter()
            .map(|r| Ok((r.try_get("id")?, status(r, "status")?)))
            .collect()
    }

    fn models_by_status(&self) -> Result<Vec<(String, usize)>> {
        count_by(
            &mut *self.conn()?,
            "SELECT status, count(*) FROM finetuned_models GROUP BY 1",
        )
    }
}
