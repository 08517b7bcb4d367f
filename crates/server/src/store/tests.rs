//! The promises of the [`Store`] interface, checked on each backend: SQLite always, and
//! PostgreSQL too when FINERANK_TEST_DATABASE_URL names a server (scripts/postgres.sh starts a
//! throwaway one and sets it), each test in a fresh database of its own.
use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::jobs::{BaseModel, JobStatus, Settings};
use crate::parts::{FilePart, Parts};
use crate::validator::ValidationStatus;

const TEST_URL: &str = "FINERANK_TEST_DATABASE_URL";

/// A store on a fresh database, and what to remove after it (fields drop in order: the store
/// first).
struct Fresh {
    name: &'static str,
    store: Arc<dyn Store>,
    /// Runs SQL on the database behind the store's back, as an operator would.
    sql: Box<dyn Fn(&str)>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

/// A database of the test server, dropped with this.
struct TestDatabase {
    admin: postgres::Config,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = self.admin.connect(postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name));
        }
    }
}

/// A fresh empty database on the test server, and its settings.
fn fresh_postgres(url: &str) -> (TestDatabase, postgres::Config) {
    let admin = postgresql::parse_url(url).unwrap();
    let name = format!("finerank_test_{}", uuid::Uuid::new_v4().simple());
    let mut client = admin.connect(postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let mut config = admin.clone();
    config.dbname(&name);
    (TestDatabase { admin, name }, config)
}

fn stores() -> Vec<Fresh> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("finerank.db");
    let sqlite = sqlite::Sqlite::open(&path).unwrap();
    let mut stores = vec![Fresh {
        name: "sqlite",
        store: Arc::new(sqlite),
        sql: Box::new(move |sql| {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(sql).unwrap();
        }),
        _dir: Some(dir),
        _database: None,
    }];
    if let Ok(url) = std::env::var(TEST_URL) {
        let (database, config) = fresh_postgres(&url);
        stores.push(Fresh {
            name: "postgres",
            store: Arc::new(postgresql::Postgres::connect(config.clone()).unwrap()),
            sql: Box::new(move |sql| {
                let mut client = config.connect(postgres::NoTls).unwrap();
                client.batch_execute(sql).unwrap();
            }),
            _dir: None,
            _database: Some(database),
        });
    }
    stores
}

fn settings(dataset_id: &str) -> Settings {
    Settings {
        base_model: BaseModel {
            base_type: "BASE_TYPE_RERANK".into(),
            name: None,
        },
        dataset_id: dataset_id.into(),
        hyperparameters: None,
    }
}

fn statuses(store: &dyn Store, id: &str) -> Vec<JobStatus> {
    let events = store.events(id, Order::Oldest, 0, 100).unwrap();
    events.items.into_iter().map(|e| e.status).collect()
}

fn dataset(id: &str, bytes: u64) -> NewDataset {
    NewDataset {
        id: id.into(),
        name: "legal".into(),
        dataset_type: "reranker-finetune-input".into(),
        parts: Parts {
            data: Some(FilePart {
                filename: "train.jsonl".into(),
                size_bytes: bytes,
            }),
            ..Parts::default()
        },
        mining: None,
    }
}

