//! The columns that hold a dataset's files, one pair (`<part>_filename`, `<part>_bytes`) per
//! multipart field, and the migration (schema 3) that made room for a corpus, a BEIR collection's
//! queries and qrels, and the mining asked for. A BEIR collection comes without `data`, and only a
//! rebuilt table lets SQLite drop `data`'s NOT NULL: the migration copies every row, rowids
//! included, so the order of datasets created in the same millisecond is kept.
use rusqlite::{params, Connection, Result, Row};

use crate::parts::{FilePart, Part, Parts};
use crate::store::codec::{part_column, usage_sum};

pub(super) const MIGRATION: &str = r#"
    CREATE TABLE datasets_v3 (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        dataset_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        validation_status TEXT NOT NULL,
        validation_error TEXT,
        validation_warnings TEXT NOT NULL DEFAULT '[]',
        data_filename TEXT,
        data_bytes INTEGER,
        eval_filename TEXT,
        eval_bytes INTEGER,
        corpus_filename TEXT,
        corpus_bytes INTEGER,
        queries_filename TEXT,
        queries_bytes INTEGER,
        qrels_filename TEXT,
        qrels_bytes INTEGER,
        mining TEXT,
        review TEXT,
        metrics TEXT
    );
    INSERT INTO datasets_v3 (rowid, id, name, dataset_type, created_at, updated_at,
            validation_status, validation_error, validation_warnings, data_filename, data_bytes,
            eval_filename, eval_bytes, review, metrics)
        SELECT rowid, id, name, dataset_type, created_at, updated_at, validation_status,
            validation_error, validation_warnings, data_filename, data_bytes, eval_filename,
            eval_bytes, review, metrics
        FROM datasets;
    DROP TABLE datasets;
    ALTER TABLE datasets_v3 RENAME TO datasets;
    CREATE INDEX datasets_by_status ON datasets (validation_status, created_at);
"#;

pub(super) fn read(row: &Row) -> Result<Parts> {
    let mut parts = Parts::default();
    for part in Part::ALL {
        let c = part_column(part);
        if let Some(filename) = row.get::<_, Option<String>>(format!("{c}_filename").as_str())? {
            *parts.slot(part) = Some(FilePart {
                filename,
                size_bytes: row.get(format!("{c}_bytes").as_str())?,
            });
        }
    }
    Ok(parts)
}

/// Records the files of a dataset just inserted.
pub(super) fn write(tx: &Connection, id: &str, parts: &Parts) -> Result<()> {
    for (part, file) in parts.iter() {
        let c = part_column(part);
        tx.execute(
            &format!("UPDATE datasets SET {c}_filename = ?2, {c}_bytes = ?3 WHERE id = ?1"),
            params![id, file.filename, file.size_bytes],
        )?;
    }
    Ok(())
}

/// Bytes of every uploaded file.
pub(super) fn usage(conn: &Connection) -> Result<u64> {
    conn.query_row(&format!("SELECT {} FROM datasets", usage_sum()), [], |r| {
        r.get(0)
    })
}

#[cfg(test)]
mod tests {
    use super::super::schema::MIGRATIONS;
    use super::super::Sqlite;
    use super::*;
    use crate::store::{DatasetFilter, DatasetQueue, NewDataset};

    /// A database as the release before this schema left it: two datasets with both files,
    /// created in the same millisecond.
    fn schema_2(path: &std::path::Path) {
        let conn = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        for id in ["first", "second"] {
            conn.execute(
                "INSERT INTO datasets (id, name, dataset_type, created_at, updated_at,
                     validation_status, data_filename, data_bytes, eval_filename, eval_bytes, review)
                 VALUES (?1, 'legal', 'reranker-finetune-input', '2025-01-01T00:00:00.000Z',
                     '2025-01-01T00:00:00.000Z', 'validated', 'train.jsonl', 10, 'valid.jsonl', 5, '{}')",
                [id],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_schema_2_database_opens_with_its_datasets_and_takes_a_collection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("finerank.db");
        schema_2(&path);
        let store = Sqlite::open(&path).unwrap();
        let version: usize = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let old = store.dataset("first").unwrap().unwrap();
        let file = |name: &str, size_bytes| {
            Some(FilePart {
                filename: name.into(),
                size_bytes,
            })
        };
        assert_eq!(
            old.parts,
            Parts {
                data: file("train.jsonl", 10),
                eval: file("valid.jsonl", 5),
                ..Parts::default()
            }
        );
        assert!(old.mining.is_none());
        assert_eq!(old.review, Some(serde_json::json!({})));
        let ids: Vec<String> = store
            .datasets(&DatasetFilter::default())
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(
            ids,
            ["second", "first"],
            "same time: the later row first, as before"
        );

        // A BEIR collection has no `data`.
        let parts = Parts {
            corpus: file("corpus.jsonl", 100),
            queries: file("queries.jsonl", 20),
            qrels: file("qrels.tsv", 30),
            ..Parts::default()
        };
        let mining = finerank_retrieve::MineOptions::default();
        store
            .insert_dataset(&NewDataset {
                id: "new".into(),
                name: "beir".into(),
                dataset_type: "reranker-finetune-input".into(),
                parts: parts.clone(),
                mining: Some(mining.clone()),
            })
            .unwrap();
        let new = store.dataset("new").unwrap().unwrap();
        assert_eq!(new.parts, parts);
        assert_eq!(
            serde_json::to_value(new.mining).unwrap(),
            serde_json::to_value(Some(mining)).unwrap()
        );
        assert_eq!(store.dataset_usage().unwrap(), 2 * 15 + 150);
    }
}
