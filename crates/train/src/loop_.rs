//! The training loop itself.
use std::collections::HashMap;
use std::time::Instant;

use finerank_data::{TestRow, TrainRow};
use finerank_engine::{assess, Reranker, ScoreOptions};
use finerank_eval::{summarize, Bootstrap, QueryMetrics};
use finerank_model::Kind;
use finerank_text::{chunk_pairs, plan_batches, ChunkPolicy, Encoded};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Tensor};

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
}

impl Outcome {
    /// Whether some checkpoint beat the base on validation; if not, the kept weights are the base's.
    pub fn improved(&self) -> bool {
        self.best_step > 0
    }
}

/// Candidates a validation query is ranked against when its row has no hard negatives.
const BORROWED_DISTRACTORS: usize = 9;

/// Validation rows as ranking tasks: relevant passages first, then the hard negatives. A row
/// without negatives would rank its relevant passages against nothing, where every model scores
/// MRR@10 = 1 and no checkpoint can beat the base; it is ranked instead against the relevant
/// passages of the next rows (wrapping around), which a model can get wrong.
fn as_test_rows(rows: &[TrainRow]) -> Vec<TestRow> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let borrowed = if r.hard_negatives.is_empty() {
                borrowed_passages(rows, i, BORROWED_DISTRACTORS)
            } else {
                Vec::new()
            };
            TestRow {
                query: r.query.clone(),
                documents: r
                    .relevant_passages
                    .iter()
                    .chain(&r.hard_negatives)
                    .chain(borrowed)
                    .cloned()
                    .collect(),
                gold_indices: (0..r.relevant_passages.len()).collect(),
            }
        })
        .collect()
}

/// Up to `n` distinct relevant passages of the rows after `row`, wrapping around, that are not
/// among `row`'s own relevant passages (two queries may share one).
fn borrowed_passages(rows: &[TrainRow], row: usize, n: usize) -> Vec<&String> {
    let own = &rows[row].relevant_passages;
    let mut borrowed = Vec::with_capacity(n);
    for k in 1..rows.len() {
        if borrowed.len() == n {
            break;
        }
        if let Some(p) = rows[(row + k) % rows.len()].relevant_passages.first() {
            if !own.contains(p) && !borrowed.contains(&p) {
                borrowed.push(p);
            }
        }
    }
    borrowed
}

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect()
    })
}

fn restore(vs: &nn::VarStore, snap: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            var.copy_(&snap[&name]);
        }
    });
}

