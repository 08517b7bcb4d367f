//! The training loop itself.
use std::borrow::Borrow;
use std::collections::HashMap;
use std::time::Instant;

use finerank_data::{ranking_tasks, TestRow, TrainRow};
use finerank_engine::{assess, fit_calibration, Calibration, Reranker, ScoreOptions};
use finerank_eval::{summarize, Bootstrap, QueryMetrics};
use finerank_model::{Kind, Recompute, Role};
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
    /// The run's state at `step` is saved in its resume directory, whole.
    Saved {
        step: usize,
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
/// process keep to their own masks. The step's first draw seeds it; the ones after, a
/// bi-encoder's micro-batches (see [`bi_encoder_step`]).
pub(crate) fn step_seeds(seed: u64, step: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Stream 0 is the data's.
    rng.set_stream(1 + step as u64);
    rng
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
    // A fresh run keeps the base's weights until a validation beats them. Their copy is taken
    // before the fit check, which then counts the memory it holds.
    let (resumed, mut best_weights) = match resumed {
        Some((progress, best)) => (Some(progress), best),
        None => (None, snapshot(reranker.model().var_store())),
    };
    crate::fit::check(reranker, train, cfg, &mut opt)?;
    on_event(&TrainEvent::Started {
        kind,
        total_steps: total,
        epochs: cfg.hyper.train_epochs,
        train_rows: train.len(),
        valid_rows: valid.len(),
        device: reranker.model().describe_device(),
        resumed_at: resumed.as_ref().map(|p| p.step),
    });
    let mut progress = match resumed {
        Some(progress) => progress,
        None => {
            let base = evaluate(reranker);
            on_event(&TrainEvent::Eval {
                step: 0,
                epoch: 0,
                metrics: base.clone(),
                best: true,
            });
            Progress {
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
            }
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
        // The forward passes draw the dropout masks, and with gradient checkpointing so do the
        // recomputes in the backward passes: the whole step holds the generator.
        let mut seeds = step_seeds(cfg.seed, progress.step);
        opt.zero_grad();
        let (loss, batch_pairs) = gradients(reranker, &rows, &positives, cfg, &mut seeds);
        let lr = cfg.lr_at(progress.step, total);
        opt.clip_grad_norm(cfg.max_grad_norm);
        opt.step(lr);
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
                on_event(&TrainEvent::Saved { step });
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

/// One step's loss and gradients, left on the model, over `rows` and their relevant passages
/// `positives`, holding libtorch's generator seeded from `seeds`; also the pairs it read.
pub(crate) fn gradients(
    r: &Reranker,
    rows: &[&TrainRow],
    positives: &[&str],
    cfg: &FinetuneConfig,
    seeds: &mut ChaCha8Rng,
) -> (f64, usize) {
    finerank_model::seeded(seeds.next_u64(), || match r.kind() {
        Kind::BiEncoder => bi_encoder_step(r, rows, positives, cfg, seeds),
        Kind::CrossEncoder => cross_encoder_step(r, rows, positives, cfg),
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
/// so other queries' passages serve as extra negatives for free. Leaves the step's gradients
/// on the model and returns its loss and the pairs it read.
///
/// In micro-batches the loss cannot be split by query, since each query's softmax reads every
/// passage, so it runs as GradCache does (Gao et al., 2021): every embedding first without a
/// graph, the loss and its gradients with respect to the embeddings from those, then each
/// micro-batch embedded again with its graph and the embeddings' gradients backpropagated
/// through it. That is the whole batch's gradient, with one micro-batch's graph in memory, for
/// one more forward pass. Each micro-batch reseeds the generator from the step's `seeds` in
/// both passes, so that its second pass draws the dropout masks of its first.
fn bi_encoder_step(
    r: &Reranker,
    rows: &[&TrainRow],
    positives: &[&str],
    cfg: &FinetuneConfig,
    seeds: &mut ChaCha8Rng,
) -> (f64, usize) {
    // Each text after the model's prompt for its role, as scoring reads it.
    let encode = |role, text: &str| r.encode_for(role, text, cfg.max_len).0;
    let queries: Vec<Encoded> = rows
        .iter()
        .map(|row| encode(Role::Query, &row.query))
        .collect();
    // Each query's passages: its relevant one first, then its hard negatives.
    let passages: Vec<Vec<Encoded>> = rows
        .iter()
        .zip(positives)
        .map(|(row, pos)| {
            let negatives = row.hard_negatives.iter().map(|n| encode(Role::Document, n));
            std::iter::once(encode(Role::Document, pos))
                .chain(negatives)
                .collect()
        })
        .collect();
    let mut targets = Vec::new();
    let mut at = 0;
    for group in &passages {
        targets.push(at as i64);
        at += group.len();
    }
    // Pairs the model read: each query once plus every passage.
    let pairs = queries.len() + at;
    let loss = |q: &Tensor, p: &Tensor| {
        let logits = q.matmul(&p.tr()) * cfg.scale;
        logits.cross_entropy_for_logits(&Tensor::from_slice(&targets).to_device(logits.device()))
    };
    let checkpointing = cfg.hyper.gradient_checkpointing;
    let micro = cfg.micro_batch(rows.len());
    let embed = |from: usize, checkpointing: bool| {
        let to = (from + micro).min(rows.len());
        let (q, mut recompute) = forward_sorted(r, &queries[from..to], checkpointing);
        let group: Vec<&Encoded> = passages[from..to].iter().flatten().collect();
        let (p, more) = forward_sorted(r, &group, checkpointing);
        recompute.extend(more);
        (q, p, recompute)
    };
    if micro == rows.len() {
        let (q, p, recompute) = embed(0, checkpointing);
        let loss = loss(&q, &p);
        backward(&loss, recompute);
        return (loss.double_value(&[]), pairs);
    }
    let starts: Vec<(usize, i64)> = (0..rows.len())
        .step_by(micro)
        .map(|from| (from, seeds.next_u64() as i64))
        .collect();
    let (qs, ps): (Vec<Tensor>, Vec<Tensor>) = tch::no_grad(|| {
        starts
            .iter()
            .map(|&(from, seed)| {
                tch::manual_seed(seed);
                let (q, p, _) = embed(from, false);
                (q, p)
            })
            .unzip()
    });
    let (q, p) = (
        Tensor::cat(&qs, 0).set_requires_grad(true),
        Tensor::cat(&ps, 0).set_requires_grad(true),
    );
    let cached = loss(&q, &p);
    cached.backward();
    let (q_grad, p_grad) = (q.grad(), p.grad());
    let mut passages_before = 0;
    for &(from, seed) in &starts {
        tch::manual_seed(seed);
        let (q, p, recompute) = embed(from, checkpointing);
        let (nq, np) = (q.size()[0], p.size()[0]);
        let surrogate = (q * q_grad.narrow(0, from as i64, nq)).sum(tch::Kind::Float)
            + (p * p_grad.narrow(0, passages_before, np)).sum(tch::Kind::Float);
        backward(&surrogate, recompute);
        passages_before += np;
    }
    (cached.double_value(&[]), pairs)
}

/// Listwise softmax cross-entropy over each query's group: relevant passage first, then
/// negatives, averaged over the batch's groups. Leaves the step's gradients on the model and
/// returns its loss and the pairs it read. A group's loss reads its own passages alone, so
/// micro-batches of whole groups, each loss weighted by its share of the groups, give the
/// batch's loss and gradients exactly.
fn cross_encoder_step(
    r: &Reranker,
    rows: &[&TrainRow],
    positives: &[&str],
    cfg: &FinetuneConfig,
) -> (f64, usize) {
    // Each passage's first window, beside as much of the query as fits (at least half the
    // window), as scoring reads it.
    let policy = ChunkPolicy {
        max_chunks: Some(1),
        ..ChunkPolicy::new(cfg.max_len)
    };
    let mut groups = Vec::new();
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
        groups.push(r.pair_inputs(&row.query, &docs, &policy).inputs);
    }
    let (mut total, mut pairs) = (0.0, 0);
    for chunk in groups.chunks(cfg.micro_batch(groups.len())) {
        let inputs: Vec<&Encoded> = chunk.iter().flatten().collect();
        let sizes: Vec<i64> = chunk.iter().map(|g| g.len() as i64).collect();
        let (logits, recompute) = forward_sorted(r, &inputs, cfg.hyper.gradient_checkpointing);
        let losses: Vec<Tensor> = logits
            .split_with_sizes(&sizes, 0)
            .iter()
            .map(|group| -group.log_softmax(0, tch::Kind::Float).get(0))
            .collect();
        let share = chunk.len() as f64 / groups.len() as f64;
        let loss = Tensor::stack(&losses, 0).mean(tch::Kind::Float) * share;
        backward(&loss, recompute);
        total += loss.double_value(&[]);
        pairs += inputs.len();
    }
    (total, pairs)
}

/// Backpropagates `loss`, then through the layers gradient checkpointing left to recompute.
fn backward(loss: &Tensor, recompute: Vec<Recompute>) {
    loss.backward();
    for layers in recompute {
        layers.backward();
    }
}

/// Runs the model over `inputs` in length-sorted sub-batches and returns the outputs in input
/// order, and with `checkpointing` each sub-batch's layers to recompute after the loss's
/// backward. Every input is still scored independently, so the loss is what one padded batch
/// would give, but the compute spent on padding (a third of a random CaseHOLD batch) is not.
fn forward_sorted<'a, E: Borrow<Encoded>>(
    r: &'a Reranker,
    inputs: &[E],
    checkpointing: bool,
) -> (Tensor, Vec<Recompute<'a>>) {
    // Small sub-batches keep a CPU's matmuls efficient and its padding low; a GPU wants big ones.
    let budget = if r.model().device().is_cuda() {
        65_536
    } else {
        2_048
    };
    let lengths: Vec<usize> = inputs.iter().map(|e| e.borrow().len()).collect();
    let mut order = Vec::with_capacity(inputs.len());
    let mut recompute = Vec::new();
    let outputs: Vec<Tensor> = plan_batches(&lengths, budget, usize::MAX)
        .into_iter()
        .map(|batch| {
            let sub: Vec<&Encoded> = batch.iter().map(|&i| inputs[i].borrow()).collect();
            order.extend(batch);
            match checkpointing {
                false => r.model().forward_t(&sub, true),
                true => {
                    let (out, layers) = r.model().forward_checkpointed(&sub, true);
                    recompute.push(layers);
                    out
                }
            }
        })
        .collect();
    let mut position = vec![0i64; order.len()];
    for (at, &i) in order.iter().enumerate() {
        position[i] = at as i64;
    }
    let stacked = Tensor::cat(&outputs, 0);
    let output = stacked.index_select(
        0,
        &Tensor::from_slice(&position).to_device(stacked.device()),
    );
    (output, recompute)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use finerank_model::{DeviceChoice, LoadOptions};

    use super::*;
    use crate::{HyperOverrides, Hyperparameters};

    /// The shared tiny BERT cross-encoder, copied under `dir` with its dropout off (a
    /// micro-batched step draws other masks than a whole one), loaded as `kind`.
    fn without_dropout(kind: Kind, dir: &Path) -> Reranker {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/tiny-bert-cross-encoder");
        for file in std::fs::read_dir(&from).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
        }
        let config = dir.join("config.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        json["hidden_dropout_prob"] = 0.0.into();
        json["attention_probs_dropout_prob"] = 0.0.into();
        std::fs::write(&config, json.to_string()).unwrap();
        let opts = LoadOptions {
            device: DeviceChoice::Cpu,
            kind: Some(kind),
            ..LoadOptions::default()
        };
        finerank_model::seeded(3, || Reranker::load("tiny", dir, &opts)).unwrap()
    }

    fn rows() -> Vec<TrainRow> {
        let text = |q: usize, what: &str| format!("query {q} {what} about contracts and courts");
        (0..5)
            .map(|q| TrainRow {
                query: text(q, "asks"),
                relevant_passages: vec![text(q, "answer")],
                hard_negatives: (0..q % 3 + 1)
                    .map(|n| text(q, &format!("miss {n}")))
                    .collect(),
            })
            .collect()
    }

    /// One step's loss, and its gradients by name, zeroed on the model after.
    fn step(r: &Reranker, micro: usize, checkpointing: bool) -> (f64, Vec<(String, Tensor)>) {
        let overrides = HyperOverrides {
            train_batch_size: Some(5),
            micro_batch_size: Some(micro),
            gradient_checkpointing: Some(checkpointing),
            ..Default::default()
        };
        let hyper = Hyperparameters::defaults(r.kind(), 5)
            .with(&overrides)
            .unwrap();
        let cfg = FinetuneConfig::new(hyper, 5, 32);
        let rows = rows();
        let rows: Vec<&TrainRow> = rows.iter().collect();
        let positives: Vec<&str> = rows
            .iter()
            .map(|r| r.relevant_passages[0].as_str())
            .collect();
        let (loss, _) = gradients(r, &rows, &positives, &cfg, &mut step_seeds(0, 0));
        let mut grads: Vec<(String, Tensor)> = r
            .model()
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, mut t)| {
                let g = t.grad().copy();
                t.zero_grad();
                (n, g)
            })
            .collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        (loss, grads)
    }

    /// Micro-batches of 2 (2 + 2 + 1 queries: unequal shares), alone and with gradient
    /// checkpointing, against the whole batch of 5: the same loss, and every gradient within
    /// 1e-5 of its largest entry.
    #[test]
    fn micro_batches_and_checkpointing_make_the_whole_batch_step() {
        for kind in [Kind::CrossEncoder, Kind::BiEncoder] {
            let tmp = tempfile::tempdir().unwrap();
            let r = without_dropout(kind, tmp.path());
            let (loss, whole) = step(&r, 0, false);
            assert!(whole
                .iter()
                .any(|(_, g)| g.abs().max().double_value(&[]) > 0.0));
            for (micro, checkpointing) in [(2, false), (0, true), (2, true)] {
                let what =
                    format!("{kind:?}, micro-batches of {micro}, checkpointing {checkpointing}");
                let (again, grads) = step(&r, micro, checkpointing);
                assert!(
                    (loss - again).abs() <= 1e-5,
                    "{what}: loss {loss} vs {again}"
                );
                for ((name, w), (_, g)) in whole.iter().zip(&grads) {
                    let scale = w.abs().max().double_value(&[]).max(1.0);
                    let diff = (w - g).abs().max().double_value(&[]);
                    assert!(
                        diff <= 1e-5 * scale,
                        "{what}: gradient of {name} off by {diff}"
                    );
                }
            }
        }
    }
}
