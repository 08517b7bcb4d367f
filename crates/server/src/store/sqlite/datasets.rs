//! The dataset queue in SQLite.
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{claim_oldest, count_by, dataset_parts, json, json_opt, Sqlite};
use crate::jobs::JobStatus;
use crate::store::codec::{now, sql_int, to_json};
use crate::store::{DatasetDeletion, DatasetFilter, DatasetQueue, DatasetRow, NewDataset};
use crate::store::{Result, Validation};
use crate::validator::ValidationStatus;

fn dataset_row(row: &Row) -> rusqlite::Result<DatasetRow> {
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

fn get_dataset(tx: &Connection, id: &str) -> rusqlite::Result<Option<DatasetRow>> {
    tx.query_row("SELECT * FROM datasets WHERE id = ?1", [id], dataset_row)
        .optional()
}

impl DatasetQueue for Sqlite {
    fn insert_dataset(&self, d: &NewDataset) -> Result<()> {
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

    fn dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        Ok(get_dataset(&self.conn(), id)?)
    }

    fn datasets(&self, f: &DatasetFilter) -> Result<Vec<DatasetRow>> {
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
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_dataset(&self, id: &str) -> Result<DatasetDeletion> {
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

    fn dataset_ids(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM datasets")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn dataset_usage(&self) -> Result<u64> {
        Ok(dataset_parts::usage(&self.conn())?)
    }

    fn claim_dataset(&self) -> Result<Option<DatasetRow>> {
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

    fn finish_validation(&self, id: &str, v: &Validation) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE datasets SET validation_status = ?2, validation_error = ?3,
                     validation_warnings = ?4, review = ?5, metrics = ?6, updated_at = ?7
                 WHERE id = ?1 AND validation_status = ?8",
                params![
                    id,
                    v.status(),
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

    fn requeue_validations(&self) -> Result<usize> {
        self.write(|tx| {
            tx.execute(
                "UPDATE datasets SET validation_status = ?1 WHERE validation_status = ?2",
                params![ValidationStatus::Queued, ValidationStatus::Processing],
            )
        })
    }

    fn datasets_by_status(&self) -> Result<Vec<(String, usize)>> {
        Ok(count_by(
            &self.conn(),
            "SELECT validation_status, count(*) FROM datasets GROUP BY 1",
        )?)
    }
}
