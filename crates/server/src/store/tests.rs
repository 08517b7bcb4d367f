//! The promises of the [`Store`] interface, checked on each backend: SQLite always, and
//! PostgreSQL too when FINERANK_TEST_DATABASE_URL names a server (scripts/postgres.sh starts a
//! throwaway one and sets it), each test in a fresh database of its own.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::jobs::{BaseModel, JobStatus, Progress, Settings};
use crate::parts::{FilePart, Parts};
use crate::validator::ValidationStatus;

const TEST_URL: &str = "FINERANK_TEST_DATABASE_URL";
const LEASE: Duration = Duration::from_secs(30);
const ANY: Mover = Mover::Anyone;

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
        let claimed = store.claim_job("w", LEASE).unwrap().unwrap();
        assert_eq!(
            (claimed.id.as_str(), claimed.status),
            ("job", JobStatus::Finetuning),
            "{name}"
        );
        assert!(
            store.claim_job("w2", LEASE).unwrap().is_none(),
            "{name}: one job, claimed once"
        );
        store
            .training_started("job", "w", Some("from step 2"))
            .unwrap();
        let stale = store
            .transition(
                "job",
                &[JobStatus::Queued],
                JobStatus::Failed,
                Some("no"),
                ANY,
            )
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
                Mover::Holder("w"),
            )
            .unwrap();
        assert!(failed, "{name}");
        let row = store.model("job").unwrap().unwrap();
        assert_eq!(row.failure_reason.as_deref(), Some("oom"), "{name}");
        assert!(row.completed_at.is_some(), "{name}");
        assert!(store
            .requeue("job", &[JobStatus::Failed], "retry", ANY)
            .unwrap());
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
        store.claim_job("w", LEASE).unwrap().unwrap();
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
        store.add_step_loss("job", "w", 1, 0.5).unwrap();
        assert_eq!(
            store.delete_model("job").unwrap(),
            Some(JobStatus::Finetuning),
            "{name}"
        );
        assert_eq!(store.delete_model("job").unwrap(), None, "{name}");
        let moved = store
            .transition("job", &[JobStatus::Finetuning], JobStatus::Ready, None, ANY)
            .unwrap();
        assert!(!moved, "{name}");
        store.training_started("job", "w", None).unwrap();
        store.add_step_loss("job", "w", 2, 0.4).unwrap();
        store
            .add_step_metrics("job", "w", 2, &[("loss".to_string(), 0.4)].into())
            .unwrap();
        assert!(store.model("job").unwrap().is_none(), "{name}");
        assert!(store.step_losses("job", 0).unwrap().is_empty(), "{name}");
        assert_eq!(store.step_metrics("job", 0, 10).unwrap().total, 0, "{name}");
        assert_eq!(store.events("job", Order::Oldest, 0, 10).unwrap().total, 0);
        assert_eq!(store.deleted_models().unwrap(), ["job"], "{name}");
    }
}

fn progress(step: usize) -> Progress {
    Progress {
        step,
        total_steps: 10,
        epoch: 1,
        loss: Some(0.5),
    }
}

