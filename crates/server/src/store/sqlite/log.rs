//! Job events, step metrics and step losses in SQLite.
use std::collections::BTreeMap;

use rusqlite::params;

use super::{json, Sqlite};
use crate::store::codec::{now, sql_int, to_json};
use crate::store::{EventRow, JobLog, Order, Page, Result, StepRow};

impl JobLog for Sqlite {
    fn add_step_metrics(
        &self,
        id: &str,
        owner: &str,
        step: usize,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<()> {
        self.write(|tx| {
            // The job may have been deleted while it trained (its metrics go with it), or be no
            // longer under the writer's claim.
            tx.execute(
                "INSERT OR REPLACE INTO step_metrics (model_id, step_number, created_at, metrics)
                 SELECT id, ?2, ?3, ?4 FROM finetuned_models WHERE id = ?1 AND lease_owner = ?5",
                params![id, sql_int(step), now(), to_json(metrics), owner],
            )?;
            Ok(())
        })
    }

    fn add_step_loss(&self, id: &str, owner: &str, step: usize, loss: f64) -> Result<()> {
        self.write(|tx| {
            // As with step metrics.
            tx.execute(
                "INSERT OR REPLACE INTO step_losses (model_id, step_number, loss)
                 SELECT id, ?2, ?3 FROM finetuned_models WHERE id = ?1 AND lease_owner = ?4",
                params![id, sql_int(step), loss, owner],
            )?;
            Ok(())
        })
    }

    fn step_losses(&self, id: &str, after_step: usize) -> Result<Vec<(usize, f64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT step_number, loss FROM step_losses WHERE model_id = ?1 AND step_number > ?2
             ORDER BY step_number",
        )?;
        let rows = stmt.query_map(params![id, sql_int(after_step)], |r| {
            Ok((r.get::<_, i64>(0)? as usize, r.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn events(
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
            .collect::<rusqlite::Result<_>>()?;
        Ok(Page { items, total })
    }

    fn step_metrics(&self, id: &str, offset: usize, limit: usize) -> Result<Page<StepRow>> {
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
            .collect::<rusqlite::Result<_>>()?;
        Ok(Page { items, total })
    }
}
