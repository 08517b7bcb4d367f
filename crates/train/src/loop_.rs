//! The training loop itself.
use std::collections::HashMap;
use std::time::Instant;

use finerank_data::{ranking_tasks, TestRow, TrainRow};
use finerank_engine::{assess, fit_calibration, Calibration, Reranker, ScoreOptions};
use finerank_eval::{summarize, Bootstrap, QueryMetrics};
use finerank_model::{Kind, Role};
use finerank_text::{plan_batches, ChunkPolicy, Encoded};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::adamw::AdamW;
use crate::resume::{self, chacha, exact};
use crate::selection::Selection;
use crate::FinetuneConfig;

/// Mean validation metrics at one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidMetrics {
    pub accuracy_at_1: f64,
    pub accuracy_at_3: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
}

impl ValidMetrics {
    fn of(per_query: &[QueryMetrics]) -> ValidMetrics {
        let m = summarize(
            per_query,
            &Bootstrap {
                resamples: 0,
                seed: 0,
            },
        );
        ValidMetrics {
            accuracy_at_1: m.accuracy_at_1.mean,
            accuracy_at_3: m.accuracy_at_3.mean,
            mrr_at_10: m.mrr_at_10.mean,
            ndcg_at_10: m.ndcg_at_10.mean,
        }
    }

    /// The metric that picks the best checkpoint and drives early stopping: MRR@10 moves with
    /// every rank change, so it is steadier on a small validation set than accuracy@1.
    pub fn selection(&self) -> f64 {
        self.mrr_at_10
    }
}

/// What a run reports as it goes; the CLI draws a progress bar from these, the server stores them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Started {
        kind: Kind,
        total_steps: usize,
        epochs: usize,
        train_rows: usize,
        valid_rows: usize,
        device: String,
        /// The step a resumed run continues after; `None` for a run from the start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_at: Option<usize>,
    },
    Step {
        step: usize,
        total_steps: usize,
        epoch: usize,
        loss: f64,
        learning_rate: f64,
        pairs_per_second: f64,
    },
    Eval {
        step: usize,
        epoch: usize,
        metrics: ValidMetrics,
        /// This validation's checkpoint is now the kept one: it scored above every one before.
        best: bool,
    },
    EarlyStop {
        step: usize,
        best_step: usize,
    },
    /// No checkpoint beat the base model on validation: the run ends holding the base's weights.
    NoImprovement {
        steps: usize,
        base_mrr_at_10: f64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub base: ValidMetrics,
    pub best: ValidMetrics,
    pub best_step: usize,
    pub steps: usize,
    pub stopped_early: bool,
    /// Wall time of the whole run, evaluations included.
    pub train_seconds: f64,
    /// Wall time from the start until the kept checkpoint was taken (absent in older records).
    #[serde(default)]
    pub best_seconds: f64,
    /// Pairs read per second of optimizer steps (evaluations left out, as in a plain loop).
    pub train_pairs_per_second: f64,
    /// The kept model's calibration, fitted on the validation tasks, with its expected
    /// calibration error before and after (absent in older records, and when it was skipped).
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Why no calibration was fitted; the model then scores with its kind's default mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_skipped: Option<String>,
}

impl Outcome {
    /// Whether some checkpoint beat the base on validation; if not, the kept weights are the base's.
    pub fn improved(&self) -> bool {
        self.best_step > 0
    }
}

/// Weights by name: a model's, or a copy of them in CPU memory, which a GPU run can spare.
pub(crate) type Weights = HashMap<String, Tensor>;

/// A copy of the model's weights in CPU memory.
fn snapshot(vs: &nn::VarStore) -> Weights {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.to_device_(Device::Cpu, t.kind(), false, true)))
            .collect()
    })
}

/// Copies `weights` (every one of the model's) into the model.
pub(crate) fn restore(vs: &nn::VarStore, weights: &Weights) {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            var.copy_(&weights[&name]);
        }
    });
}

/// The kept checkpoint: its metrics, its step, and when it was taken.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Kept {
    #[serde(with = "exact::metrics")]
    metrics: ValidMetrics,
    pub step: usize,
    /// Wall time from the start of the run.
    seconds: f64,
}