/// A claim is leased: only its holder renews it; once it expires, anyone may requeue the job,
/// and when another worker has taken it over, whatever the first one still writes is refused.
#[test]
fn a_lease_keeps_a_job_with_its_worker_until_it_expires() {
    use JobStatus::{DeployingApi, Finetuning, Queued, Ready};
    for Fresh { name, store, .. } in stores() {
        let store = &*store;
        store.insert_model("job", "m", &settings("d")).unwrap();
        let short = Duration::from_millis(300);
        store.claim_job("a", short).unwrap().unwrap();
        assert!(store.renew_lease("job", "a", short).unwrap(), "{name}");
        assert!(!store.renew_lease("job", "b", short).unwrap(), "{name}");
        assert!(store.expired_leases().unwrap().is_empty(), "{name}");
        let reaped = |owner| {
            let by = Mover::Reaper(owner);
            store.requeue("job", &[Finetuning], "its lease expired", by)
        };
        assert!(!reaped("a").unwrap(), "{name}: a live lease is not reaped");

        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            store.expired_leases().unwrap(),
            [("job".to_string(), Finetuning, "a".to_string())],
            "{name}"
        );
        assert!(!reaped("b").unwrap(), "{name}: another claim's lease");
        assert!(reaped("a").unwrap(), "{name}");
        assert!(store.expired_leases().unwrap().is_empty(), "{name}");

        // Another worker takes the job over; the first comes back from a long pause.
        store.claim_job("b", LEASE).unwrap().unwrap();
        assert!(!store.renew_lease("job", "a", LEASE).unwrap(), "{name}");
        store.set_progress("job", "a", &progress(9)).unwrap();
        store.add_step_loss("job", "a", 9, 9.0).unwrap();
        let stale_metrics = [("stale".to_string(), 9.0)].into();
        store
            .add_step_metrics("job", "a", 9, &stale_metrics)
            .unwrap();
        store.training_started("job", "a", Some("stale")).unwrap();
        let stale = Mover::Holder("a");
        for to in [DeployingApi, JobStatus::Failed] {
            let moved = store.transition("job", &[Finetuning], to, Some("stale"), stale);
            assert!(
                !moved.unwrap(),
                "{name}: a stale worker moved the job to {to:?}"
            );
        }
        assert!(!store.requeue("job", &[Finetuning], "stale", stale).unwrap());
        let row = store.model("job").unwrap().unwrap();
        assert_eq!(row.status, Finetuning, "{name}");
        assert!(row.progress.is_none(), "{name}: {:?}", row.progress);
        assert!(store.step_losses("job", 0).unwrap().is_empty(), "{name}");
        assert_eq!(store.step_metrics("job", 0, 10).unwrap().total, 0, "{name}");

        // The new holder's writes go through, and the lease lasts until the job is over.
        store.training_started("job", "b", None).unwrap();
        store.set_progress("job", "b", &progress(3)).unwrap();
        store.add_step_loss("job", "b", 3, 0.3).unwrap();
        let row = store.model("job").unwrap().unwrap();
        assert_eq!(row.progress.map(|p| p.step), Some(3), "{name}");
        assert_eq!(store.step_losses("job", 0).unwrap(), [(3, 0.3)], "{name}");
        let holder = Mover::Holder("b");
        assert!(store
            .transition("job", &[Finetuning], DeployingApi, None, holder)
            .unwrap());
        assert!(store.renew_lease("job", "b", LEASE).unwrap(), "{name}");
        assert!(store
            .transition("job", &[DeployingApi], Ready, None, holder)
            .unwrap());
        assert!(!store.renew_lease("job", "b", LEASE).unwrap(), "{name}");
        assert_eq!(
            statuses(store, "job"),
            [Queued, Queued, Finetuning, DeployingApi, Ready],
            "{name}"
        );
        let events = store.events("job", Order::Oldest, 0, 10).unwrap();
        let requeued = events.items[1].message.as_deref();
        assert_eq!(requeued, Some("its lease expired"), "{name}");
    }
}

