//! Fine-tuning end to end on small data: the loss falls, the run repeats exactly with the same
//! seed (whatever runs beside it: the tests here run in parallel), an interrupted run resumes
//! to the same model, the kept checkpoint is the best one
//! validated, the model lands in the registry whole (or not at all) with its calibration beside
//! it, and Hugging Face's own stacks load it and score as finerank does before calibration.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use finerank_data::{prepare, Mapping, PrepareOptions, Split};
use finerank_engine::{
    resolve, Calibration, DeviceChoice, Group, Kind, LoadOptions, ModelRecord, Precision, Registry,
    Reranker, ScoreOptions, CALIBRATION_FILE,
};
use finerank_train::{
    resume_dir, resume_step, run_job, Export, FinetuneJob, HyperOverrides, JobError, Outcome,
    TrainEvent,
};

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
        base_dtype: Default::default(),
        min_train_queries: Some(8),
        min_valid_queries: Some(8),
        resume_dir: None,
        instruction: None,
        export: Export::Merged,
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

/// Each pair's relevance score and raw score, from the model `id` names.
fn scores(registry: &Registry, id: &str, pairs: &[(&str, &str)]) -> Vec<(f32, f32)> {
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
        .map(|(q, d)| {
            let group = Group {
                query: q,
                documents: vec![d],
            };
            let s = r.score(&[group], &ScoreOptions::default()).remove(0);
            (s.scores[0], s.raw_scores[0])
        })
        .collect()
}

/// Runs `j` to the end and returns its record with every event.
fn train_with_events(j: &FinetuneJob, registry: &Registry) -> (ModelRecord, Vec<TrainEvent>) {
    let mut events = Vec::new();
    let (record, _) = run_job(j, registry, &mut |e| events.push(e.clone()), &|| false).unwrap();
    (record, events)
}

/// Runs `j` to the end and returns its record with the loss of every step.
fn train_with_losses(j: &FinetuneJob, registry: &Registry) -> (ModelRecord, Vec<f64>) {
    let (record, events) = train_with_events(j, registry);
    let losses = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
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

/// The saved model's raw scores are Hugging Face's, and the `calibration.json` beside its weights
/// (which Hugging Face ignores) is the one the run reported and maps them to relevance scores.
fn assert_scores_like_hugging_face_then_calibrated(registry: &Registry, record: &ModelRecord) {
    let (_, dir) = registry.get(&record.id).unwrap().unwrap();
    let kind = match record.kind {
        Kind::CrossEncoder => "cross-encoder",
        Kind::BiEncoder => "bi-encoder",
    };
    let ours = scores(registry, &record.id, &PAIRS);
    let raw: Vec<f32> = ours.iter().map(|s| s.1).collect();
    let theirs = hf_scores(&dir, kind);
    assert_eq!(
        (raw.len(), theirs.len()),
        (PAIRS.len(), PAIRS.len()),
        "finerank {raw:?} vs Hugging Face {theirs:?}"
    );
    for (a, b) in raw.iter().zip(&theirs) {
        assert!(
            (a - b).abs() < 1e-4,
            "finerank {raw:?} vs Hugging Face {theirs:?}"
        );
    }

    assert!(dir.join(CALIBRATION_FILE).is_file(), "no calibration.json");
    let calibration = Calibration::read(&dir, record.kind, false)
        .unwrap()
        .unwrap();
    let outcome: Outcome = serde_json::from_value(record.metrics.clone()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join(CALIBRATION_FILE)).unwrap(),
        serde_json::to_string_pretty(&outcome.calibration.unwrap()).unwrap()
    );
    assert_eq!(outcome.calibration_skipped, None);
    let report = calibration.fitted_on.as_ref().unwrap();
    // 16 validation queries, each with its relevant holding and four wrong ones.
    assert_eq!((report.pairs, report.positives), (80, 16));
    assert!((0.0..=1.0).contains(&report.ece_after), "{report:?}");
    assert!((0.0..=1.0).contains(&report.ece_before), "{report:?}");
    for (score, raw) in ours {
        assert_eq!(score, calibration.score(raw));
    }
}

#[test]
fn transformers_loads_a_fine_tuned_cross_encoder_with_the_same_scores() {
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-3);
    let (record, _) = run_job(&j, &registry, &mut |_| {}, &|| false).unwrap();
    assert_scores_like_hugging_face_then_calibrated(&registry, &record);
}

fn default_model() -> String {
    finerank_engine::DEFAULT_MODEL.to_string()
}

