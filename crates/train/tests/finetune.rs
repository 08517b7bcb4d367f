//! Fine-tuning end to end on small data: the loss falls, the run repeats exactly with the same
//! seed, the model lands in the registry whole (or not at all), and Hugging Face's own stacks
//! load it and score as finerank does.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use finerank_data::{prepare, Mapping, PrepareOptions, Split};
use finerank_engine::{
    resolve, DeviceChoice, Kind, LoadOptions, ModelRecord, Precision, Registry, Reranker,
    ScoreOptions,
};
use finerank_train::{run_job, FinetuneJob, HyperOverrides, JobError, TrainEvent};

/// libtorch's random generator is process-wide: a training run beside another in this binary
/// would draw from it too, so the runs here take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared(rel: &str) -> PathBuf {
    root().join("../shared").join(rel)
}

/// A small CaseHOLD split in `dir`: 48 train and 16 validation queries.
fn small_data(dir: &Path) -> (PathBuf, PathBuf) {
    let opts = PrepareOptions {
        split: Split::Counts {
            train: 48,
            valid: 16,
            test: 0,
        },
        ..Default::default()
    };
    prepare(
        &shared("data/casehold/train.jsonl"),
        &Mapping::casehold(),
        &opts,
        dir,
    )
    .unwrap();
    (dir.join("train.jsonl"), dir.join("valid.jsonl"))
}

fn job(base: &str, train: &Path, valid: &Path) -> FinetuneJob {
    FinetuneJob {
        id: None,
        base: base.to_string(),
        kind: None,
        name: None,
        train: train.to_path_buf(),
        valid: Some(valid.to_path_buf()),
        hyper: HyperOverrides {
            train_epochs: Some(1),
            train_batch_size: Some(8),
            ..Default::default()
        },
        seed: 7,
        max_len: Some(64),
        eval_every: None,
        max_steps: None,
        device: DeviceChoice::Cpu,
        precision: Precision::F32,
        min_train_queries: Some(8),
        min_valid_queries: Some(8),
    }
}

/// A temporary registry and a one-epoch job on the small split, for `base`.
fn setup(base: &str) -> (tempfile::TempDir, Registry, FinetuneJob) {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = small_data(&tmp.path().join("data"));
    let registry = Registry::open(&tmp.path().join("home")).unwrap();
    let j = job(base, &train, &valid);
    (tmp, registry, j)
}

fn tiny_bert() -> String {
    shared("fixtures/tiny-bert-cross-encoder")
        .display()
        .to_string()
}