/// Rows created in the same millisecond are listed in the order they were inserted.
#[test]
fn lists_keep_the_order_of_insertion() {
    for Fresh {
        name, store, sql, ..
    } in stores()
    {
        let ids: Vec<String> = (0..30).map(|i| format!("job-{i:02}")).collect();
        for id in &ids {
            store.insert_model(id, "m", &settings("d")).unwrap();
            store.insert_dataset(&dataset(id, 1)).unwrap();
        }
        let at = "'2025-01-01T00:00:00.000Z'";
        sql(&format!(
            "UPDATE finetuned_models SET created_at = {at}; UPDATE datasets SET created_at = {at};"
        ));
        let oldest = store.models(Order::Oldest, 0, 100).unwrap();
        assert_eq!(oldest.total, 30, "{name}");
        let listed: Vec<String> = oldest.items.into_iter().map(|m| m.id).collect();
        assert_eq!(listed, ids, "{name}");
        let mut reversed = ids.clone();
        reversed.reverse();
        let newest = |offset, limit| -> Vec<String> {
            let page = store.models(Order::Newest, offset, limit).unwrap();
            page.items.into_iter().map(|m| m.id).collect()
        };
        assert_eq!(newest(0, 100), reversed, "{name}");
        assert_eq!(newest(5, 3), ["job-24", "job-23", "job-22"], "{name}");
        let datasets: Vec<String> = (store.datasets(&DatasetFilter::default()).unwrap())
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(datasets, reversed, "{name}: datasets list newest first");
        // An offset past i64 neither wraps nor errs.
        let far = DatasetFilter {
            offset: usize::MAX,
            ..DatasetFilter::default()
        };
        assert!(store.datasets(&far).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn a_job_moves_only_from_the_statuses_its_caller_expects() {
    for Fresh { name, store, .. } in stores() {
        let store = &*store;
        store.insert_model("job", "m", &settings("d")).unwrap();
        let claimed = store.claim_job().unwrap().unwrap();
        assert_eq!(
            (claimed.id.as_str(), claimed.status),
            ("job", JobStatus::Finetuning),
            "{name}"
        );
        assert!(
            store.claim_job().unwrap().is_none(),
            "{name}: one job, claimed once"
        );
        store.training_started("job", Some("from step 2")).unwrap();
        let stale = store
            .transition("job", &[JobStatus::Queued], JobStatus::Failed, Some("no"))
            .unwrap();
        assert!(
            !stale,
            "{name}: a job no longer queued cannot fail from the queue"
        );
        let failed = store
            .transition(
                "job",
                &[JobStatus::Finetuning],
                JobStatus::Failed,
                Some("oom"),
            )
            .unwrap();
        assert!(failed, "{name}");
        let row = store.model("job").unwrap().unwrap();
        assert_eq!(row.failure_reason.as_deref(), Some("oom"), "{name}");
        assert!(row.completed_at.is_some(), "{name}");
        assert!(store.requeue("job", &[JobStatus::Failed], "retry").unwrap());
        let row = store.model("job").unwrap().unwrap();
        assert_eq!(
            (row.status, row.failure_reason, row.completed_at),
            (JobStatus::Queued, None, None),
            "{name}: a requeued job is not over"
        );
        assert_eq!(
            statuses(store, "job"),
            [
                JobStatus::Queued,
                JobStatus::Finetuning,
                JobStatus::Failed,
                JobStatus::Queued
            ],
            "{name}"
        );
        let events = store.events("job", Order::Newest, 0, 1).unwrap();
        assert_eq!(events.total, 4, "{name}");
        assert_eq!(events.items[0].message.as_deref(), Some("retry"), "{name}");

        // Settings change only while queued.
        let other = settings("other");
        assert!(matches!(
            store.update_model("job", Some("renamed"), Some(&other)).unwrap(),
            ModelUpdate::Updated(row) if row.name == "renamed" && row.settings == other
        ));
        store.claim_job().unwrap().unwrap();
        assert!(matches!(
            store
                .update_model("job", None, Some(&settings("d")))
                .unwrap(),
            ModelUpdate::Locked(JobStatus::Finetuning)
        ));
        assert!(matches!(
            store.update_model("missing", Some("x"), None).unwrap(),
            ModelUpdate::Missing
        ));

        // Deleted while it trains: what the worker records afterwards changes nothing.
        store.add_step_loss("job", 1, 0.5).unwrap();
        assert_eq!(
            store.delete_model("job").unwrap(),
            Some(JobStatus::Finetuning),
            "{name}"
        );
        assert_eq!(store.delete_model("job").unwrap(), None, "{name}");
        let moved = store
            .transition("job", &[JobStatus::Finetuning], JobStatus::Ready, None)
            .unwrap();
        assert!(!moved, "{name}");
        store.training_started("job", None).unwrap();
        store.add_step_loss("job", 2, 0.4).unwrap();
        store
            .add_step_metrics("job", 2, &[("loss".to_string(), 0.4)].into())
            .unwrap();
        assert!(store.model("job").unwrap().is_none(), "{name}");
        assert!(store.step_losses("job", 0).unwrap().is_empty(), "{name}");
        assert_eq!(store.step_metrics("job", 0, 10).unwrap().total, 0, "{name}");
        assert_eq!(store.events("job", Order::Oldest, 0, 10).unwrap().total, 0);
        assert_eq!(store.deleted_models().unwrap(), ["job"], "{name}");
    }
}

/// Workers claiming at once (on PostgreSQL: from several connections) never take a job twice.
#[test]
fn concurrent_claims_take_each_job_once() {
    for Fresh { name, store, .. } in stores() {
        let ids: BTreeSet<String> = (0..40).map(|i| format!("job-{i}")).collect();
        for id in &ids {
            store.insert_model(id, "m", &settings("d")).unwrap();
        }
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    std::iter::from_fn(|| store.claim_job().unwrap().map(|row| row.id))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let claimed: Vec<String> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert_eq!(claimed.len(), ids.len(), "{name}: {claimed:?}");
        assert_eq!(claimed.into_iter().collect::<BTreeSet<_>>(), ids, "{name}");
    }
}

#[test]
fn the_dataset_queue_validates_each_once_and_keeps_files_a_job_needs() {
    for Fresh { name, store, .. } in stores() {
        store.insert_dataset(&dataset("first", 10)).unwrap();
        store.insert_dataset(&dataset("second", 5)).unwrap();
        assert_eq!(store.dataset_usage().unwrap(), 15, "{name}");
        let claimed = store.claim_dataset().unwrap().unwrap();
        assert_eq!(claimed.id, "first", "{name}: oldest first");
        assert_eq!(claimed.validation_status, ValidationStatus::Processing);
        let verdict = Validation {
            ok: true,
            error: None,
            warnings: vec!["short".into()],
            review: serde_json::json!({"rows": 3}),
            metrics: None,
        };
        store.finish_validation("first", &verdict).unwrap();
        let first = store.dataset("first").unwrap().unwrap();
        assert_eq!(first.validation_status, ValidationStatus::Validated);
        assert_eq!(first.validation_warnings, ["short"], "{name}");
        assert_eq!(first.review, Some(serde_json::json!({"rows": 3})));
        assert_eq!(first.parts, dataset("first", 10).parts, "{name}");

        // A validation cut short by a restart starts over; its late verdict changes nothing.
        store.claim_dataset().unwrap().unwrap();
        assert_eq!(store.requeue_validations().unwrap(), 1, "{name}");
        store.finish_validation("second", &verdict).unwrap();
        let second = store.dataset("second").unwrap().unwrap();
        assert_eq!(second.validation_status, ValidationStatus::Queued);
        let queued = DatasetFilter {
            validation_status: Some(ValidationStatus::Queued),
            ..DatasetFilter::default()
        };
        let listed = store.datasets(&queued).unwrap();
        assert_eq!(listed.len(), 1, "{name}");
        let mut counts = store.datasets_by_status().unwrap();
        counts.sort();
        assert_eq!(
            counts,
            [("queued".to_string(), 1), ("validated".to_string(), 1)],
            "{name}"
        );

        store.insert_model("job", "m", &settings("first")).unwrap();
        assert!(matches!(
            store.delete_dataset("first").unwrap(),
            DatasetDeletion::InUse { model_id, status: JobStatus::Queued } if model_id == "job"
        ));
        assert!(matches!(
            store.delete_dataset("second").unwrap(),
            DatasetDeletion::Deleted
        ));
        assert!(matches!(
            store.delete_dataset("second").unwrap(),
            DatasetDeletion::Missing
        ));
        assert_eq!(store.dataset_ids().unwrap(), ["first"], "{name}");
    }
}

/// Servers starting at once on a new database: each migrates, the schema is applied once.
#[test]
fn postgres_migrates_once_when_servers_start_at_once() {
    let Ok(url) = std::env::var(TEST_URL) else {
        return;
    };
    let (_database, config) = fresh_postgres(&url);
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut client = config.connect(postgres::NoTls).unwrap();
                postgresql::schema::migrate(&mut client).map(|()| client)
            })
        })
        .collect();
    let mut clients: Vec<postgres::Client> = starts
        .into_iter()
        .map(|s| s.join().unwrap().unwrap())
        .collect();
    let versions: Vec<i32> = clients[0]
        .query("SELECT version FROM finerank_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=postgresql::schema::MIGRATIONS.len() as i32).collect::<Vec<_>>()
    );
    // The second server on the database is refused while the first holds it.
    let first = postgresql::Postgres::connect(config.clone()).unwrap();
    let second = postgresql::Postgres::connect(config.clone()).err().unwrap();
    assert!(
        second.to_string().contains("another finerank server"),
        "{second}"
    );
    drop(first);
    postgresql::Postgres::connect(config).unwrap();
    drop(clients.drain(..));
}

#[test]
fn an_unreachable_postgres_fails_the_start_with_the_cause() {
    // Port 1 on localhost: nothing listens there.
    let url = "postgres://finerank@127.0.0.1:1/finerank";
    let err = match open(&Database::postgres(url).unwrap()) {
        Ok(_) => panic!("opened a store on a closed port"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("could not connect to the PostgreSQL server"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    let bad = Database::postgres("mysql://root@db/finerank").unwrap_err();
    assert!(bad.contains("expected postgres://"), "{bad}");
    let shown = Database::postgres("postgres://u:secret@db:5433/meta")
        .unwrap()
        .to_string();
    assert_eq!(shown, "PostgreSQL database meta on db as u");
}