/// A cancel pauses a job: its worker's next heartbeat finds it gone, and a retry requeues it.
#[test]
fn a_cancelled_job_is_paused_and_can_be_retried() {
    for Fresh { name, store, .. } in stores() {
        let store = &*store;
        store.insert_model("job", "m", &settings("d")).unwrap();
        store.claim_job("w", LEASE).unwrap().unwrap();
        let from = [JobStatus::Queued, JobStatus::Finetuning];
        let paused = store.transition("job", &from, JobStatus::Paused, Some("cancelled"), ANY);
        assert!(paused.unwrap(), "{name}");
        assert!(!store.renew_lease("job", "w", LEASE).unwrap(), "{name}");
        let row = store.model("job").unwrap().unwrap();
        assert_eq!(
            (row.status, row.failure_reason, row.completed_at),
            (JobStatus::Paused, None, None),
            "{name}: a paused job is neither failed nor over"
        );
        let worker_fails = store.transition(
            "job",
            &[JobStatus::Finetuning],
            JobStatus::Failed,
            Some("cancelled"),
            Mover::Holder("w"),
        );
        assert!(!worker_fails.unwrap(), "{name}");
        let retry = [JobStatus::Failed, JobStatus::Paused];
        assert!(store.requeue("job", &retry, "retried", ANY).unwrap());
        let claimed = store.claim_job("w2", LEASE).unwrap().unwrap();
        assert_eq!(claimed.id, "job", "{name}");
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
                    std::iter::from_fn(|| store.claim_job("w", LEASE).unwrap().map(|row| row.id))
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
    // Servers and workers share the database: a second store opens beside the first.
    let first = postgresql::Postgres::connect(config.clone()).unwrap();
    postgresql::Postgres::connect(config).unwrap();
    drop(first);
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

/// bench/claims.sh: `CLAIM_WORKERS` workers (8), each on connections of its own, claim
/// `CLAIM_JOBS` jobs (1,000) from PostgreSQL and run each through a stub trainer: a heartbeat,
/// then the moves a real worker makes under its lease, to STATUS_READY. No job may be claimed
/// twice or lost. Prints the claims a second. Ignored by `cargo test`: run it through the script.
#[test]
#[ignore]
fn claims_benchmark() {
    let url = std::env::var(TEST_URL).expect("run it under scripts/postgres.sh (bench/claims.sh)");
    let count = |name, default| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse::<usize>().expect("a count"))
    };
    let (workers, jobs) = (count("CLAIM_WORKERS", 8), count("CLAIM_JOBS", 1000));
    let (_database, config) = fresh_postgres(&url);
    let store = postgresql::Postgres::connect(config.clone()).unwrap();
    let ids: BTreeSet<String> = (0..jobs).map(|i| format!("job-{i:05}")).collect();
    for id in &ids {
        store.insert_model(id, "m", &settings("d")).unwrap();
    }
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let store = postgresql::Postgres::connect(config.clone()).unwrap();
            std::thread::spawn(move || {
                let mut claimed = Vec::new();
                for n in 0.. {
                    let owner = format!("worker {w} claim {n}");
                    let Some(row) = store.claim_job(&owner, LEASE).unwrap() else {
                        break;
                    };
                    let by = Mover::Holder(&owner);
                    let deploy = [JobStatus::Finetuning];
                    assert!(store.renew_lease(&row.id, &owner, LEASE).unwrap());
                    let moved = store
                        .transition(&row.id, &deploy, JobStatus::DeployingApi, None, by)
                        .unwrap()
                        && store
                            .transition(
                                &row.id,
                                &[JobStatus::DeployingApi],
                                JobStatus::Ready,
                                None,
                                by,
                            )
                            .unwrap();
                    assert!(moved, "{owner} lost {}", row.id);
                    claimed.push(row.id);
                }
                claimed
            })
        })
        .collect();
    let claimed: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let seconds = started.elapsed().as_secs_f64();
    let all: Vec<&String> = claimed.iter().flatten().collect();
    let unique: BTreeSet<String> = all.iter().map(|id| id.to_string()).collect();
    assert_eq!(all.len(), unique.len(), "a job was claimed twice");
    assert_eq!(unique, ids, "a job was lost");
    let ready = store.models_by_status().unwrap();
    assert_eq!(ready, [("STATUS_READY".to_string(), jobs)], "{ready:?}");
    let per_worker: Vec<usize> = claimed.iter().map(Vec::len).collect();
    println!(
        "claims: {jobs} jobs by {workers} workers in {seconds:.2} s: {:.0} claims/s \
         (each claim, heartbeat and two lease-checked moves; per worker {per_worker:?}); \
         none claimed twice, none lost",
        jobs as f64 / seconds
    );
}