/// The one real-model training test: a few steps on MiniLM lower the loss and write a model that
/// sentence-transformers loads with the same scores.
#[test]
fn minilm_few_steps_lower_the_loss_and_sentence_transformers_agrees() {
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
    assert_scores_like_hugging_face_then_calibrated(&registry, &record);
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

/// A validation set of one class (one query without negatives, and no other query's passages to
/// borrow) cannot be calibrated: the run says why instead of failing, and the model keeps its
/// kind's default mapping.
#[test]
fn a_validation_set_of_one_class_skips_calibration_and_says_why() {
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    let valid = j.valid.clone().unwrap();
    let first = std::fs::read_to_string(&valid).unwrap();
    let mut row: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    row.as_object_mut().unwrap().remove("hard_negatives");
    let lonely = valid.with_file_name("one-query.jsonl");
    std::fs::write(&lonely, format!("{row}\n")).unwrap();
    j.valid = Some(lonely);
    j.min_valid_queries = Some(1);
    j.max_steps = Some(1);
    let (record, _) = run_job(&j, &registry, &mut |_| {}, &|| false).unwrap();
    let outcome: Outcome = serde_json::from_value(record.metrics.clone()).unwrap();
    assert_eq!(outcome.calibration, None);
    let reason = outcome.calibration_skipped.unwrap();
    assert!(reason.contains("non-relevant"), "{reason}");
    let (_, dir) = registry.get(&record.id).unwrap().unwrap();
    assert!(!dir.join(CALIBRATION_FILE).exists());
}

/// Every tensor of the published model `id`, by name.
fn weights(registry: &Registry, id: &str) -> Vec<(String, tch::Tensor)> {
    let (_, dir) = registry.get(id).unwrap().unwrap();
    let mut tensors = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// What a run did at each step and validation after step `after`, without its timings.
fn trace(events: &[TrainEvent], after: usize) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step {
                step,
                epoch,
                loss,
                learning_rate,
                ..
            } if *step > after => Some(format!(
                "step {step} of epoch {epoch}: loss {loss:?} at {learning_rate:?}"
            )),
            TrainEvent::Eval {
                step,
                metrics,
                best,
                ..
            } if *step > after => Some(format!("validation at {step}: {metrics:?}, best {best}")),
            _ => None,
        })
        .collect()
}

/// A run interrupted after step 5 of 12 and started again continues from its last validation
/// (at step 4, in its first epoch): it draws the second epoch's order, the dropout masks and the
/// passages as the uninterrupted run did, with the same optimizer state, so every later step has
/// the same loss and the published model (a checkpoint after the resume) the same weights, bit
/// for bit.
#[test]
fn an_interrupted_run_resumes_to_the_same_model() {
    let (tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-3);
    j.hyper.train_epochs = Some(2);
    j.hyper.early_stopping_patience = Some(0);
    j.eval_every = Some(4);
    let (plain, plain_events) = train_with_events(&j, &registry);

    let id = Registry::new_id();
    j.id = Some(id.clone());
    let dir = resume_dir(&registry, &id).unwrap();
    j.resume_dir = Some(dir.clone());
    let step = std::cell::Cell::new(0);
    let mut on_event = |e: &TrainEvent| {
        if let TrainEvent::Step { step: s, .. } = e {
            step.set(*s)
        }
    };
    let err = run_job(&j, &registry, &mut on_event, &|| step.get() == 5).unwrap_err();
    assert!(
        matches!(err, JobError::Train(ref m) if m == "cancelled"),
        "{err}"
    );
    assert_eq!(resume_step(&dir).unwrap(), Some(4));

    // A restart: the registry is opened afresh, which clears its staging but not this.
    let registry = Registry::open(&tmp.path().join("home")).unwrap();
    let mut other = j.clone();
    other.seed += 1;
    let err = run_job(&other, &registry, &mut |_| {}, &|| false).unwrap_err();
    assert!(
        err.to_string().contains("different run (seed differ)"),
        "{err}"
    );
    assert!(
        matches!(err, JobError::ResumeMismatch { ref fields, .. } if fields == &["seed"]),
        "{err:?}"
    );

    let (resumed, events) = train_with_events(&j, &registry);
    assert_eq!(resumed.id, id);
    assert!(
        !dir.exists(),
        "the resume state outlived the published model"
    );
    assert!(
        matches!(
            events[0],
            TrainEvent::Started {
                resumed_at: Some(4),
                ..
            }
        ),
        "{:?}",
        events[0]
    );
    let outcome =
        |r: &ModelRecord| -> Outcome { serde_json::from_value(r.metrics.clone()).unwrap() };
    let (a, b) = (outcome(&plain), outcome(&resumed));
    assert!(
        a.best_step > 4,
        "the kept checkpoint predates the resume: {}",
        a.best_step
    );
    let (x, y) = (weights(&registry, &plain.id), weights(&registry, &id));
    assert_eq!(x.len(), y.len());
    for ((name, x), (other, y)) in x.iter().zip(&y) {
        assert_eq!(name, other);
        assert!(x.equal(y), "{name} differs after the resume");
    }
    assert_eq!(
        (a.base, a.best, a.best_step, a.steps),
        (b.base, b.best, b.best_step, b.steps)
    );
    // Every step and validation after the resume, as the uninterrupted run had them.
    assert_eq!(trace(&plain_events, 4), trace(&events, 4));
}