/// Where a run stands between steps, besides its weights and its optimizer: everything that
/// decides what comes next, so that a run resumed from it goes on as the uninterrupted one would.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Steps taken.
    pub step: usize,
    /// The current epoch's order of the training rows.
    order: Vec<usize>,
    /// Draws each epoch's order and each step's relevant passages.
    #[serde(with = "chacha")]
    rng: ChaCha8Rng,
    #[serde(with = "exact::metrics")]
    base: ValidMetrics,
    pub best: Kept,
    selection: Selection,
    /// Pairs read and seconds spent in optimizer steps, for the throughput the outcome reports.
    pairs: usize,
    step_seconds: f64,
    /// Wall time of the run up to its last save, in the processes before this one.
    seconds: f64,
}

/// libtorch's generator (dropout) is seeded afresh at each step from the run's seed and the
/// step: its state cannot be read out to save, and this way a resumed run draws the same masks.
/// Each step holds it while it draws (`finerank_model::seeded`), so runs side by side in one
/// process keep to their own masks.
fn step_seed(seed: u64, step: usize) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Stream 0 is the data's.
    rng.set_stream(1 + step as u64);
    rng.next_u64()
}

/// Trains `reranker` in place and leaves it holding the best checkpoint seen on `valid`.
/// `cancelled` is polled between steps. With `cfg.resume`, the run saves its state at each
/// validation and continues from a state saved there by an interrupted run of the same job.
pub fn finetune(
    reranker: &mut Reranker,
    train: &[TrainRow],
    valid: &[TrainRow],
    cfg: &FinetuneConfig,
    on_event: &mut dyn FnMut(&TrainEvent),
    cancelled: &dyn Fn() -> bool,
) -> Result<Outcome, String> {
    let kind = reranker.kind();
    let total = cfg.total_steps(train.len());
    let bs = cfg.hyper.train_batch_size;
    let steps_per_epoch = train.len().div_ceil(bs);
    let valid_rows = ranking_tasks(valid);
    let score_opts = ScoreOptions {
        max_len: Some(cfg.max_len),
        ..ScoreOptions::default()
    };
    let evaluate = |r: &Reranker| {
        ValidMetrics::of(&assess(r, &valid_rows, &score_opts, &mut |_, _| {}).per_query)
    };

    let mut opt = AdamW::new(reranker.model().var_store(), cfg.weight_decay);
    let resumed = match &cfg.resume {
        Some(r) => resume::load(r, cfg, reranker.model().var_store(), &mut opt)?,
        None => None,
    };
    on_event(&TrainEvent::Started {
        kind,
        total_steps: total,
        epochs: cfg.hyper.train_epochs,
        train_rows: train.len(),
        valid_rows: valid.len(),
        device: reranker.model().describe_device(),
        resumed_at: resumed.as_ref().map(|(p, _)| p.step),
    });
    let (mut progress, mut best_weights) = match resumed {
        Some(resumed) => resumed,
        None => {
            let base = evaluate(reranker);
            on_event(&TrainEvent::Eval {
                step: 0,
                epoch: 0,
                metrics: base.clone(),
                best: true,
            });
            let progress = Progress {
                step: 0,
                order: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(cfg.seed),
                selection: Selection::new(base.selection()),
                best: Kept {
                    metrics: base.clone(),
                    step: 0,
                    seconds: 0.0,
                },
                base,
                pairs: 0,
                step_seconds: 0.0,
                seconds: 0.0,
            };
            (progress, snapshot(reranker.model().var_store()))
        }
    };
    let (before, started) = (progress.seconds, Instant::now());
    let elapsed = || before + started.elapsed().as_secs_f64();
    let mut stopped_early = false;

    while progress.step < total {
        if cancelled() {
            return Err("cancelled".into());
        }
        let step_started = Instant::now();
        let epoch = progress.step / steps_per_epoch;
        let at = progress.step % steps_per_epoch;
        if at == 0 {
            progress.order = (0..train.len()).collect();
            progress.order.shuffle(&mut progress.rng);
        }
        let batch = &progress.order[at * bs..((at + 1) * bs).min(train.len())];
        let rows: Vec<&TrainRow> = batch.iter().map(|&i| &train[i]).collect();
        // One relevant passage per query and step; with several, each epoch draws afresh.
        let positives: Vec<&str> = rows
            .iter()
            .map(|r| {
                let i = progress.rng.random_range(0..r.relevant_passages.len());
                r.relevant_passages[i].as_str()
            })
            .collect();
        // The forward pass draws the dropout masks; the backward pass draws nothing.
        let (loss, batch_pairs) =
            finerank_model::seeded(step_seed(cfg.seed, progress.step), || match kind {
                Kind::BiEncoder => bi_encoder_loss(reranker, &rows, &positives, cfg),
                Kind::CrossEncoder => cross_encoder_loss(reranker, &rows, &positives, cfg),
            });
        let lr = cfg.lr_at(progress.step, total);
        opt.zero_grad();
        loss.backward();
        opt.clip_grad_norm(cfg.max_grad_norm);
        opt.step(lr);
        let loss = loss.double_value(&[]);
        progress.step_seconds += step_started.elapsed().as_secs_f64();
        progress.step += 1;
        progress.pairs += batch_pairs;
        let step = progress.step;
        on_event(&TrainEvent::Step {
            step,
            total_steps: total,
            epoch: epoch + 1,
            loss,
            learning_rate: lr,
            pairs_per_second: progress.pairs as f64 / progress.step_seconds,
        });
        if step % cfg.eval_every == 0 || step == total {
            let metrics = evaluate(reranker);
            let verdict = progress.selection.judge(
                metrics.selection(),
                cfg.hyper.early_stopping_threshold,
                cfg.hyper.early_stopping_patience,
            );
            on_event(&TrainEvent::Eval {
                step,
                epoch: epoch + 1,
                metrics: metrics.clone(),
                best: verdict.best,
            });
            if verdict.best {
                progress.best = Kept {
                    metrics,
                    step,
                    seconds: elapsed(),
                };
                best_weights = snapshot(reranker.model().var_store());
            }
            // Patience running out at the last step stops nothing: the run is over anyway.
            if verdict.stop && step < total {
                on_event(&TrainEvent::EarlyStop {
                    step,
                    best_step: progress.best.step,
                });
                stopped_early = true;
                break;
            }
            if let Some(r) = cfg.resume.as_ref().filter(|_| step < total) {
                progress.seconds = elapsed();
                let vs = reranker.model().var_store();
                resume::save(r, cfg, &progress, vs, &best_weights, &opt)?;
            }
        }
    }
    let seconds = elapsed();
    if progress.best.step == 0 {
        on_event(&TrainEvent::NoImprovement {
            steps: progress.step,
            base_mrr_at_10: progress.base.mrr_at_10,
        });
    }
    restore(reranker.model().var_store(), &best_weights);
    let calibration = calibrate_kept(reranker, &valid_rows, &score_opts);
    Ok(Outcome {
        base: progress.base,
        best: progress.best.metrics,
        best_step: progress.best.step,
        steps: progress.step,
        stopped_early,
        train_seconds: seconds,
        best_seconds: progress.best.seconds,
        train_pairs_per_second: progress.pairs as f64 / progress.step_seconds.max(1e-9),
        calibration_skipped: calibration.as_ref().err().cloned(),
        calibration: calibration.ok(),
    })
}