/// Trains `reranker` in place and leaves it holding the best checkpoint seen on `valid`.
/// `cancelled` is polled between steps.
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
    let valid_rows = as_test_rows(valid);
    let score_opts = ScoreOptions {
        max_len: Some(cfg.max_len),
        ..ScoreOptions::default()
    };
    let evaluate =
        |r: &Reranker| ValidMetrics::of(&assess(r, &valid_rows, &score_opts, &mut |_, _| {}));

    on_event(&TrainEvent::Started {
        kind,
        total_steps: total,
        epochs: cfg.hyper.train_epochs,
        train_rows: train.len(),
        valid_rows: valid.len(),
        device: reranker.model().describe_device(),
    });
    let base = evaluate(reranker);
    on_event(&TrainEvent::Eval {
        step: 0,
        epoch: 0,
        metrics: base.clone(),
        best: true,
    });

    let mut opt = nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(reranker.model().var_store(), cfg.hyper.learning_rate)
    .map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut best = (base.clone(), 0usize, snapshot(reranker.model().var_store()));
    let mut best_seconds = 0.0;
    let mut step_seconds = 0.0;
    let mut since_best = 0;
    let mut stopped_early = false;
    let mut pairs = 0usize;
    let mut step = 0;
    let started = Instant::now();

    'epochs: for epoch in 0..cfg.hyper.train_epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        for batch in order.chunks(bs) {
            if step >= total {
                break 'epochs;
            }
            if cancelled() {
                return Err("cancelled".into());
            }
            let step_started = Instant::now();
            let rows: Vec<&TrainRow> = batch.iter().map(|&i| &train[i]).collect();
            // One relevant passage per query and step; with several, each epoch draws afresh.
            let positives: Vec<&str> = rows
                .iter()
                .map(|r| {
                    r.relevant_passages[rng.random_range(0..r.relevant_passages.len())].as_str()
                })
                .collect();
            let (loss, batch_pairs) = match kind {
                Kind::BiEncoder => bi_encoder_loss(reranker, &rows, &positives, cfg),
                Kind::CrossEncoder => cross_encoder_loss(reranker, &rows, &positives, cfg),
            };
            let lr = cfg.lr_at(step, total);
            opt.set_lr(lr);
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(cfg.max_grad_norm);
            opt.step();
            let loss = loss.double_value(&[]);
            step_seconds += step_started.elapsed().as_secs_f64();
            step += 1;
            pairs += batch_pairs;
            on_event(&TrainEvent::Step {
                step,
                total_steps: total,
                epoch: epoch + 1,
                loss,
                learning_rate: lr,
                pairs_per_second: pairs as f64 / step_seconds,
            });
            if step % cfg.eval_every == 0 || step == total {
                let metrics = evaluate(reranker);
                let improved =
                    metrics.selection() > best.0.selection() + cfg.hyper.early_stopping_threshold;
                on_event(&TrainEvent::Eval {
                    step,
                    epoch: epoch + 1,
                    metrics: metrics.clone(),
                    best: improved,
                });
                if improved {
                    best = (metrics, step, snapshot(reranker.model().var_store()));
                    best_seconds = started.elapsed().as_secs_f64();
                    since_best = 0;
                } else {
                    since_best += 1;
                    if cfg.hyper.early_stopping_patience > 0
                        && since_best >= cfg.hyper.early_stopping_patience
                    {
                        on_event(&TrainEvent::EarlyStop {
                            step,
                            best_step: best.1,
                        });
                        stopped_early = true;
                        break 'epochs;
                    }
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if best.1 == 0 {
        on_event(&TrainEvent::NoImprovement {
            steps: step,
            base_mrr_at_10: base.mrr_at_10,
        });
    }
    restore(reranker.model().var_store(), &best.2);
    Ok(Outcome {
        base,
        best: best.0,
        best_step: best.1,
        steps: step,
        stopped_early,
        train_seconds: seconds,
        best_seconds,
        train_pairs_per_second: pairs as f64 / step_seconds.max(1e-9),
    })
}

/// Multiple-negatives ranking loss: each query's softmax runs over every passage in the batch,
/// so other queries' passages serve as extra negatives for free.
fn bi_encoder_loss(
    r: &Reranker,
    rows: &[&TrainRow],
    positives: &[&str],
    cfg: &FinetuneConfig,
) -> (Tensor, usize) {
    let tok = r.tokenizer();
    let queries: Vec<Encoded> = rows
        .iter()
        .map(|row| tok.encode_single(&row.query, cfg.max_len))
        .collect();
    let mut passages = Vec::new();
    let mut targets = Vec::new();
    for (row, pos) in rows.iter().zip(positives) {
        targets.push(passages.len() as i64);
        passages.push(tok.encode_single(pos, cfg.max_len));
        passages.extend(
            row.hard_negatives
                .iter()
                .map(|n| tok.encode_single(n, cfg.max_len)),
        );
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
        inputs.extend(chunk_pairs(r.tokenizer(), &row.query, &docs, &policy).inputs);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(q: &str, relevant: &[&str], negatives: &[&str]) -> TrainRow {
        TrainRow {
            query: q.into(),
            relevant_passages: relevant.iter().map(|s| s.to_string()).collect(),
            hard_negatives: negatives.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn validation_without_negatives_ranks_against_other_queries_passages() {
        let mut rows: Vec<TrainRow> = (0..12)
            .map(|i| row(&format!("q{i}"), &[&format!("p{i}")], &[]))
            .collect();
        // Two queries sharing one relevant passage: it is never a distractor for either.
        rows[1].relevant_passages = vec!["p0".into()];
        rows.push(row("mined", &["pm"], &["n1", "n2"]));
        let tasks = as_test_rows(&rows);

        assert_eq!(tasks[0].gold_indices, [0]);
        assert_eq!(tasks[0].documents.len(), 1 + BORROWED_DISTRACTORS);
        assert_eq!(tasks[0].documents[0], "p0");
        assert!(!tasks[0].documents[1..].contains(&"p0".to_string()));
        // The last rows wrap around to the first ones.
        assert_eq!(tasks[11].documents[1], "pm");
        let p0 = tasks[11].documents.iter().filter(|d| *d == "p0").count();
        assert_eq!(p0, 1, "a passage two queries share is borrowed once");
        // A row with mined negatives is ranked against those alone.
        assert_eq!(tasks[12].documents, ["pm", "n1", "n2"]);
    }
}