/// A LoRA run saved as an adapter, interrupted and resumed, scores as the same run saved merged:
/// the resume state carries the adapters, and the adapter directory loads over its base.
#[test]
fn a_resumed_lora_run_exports_an_adapter_that_scores_as_the_merged_model() {
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.lora_rank = Some(4);
    // A rate at which the tiny random model's best validation comes after the resume.
    j.hyper.learning_rate = Some(3e-2);
    j.hyper.train_epochs = Some(2);
    j.hyper.early_stopping_patience = Some(0);
    j.eval_every = Some(4);
    let (merged, _) = train_with_events(&j, &registry);
    assert_eq!(merged.hyperparameters["lora_rank"], 4);
    let outcome: Outcome = serde_json::from_value(merged.metrics.clone()).unwrap();
    assert!(
        outcome.best_step > 4,
        "kept step {}: before the resume",
        outcome.best_step
    );

    j.export = Export::Adapter;
    let id = Registry::new_id();
    j.id = Some(id.clone());
    j.resume_dir = Some(resume_dir(&registry, &id).unwrap());
    let step = std::cell::Cell::new(0);
    let mut on_event = |e: &TrainEvent| {
        if let TrainEvent::Step { step: s, .. } = e {
            step.set(*s)
        }
    };
    run_job(&j, &registry, &mut on_event, &|| step.get() == 5).unwrap_err();
    let (adapter, events) = train_with_events(&j, &registry);
    assert!(matches!(
        events[0],
        TrainEvent::Started {
            resumed_at: Some(4),
            ..
        }
    ));
    let (_, dir) = registry.get(&adapter.id).unwrap().unwrap();
    assert!(dir.join(finerank_model::ADAPTER_CONFIG).is_file());
    assert!(!dir.join("model.safetensors").exists());

    let pairs = [
        (
            "breach of contract damages",
            "the court awarded expectation damages",
        ),
        ("standing to sue", "a plaintiff must show an injury in fact"),
    ];
    let (a, b) = (
        scores(&registry, &merged.id, &pairs),
        scores(&registry, &id, &pairs),
    );
    for (x, y) in a.iter().zip(&b) {
        assert!((x.1 - y.1).abs() < 1e-5, "raw scores {x:?} vs {y:?}");
        assert!((x.0 - y.0).abs() < 1e-5, "relevance scores {x:?} vs {y:?}");
    }
}

/// The kept checkpoint is the best validation seen, even when its gain is below the
/// early-stopping threshold (here the largest allowed, 0.1), which only governs patience.
#[test]
fn the_kept_checkpoint_is_the_best_validation_whatever_the_threshold() {
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-3);
    j.hyper.train_epochs = Some(2);
    j.hyper.early_stopping_patience = Some(0);
    j.hyper.early_stopping_threshold = Some(0.1);
    j.eval_every = Some(2);
    let mut evals = Vec::new();
    let (record, _) = run_job(
        &j,
        &registry,
        &mut |e| {
            if let TrainEvent::Eval { step, metrics, .. } = e {
                evals.push((*step, metrics.mrr_at_10))
            }
        },
        &|| false,
    )
    .unwrap();
    let outcome: Outcome = serde_json::from_value(record.metrics).unwrap();
    // The first of the highest scores, the base's (step 0) included.
    let kept_by = |gain: f64| {
        evals.iter().fold(
            evals[0],
            |kept, &e| if e.1 > kept.1 + gain { e } else { kept },
        )
    };
    let best = kept_by(0.0);
    assert_ne!(
        best,
        kept_by(0.1),
        "this run cannot tell the rules apart: no checkpoint gained less than 0.1 on the best \
         before it: {evals:?}"
    );
    assert_eq!(
        (outcome.best_step, outcome.best.mrr_at_10),
        best,
        "{evals:?}"
    );
}