/// Fits the kept model's calibration on the validation tasks (relevant passages against mined or
/// borrowed negatives), measured against the default mapping, and leaves `reranker` scoring with
/// it; when it cannot be fitted, with the default mapping, which is what the saved model will use.
fn calibrate_kept(
    reranker: &mut Reranker,
    tasks: &[TestRow],
    opts: &ScoreOptions,
) -> Result<Calibration, String> {
    let default = Calibration::default_for(reranker.kind());
    let fitted =
        fit_calibration(reranker, tasks, opts, &default, &mut |_, _| {}).map_err(|e| e.to_string());
    reranker
        .set_calibration(fitted.clone().unwrap_or(default))
        .expect("a calibration fitted for the model's own kind");
    fitted
}

/// Multiple-negatives ranking loss: each query's softmax runs over every passage in the batch,
/// so other queries' passages serve as extra negatives for free.
fn bi_encoder_loss(
    r: &Reranker,
    rows: &[&TrainRow],
    positives: &[&str],
    cfg: &FinetuneConfig,
) -> (Tensor, usize) {
    // Each text after the model's prompt for its role, as scoring reads it.
    let encode = |role, text: &str| r.encode_for(role, text, cfg.max_len).0;
    let queries: Vec<Encoded> = rows
        .iter()
        .map(|row| encode(Role::Query, &row.query))
        .collect();
    let mut passages = Vec::new();
    let mut targets = Vec::new();
    for (row, pos) in rows.iter().zip(positives) {
        targets.push(passages.len() as i64);
        passages.push(encode(Role::Document, pos));
        passages.extend(row.hard_negatives.iter().map(|n| encode(Role::Document, n)));
    }
    let q = forward_sorted(r, &queries);
    let p = forward_sorted(r, &passages);
    let logits = q.matmul(&p.tr()) * cfg.scale;
    let target = Tensor::from_slice(&targets).to_device(logits.device());
    // Pairs the model read: each query once plus every passage.
    (
        logits.cross_entropy_for_logits(&target),
        queries.len() + passages.len(),
    )
}