fn scores(registry: &Registry, id: &str, pairs: &[(&str, &str)]) -> Vec<f32> {
    let (name, dir) = resolve(id, registry).unwrap();
    let r = Reranker::load(
        &name,
        &dir,
        &LoadOptions {
            device: DeviceChoice::Cpu,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    pairs
        .iter()
        .map(|(q, d)| r.rerank(q, &[d], None, &ScoreOptions::default()).results[0].relevance_score)
        .collect()
}

/// Runs `j` to the end and returns its record with the loss of every step.
fn train_with_losses(j: &FinetuneJob, registry: &Registry) -> (ModelRecord, Vec<f64>) {
    let mut losses = Vec::new();
    let (record, _) = run_job(
        j,
        registry,
        &mut |e| {
            if let TrainEvent::Step { loss, .. } = e {
                losses.push(*loss)
            }
        },
        &|| false,
    )
    .unwrap();
    (record, losses)
}

const PAIRS: [(&str, &str); 3] = [
    (
        "what is the capital of france",
        "Paris is the capital and largest city of France.",
    ),
    (
        "holding that a bankruptcy estate includes insurance policies",
        "holding that the proceeds of a liability insurance policy were not property of the estate",
    ),
    (
        "short",
        "a longer document about something else entirely, with commas, numbers 1 2 3 and § signs",
    ),
];

#[test]
fn same_seed_same_model_and_nothing_partial_in_the_registry() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-3);
    let (a, _) = run_job(&j, &registry, &mut |_| {}, &|| false).unwrap();
    let (b, _) = run_job(&j, &registry, &mut |_| {}, &|| false).unwrap();
    assert_ne!(a.id, b.id);
    assert!(a.id.ends_with("-ft"));
    assert_eq!(
        scores(&registry, &a.id, &PAIRS),
        scores(&registry, &b.id, &PAIRS),
        "same seed, same model"
    );
    let base = scores(&registry, &tiny_bert(), &PAIRS);
    assert_ne!(
        base,
        scores(&registry, &a.id, &PAIRS),
        "training changed the model"
    );
    assert_eq!(registry.list().unwrap().len(), 2);

    // A run that is cancelled, or whose data is bad, registers nothing and leaves no staging.
    let err = run_job(&j, &registry, &mut |_| {}, &|| true).unwrap_err();
    assert!(
        matches!(err, JobError::Train(ref m) if m == "cancelled"),
        "{err}"
    );
    let mut bad = j.clone();
    bad.min_train_queries = None;
    let err = run_job(&bad, &registry, &mut |_| {}, &|| false).unwrap_err();
    assert!(err.to_string().contains("256"), "{err}");
    assert_eq!(registry.list().unwrap().len(), 2);
    let staging: Vec<_> = std::fs::read_dir(tmp.path().join("home/staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "no partial model left in staging");
}

fn hf_scores(dir: &Path, kind: &str) -> Vec<f32> {
    let pairs: Vec<_> = PAIRS
        .iter()
        .map(|(q, d)| serde_json::json!({"query": q, "document": d}))
        .collect();
    let mut child = Command::new(root().join(".venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf_score.py"))
        .arg(dir)
        .arg(kind)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the .venv from scripts/bootstrap.sh has python");
    serde_json::to_writer(child.stdin.take().unwrap(), &pairs).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hf_score.py failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_close(ours: &[f32], theirs: &[f32]) {
    for (a, b) in ours.iter().zip(theirs) {
        assert!(
            (a - b).abs() < 1e-4,
            "finerank {ours:?} vs Hugging Face {theirs:?}"
        );
    }
}

#[test]
fn transformers_loads_a_fine_tuned_cross_encoder_with_the_same_scores() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-3);
    let (record, _) = run_job(&j, &registry, &mut |_| {}, &|| false).unwrap();
    let (_, dir) = registry.get(&record.id).unwrap().unwrap();
    assert_close(
        &scores(&registry, &record.id, &PAIRS),
        &hf_scores(&dir, "cross-encoder"),
    );
}

fn default_model() -> String {
    finerank_engine::DEFAULT_MODEL.to_string()
}

/// The one real-model training test: a few steps on MiniLM lower the loss and write a model that
/// sentence-transformers loads with the same scores.
#[test]
fn minilm_few_steps_lower_the_loss_and_sentence_transformers_agrees() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, registry, mut j) = setup(&default_model());
    // Three passes over the same 48 queries: the loss must fall as the model fits them.
    j.hyper = HyperOverrides {
        train_epochs: Some(3),
        train_batch_size: Some(16),
        learning_rate: Some(5e-5),
        ..Default::default()
    };
    j.hyper.early_stopping_patience = Some(0);
    let (record, losses) = train_with_losses(&j, &registry);
    assert_eq!(record.kind, Kind::BiEncoder);
    assert_eq!(losses.len(), 9);
    let first: f64 = losses[..3].iter().sum();
    let last: f64 = losses[6..].iter().sum();
    assert!(last < first, "loss did not fall: {losses:?}");
    let (_, dir) = registry.get(&record.id).unwrap().unwrap();
    assert_close(
        &scores(&registry, &record.id, &PAIRS),
        &hf_scores(&dir, "bi-encoder"),
    );
}

/// The training file of `j` rewritten without its hard negatives, as users often have their data.
fn without_negatives(j: &mut FinetuneJob) {
    let stripped: String = std::fs::read_to_string(&j.train)
        .unwrap()
        .lines()
        .map(|l| {
            let mut row: serde_json::Value = serde_json::from_str(l).unwrap();
            row.as_object_mut().unwrap().remove("hard_negatives");
            format!("{row}\n")
        })
        .collect();
    let path = j.train.with_file_name("no-negatives.jsonl");
    std::fs::write(&path, stripped).unwrap();
    j.train = path;
}

/// A cross-encoder's listwise loss over a group of one is exactly zero: without hard negatives
/// it would train on nothing. It learns against the other queries' passages in the batch instead.
#[test]
fn a_cross_encoder_without_negatives_still_has_a_loss_to_learn_from() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    without_negatives(&mut j);
    j.max_steps = Some(3);
    let (_, losses) = train_with_losses(&j, &registry);
    assert_eq!(losses.len(), 3);
    // Seven in-batch negatives and a near-uniform fresh head: about ln 8 a query.
    assert!(losses.iter().all(|&l| l > 1.0), "{losses:?}");
}

/// A run where no checkpoint beats the base says so, in its events and its recorded outcome.
#[test]
fn a_run_that_never_beats_the_base_says_so() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-30);
    let mut said = None;
    let (record, _) = run_job(
        &j,
        &registry,
        &mut |e| {
            if let TrainEvent::NoImprovement { steps, .. } = e {
                said = Some(*steps)
            }
        },
        &|| false,
    )
    .unwrap();
    assert_eq!(said, Some(6), "no NoImprovement event");
    let outcome: finerank_train::Outcome = serde_json::from_value(record.metrics).unwrap();
    assert!(!outcome.improved());
    assert_eq!(outcome.best_step, 0);

    // The same data with a real learning rate does beat the base, and says nothing of the kind.
    j.hyper.learning_rate = Some(1e-3);
    let mut said = false;
    run_job(
        &j,
        &registry,
        &mut |e| said |= matches!(e, TrainEvent::NoImprovement { .. }),
        &|| false,
    )
    .unwrap();
    assert!(!said);
}