/// libtorch's generator is one for the whole process. Two runs side by side, with different
/// seeds, each end with the model its seed makes alone: a run holds the generator while it
/// seeds and draws, so the other's steps cannot reseed it in between.
#[test]
fn runs_side_by_side_each_repeat_their_run_alone() {
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-3);
    j.hyper.train_epochs = Some(3);
    j.hyper.early_stopping_patience = Some(0);
    let (alone, _) = run_job(&j, &registry, &mut |_| {}, &|| false).unwrap();
    let mut other = j.clone();
    other.seed += 1;
    let beside = std::thread::scope(|s| {
        let run = |job: &FinetuneJob| {
            let registry = &registry;
            let job = job.clone();
            s.spawn(move || run_job(&job, registry, &mut |_| {}, &|| false).unwrap().0)
        };
        let (a, b) = (run(&j), run(&other));
        b.join().unwrap();
        a.join().unwrap()
    });
    let (x, y) = (
        weights(&registry, &alone.id),
        weights(&registry, &beside.id),
    );
    assert_eq!(x.len(), y.len());
    for ((name, x), (_, y)) in x.iter().zip(&y) {
        assert!(
            x.equal(y),
            "{name} differs when another run trains beside it"
        );
    }
}

/// `stopped_early` says that patience cut the run short: not when it runs out at the last
/// validation, where the run was over anyway. At a learning rate too small to move any score,
/// every validation after the base's is stale, so patience 1 stops at the first one.
#[test]
fn a_run_stopped_early_is_one_with_steps_left() {
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.hyper.learning_rate = Some(1e-12);
    j.hyper.early_stopping_patience = Some(1);
    j.hyper.early_stopping_threshold = Some(0.1);
    let outcome = |every: usize| -> Outcome {
        let mut j = j.clone();
        j.eval_every = Some(every);
        let (record, _) = run_job(&j, &registry, &mut |_| {}, &|| false).unwrap();
        serde_json::from_value(record.metrics).unwrap()
    };
    // 48 queries in batches of 8: 6 steps.
    let whole = outcome(6);
    assert_eq!((whole.steps, whole.stopped_early), (6, false));
    let cut = outcome(3);
    assert_eq!((cut.steps, cut.stopped_early), (3, true));
}

/// An LLM reranker fine-tunes through its prompt with the job's instruction, and the model it
/// writes is a `Qwen3ForCausalLM` (its `lm_head` trained and kept) that scores by that
/// instruction, kept in `instruction.json`, when a request gives none.
#[test]
fn a_qwen3_reranker_fine_tunes_with_its_instruction_and_keeps_it() {
    let fixture = root().join("crates/model/tests/families/qwen3-reranker");
    let (_tmp, registry, mut j) = setup(&fixture.display().to_string());
    let instruction = "Given a legal context, retrieve the holding it cites";
    j.instruction = Some(instruction.into());
    j.max_len = Some(160);
    j.max_steps = Some(3);
    let (record, losses) = train_with_losses(&j, &registry);
    assert_eq!(record.kind, Kind::CrossEncoder);
    assert!(
        losses.len() == 3 && losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );

    let (name, dir) = resolve(&record.id, &registry).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["architectures"],
        serde_json::json!(["Qwen3ForCausalLM"])
    );
    assert!(config.get("num_labels").is_none());
    let tensors: Vec<String> = weights(&registry, &record.id)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        tensors.contains(&"lm_head.weight".to_string()),
        "{tensors:?}"
    );
    let cpu = LoadOptions {
        device: DeviceChoice::Cpu,
        ..LoadOptions::default()
    };
    let tuned = Reranker::load(&name, &dir, &cpu).unwrap();
    assert_eq!(tuned.instruction(), Some(instruction));

    // A fine-tune of a model that takes no instruction refuses one.
    let (_tmp, registry, mut j) = setup(&tiny_bert());
    j.instruction = Some(instruction.into());
    let Err(err) = run_job(&j, &registry, &mut |_| {}, &|| false) else {
        panic!("a BERT cross-encoder fine-tuned with an instruction");
    };
    assert!(err.to_string().contains("takes no instruction"), "{err}");
}