/// Listwise softmax cross-entropy over each query's group: relevant passage first, then negatives.
fn cross_encoder_loss(
    r: &Reranker,
    rows: &[&TrainRow],
    positives: &[&str],
    cfg: &FinetuneConfig,
) -> (Tensor, usize) {
    // Each passage's first window, beside as much of the query as fits (at least half the
    // window), as scoring reads it.
    let policy = ChunkPolicy {
        max_chunks: Some(1),
        ..ChunkPolicy::new(cfg.max_len)
    };
    let mut inputs = Vec::new();
    let mut sizes = Vec::new();
    for (i, (row, pos)) in rows.iter().zip(positives).enumerate() {
        // A group of one has a softmax of exactly 1 and a loss of exactly 0: a row without hard
        // negatives learns against the other queries' positives in the batch instead.
        let negatives: Vec<&str> = if row.hard_negatives.is_empty() {
            positives
                .iter()
                .enumerate()
                .filter(|&(j, p)| j != i && p != pos)
                .map(|(_, p)| *p)
                .take(cfg.max_negatives)
                .collect()
        } else {
            row.hard_negatives
                .iter()
                .take(cfg.max_negatives)
                .map(String::as_str)
                .collect()
        };
        let docs: Vec<&str> = std::iter::once(*pos).chain(negatives).collect();
        sizes.push(docs.len() as i64);
        inputs.extend(r.pair_inputs(&row.query, &docs, &policy).inputs);
    }
    let logits = forward_sorted(r, &inputs);
    let losses: Vec<Tensor> = logits
        .split_with_sizes(&sizes, 0)
        .iter()
        .map(|group| -group.log_softmax(0, tch::Kind::Float).get(0))
        .collect();
    (
        Tensor::stack(&losses, 0).mean(tch::Kind::Float),
        inputs.len(),
    )
}

/// Runs the model over `inputs` in length-sorted sub-batches and returns the outputs in input
/// order. Every input is still scored independently, so the loss is what one padded batch would
/// give, but the compute spent on padding (a third of a random CaseHOLD batch) is not.
fn forward_sorted(r: &Reranker, inputs: &[Encoded]) -> Tensor {
    // Small sub-batches keep a CPU's matmuls efficient and its padding low; a GPU wants big ones.
    let budget = if r.model().device().is_cuda() {
        65_536
    } else {
        2_048
    };
    let lengths: Vec<usize> = inputs.iter().map(Encoded::len).collect();
    let mut order = Vec::with_capacity(inputs.len());
    let outputs: Vec<Tensor> = plan_batches(&lengths, budget, usize::MAX)
        .into_iter()
        .map(|batch| {
            let sub: Vec<&Encoded> = batch.iter().map(|&i| &inputs[i]).collect();
            order.extend(batch);
            r.model().forward_t(&sub, true)
        })
        .collect();
    let mut position = vec![0i64; order.len()];
    for (at, &i) in order.iter().enumerate() {
        position[i] = at as i64;
    }
    let stacked = Tensor::cat(&outputs, 0);
    stacked.index_select(
        0,
        &Tensor::from_slice(&position).to_device(stacked.device()),
    )
}
