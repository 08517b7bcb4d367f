//! Job events, step metrics and step losses in PostgreSQL. A step recorded for a job deleted
//! meanwhile, or no longer under the writer's claim, selects no model row, so nothing is written.
use std::collections::BTreeMap;

use super::{json, status, Postgres};
use crate::store::codec::{now, sql_int, to_json};
use crate::store::{EventRow, JobLog, Order, Page, Result, StepRow};

impl JobLog for Postgres {
    fn add_step_metrics(
        &self,
        id: &str,
        owner: &str,
        step: usize,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO step_metrics (model_id, step_number, created_at, metrics)
                 SELECT id, $2::bigint, $3::text, $4::text FROM finetuned_models
                 WHERE id = $1 AND lease_owner = $5
                 ON CONFLICT (model_id, step_number)
                 DO UPDATE SET created_at = excluded.created_at, metrics = excluded.metrics",
                &[&id, &sql_int(step), &now(), &to_json(metrics), &owner],
            )?;
            Ok(())
        })
    }

    fn add_step_loss(&self, id: &str, owner: &str, step: usize, loss: f64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO step_losses (model_id, step_number, loss)
                 SELECT id, $2::bigint, $3::float8 FROM finetuned_models
                 WHERE id = $1 AND lease_owner = $4
                 ON CONFLICT (model_id, step_number) DO UPDATE SET loss = excluded.loss",
                &[&id, &sql_int(step), &loss, &owner],
            )?;
            Ok(())
        })
    }

    fn step_losses(&self, id: &str, after_step: usize) -> Result<Vec<(usize, f64)>> {
        self.conn()?
            .query(
                "SELECT step_number, loss FROM step_losses WHERE model_id = $1 AND step_number > $2
                 ORDER BY step_number",
                &[&id, &sql_int(after_step)],
            )?
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)? as usize, r.try_get(1)?)))
            .collect()
    }

    fn events(
        &self,
        id: &str,
        order: Order,
        offset: usize,
        limit: usize,
    ) -> Result<Page<EventRow>> {
        let mut conn = self.conn()?;
        let total: i64 = conn
            .query_one("SELECT count(*) FROM events WHERE model_id = $1", &[&id])?
            .try_get(0)?;
        let sql = format!(
            "SELECT status, message, created_at FROM events WHERE model_id = $1
             ORDER BY id {} LIMIT $2 OFFSET $3",
            order.sql()
        );
        let items = conn
            .query(&sql, &[&id, &sql_int(limit), &sql_int(offset)])?
            .iter()
            .map(|r| {
                Ok(EventRow {
                    status: status(r, "status")?,
                    message: r.try_get("message")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            total: total as usize,
        })
    }

    fn step_metrics(&self, id: &str, offset: usize, limit: usize) -> Result<Page<StepRow>> {
        let mut conn = self.conn()?;
        let total: i64 = conn
            .query_one(
                "SELECT count(*) FROM step_metrics WHERE model_id = $1",
                &[&id],
            )?
            .try_get(0)?;
        let items = conn
            .query(
                "SELECT * FROM step_metrics WHERE model_id = $1 ORDER BY step_number DESC
                 LIMIT $2 OFFSET $3",
                &[&id, &sql_int(limit), &sql_int(offset)],
            )?
            .iter()
            .map(|r| {
                Ok(StepRow {
                    step_number: r.try_get::<_, i64>("step_number")? as usize,
                    created_at: r.try_get("created_at")?,
                    metrics: json(r, "metrics")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            total: total as usize,
        })
    }
}
