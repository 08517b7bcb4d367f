//! The dataset queue in PostgreSQL.
use postgres::{GenericClient, Row, Transaction};

use super::{claim_oldest, count_by, json, json_opt, status, Postgres};
use crate::jobs::JobStatus;
use crate::parts::{FilePart, Part, Parts};
use crate::store::codec::{now, part_column, sql_int, to_json, usage_sum, Status};
use crate::store::{DatasetDeletion, DatasetFilter, DatasetQueue, DatasetRow, NewDataset};
use crate::store::{Result, Validation};
use crate::validator::ValidationStatus;

fn parts(row: &Row) -> Result<Parts> {
    let mut parts = Parts::default();
    for part in Part::ALL {
        let c = part_column(part);
        if let Some(filename) = row.try_get(format!("{c}_filename").as_str())? {
            let bytes: i64 = row.try_get(format!("{c}_bytes").as_str())?;
            *parts.slot(part) = Some(FilePart {
                filename,
                size_bytes: bytes as u64,
            });
        }
    }
    Ok(parts)
}

fn dataset_row(row: &Row) -> Result<DatasetRow> {
    Ok(DatasetRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        dataset_type: row.try_get("dataset_type")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        validation_status: status(row, "validation_status")?,
        validation_error: row.try_get("validation_error")?,
        validation_warnings: json(row, "validation_warnings")?,
        parts: parts(row)?,
        mining: json_opt(row, "mining")?,
        review: json_opt(row, "review")?,
        metrics: json_opt(row, "metrics")?,
    })
}

fn get_dataset(client: &mut impl GenericClient, id: &str) -> Result<Option<DatasetRow>> {
    client
        .query_opt("SELECT * FROM datasets WHERE id = $1", &[&id])?
        .as_ref()
        .map(dataset_row)
        .transpose()
}

fn write_parts(tx: &mut Transaction, id: &str, parts: &Parts) -> Result<()> {
    for (part, file) in parts.iter() {
        let c = part_column(part);
        tx.execute(
            &format!("UPDATE datasets SET {c}_filename = $2, {c}_bytes = $3 WHERE id = $1"),
            &[&id, &file.filename, &sql_int(file.size_bytes)],
        )?;
    }
    Ok(())
}

impl DatasetQueue for Postgres {
    fn insert_dataset(&self, d: &NewDataset) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO datasets (id, name, dataset_type, created_at, updated_at, validation_status, mining)
                 VALUES ($1, $2, $3, $4, $4, $5, $6)",
                &[
                    &d.id,
                    &d.name,
                    &d.dataset_type,
                    &now(),
                    &ValidationStatus::Queued.as_str(),
                    &d.mining.as_ref().map(to_json),
                ],
            )?;
            write_parts(tx, &d.id, &d.parts)
        })
    }

    fn dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        get_dataset(&mut *self.conn()?, id)
    }

    fn datasets(&self, f: &DatasetFilter) -> Result<Vec<DatasetRow>> {
        let rows = self.conn()?.query(
            "SELECT * FROM datasets
             WHERE ($1::text IS NULL OR dataset_type = $1) AND ($2::text IS NULL OR validation_status = $2)
               AND ($3::text IS NULL OR created_at < $3) AND ($4::text IS NULL OR created_at > $4)
             ORDER BY created_at DESC, seq DESC LIMIT $5 OFFSET $6",
            &[
                &f.dataset_type,
                &f.validation_status.map(Status::as_str),
                &f.before,
                &f.after,
                // LIMIT NULL is no limit.
                &f.limit.map(sql_int),
                &sql_int(f.offset),
            ],
        )?;
        rows.iter().map(dataset_row).collect()
    }

    fn delete_dataset(&self, id: &str) -> Result<DatasetDeletion> {
        self.write(|tx| {
            if tx
                .query_opt("SELECT 1 FROM datasets WHERE id = $1 FOR UPDATE", &[&id])?
                .is_none()
            {
                return Ok(DatasetDeletion::Missing);
            }
            let needed = [JobStatus::Queued, JobStatus::Finetuning].map(Status::as_str);
            if let Some(user) = tx.query_opt(
                "SELECT id, status FROM finetuned_models
                 WHERE dataset_id = $1 AND status = ANY($2) LIMIT 1",
                &[&id, &&needed[..]],
            )? {
                return Ok(DatasetDeletion::InUse {
                    model_id: user.try_get("id")?,
                    status: status(&user, "status")?,
                });
            }
            tx.execute("DELETE FROM datasets WHERE id = $1", &[&id])?;
            Ok(DatasetDeletion::Deleted)
        })
    }

    fn dataset_ids(&self) -> Result<Vec<String>> {
        let rows = self.conn()?.query("SELECT id FROM datasets", &[])?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?)
    }

    fn dataset_usage(&self) -> Result<u64> {
        // PostgreSQL sums BIGINTs into a NUMERIC.
        let sql = format!("SELECT ({})::bigint FROM datasets", usage_sum());
        let bytes: i64 = self.conn()?.query_one(&sql, &[])?.try_get(0)?;
        Ok(bytes as u64)
    }

    fn claim_dataset(&self) -> Result<Option<DatasetRow>> {
        self.write(|tx| {
            let from = ValidationStatus::Queued;
            let to = ValidationStatus::Processing;
            claim_oldest(tx, "datasets", "validation_status", from, to)?
                .as_ref()
                .map(dataset_row)
                .transpose()
        })
    }

    fn finish_validation(&self, id: &str, v: &Validation) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE datasets SET validation_status = $2, validation_error = $3,
                     validation_warnings = $4, review = $5, metrics = $6, updated_at = $7
                 WHERE id = $1 AND validation_status = $8",
                &[
                    &id,
                    &v.status().as_str(),
                    &v.error,
                    &to_json(&v.warnings),
                    &to_json(&v.review),
                    &v.metrics.as_ref().map(to_json),
                    &now(),
                    &ValidationStatus::Processing.as_str(),
                ],
            )?;
            Ok(())
        })
    }

    fn requeue_validations(&self) -> Result<usize> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE datasets SET validation_status = $1 WHERE validation_status = $2",
                &[
                    &ValidationStatus::Queued.as_str(),
                    &ValidationStatus::Processing.as_str(),
                ],
            )?;
            Ok(n as usize)
        })
    }

    fn datasets_by_status(&self) -> Result<Vec<(String, usize)>> {
        count_by(
            &mut *self.conn()?,
            "SELECT validation_status, count(*) FROM datasets GROUP BY 1",
        )
    }
}
