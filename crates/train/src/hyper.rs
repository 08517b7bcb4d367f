//! Cohere's fine-tuning hyperparameters, and the defaults finerank picks when a user sets none.
use finerank_model::{Kind, Lora};
use serde::{Deserialize, Serialize};

use crate::Resume;

/// The knobs Cohere exposes, under Cohere's names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub train_epochs: usize,
    pub learning_rate: f64,
    pub train_batch_size: usize,
    /// Evaluations in a row without a gain of more than `early_stopping_threshold` before
    /// training stops; 0 turns early stopping off.
    pub early_stopping_patience: usize,
    /// The validation MRR@10 gain over the best so far that resets patience. Any gain at all
    /// still makes a checkpoint the kept one.
    pub early_stopping_threshold: f64,
    /// LoRA's rank: with it, only adapters on the encoder's projections (and a cross-encoder's
    /// head) train. 0 trains every weight. The LoRA fields and `frozen_layers` are left out of
    /// the serialized form at their defaults, so a run without them serializes as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lora_rank: usize,
    /// LoRA's update is scaled by `lora_alpha / lora_rank`.
    #[serde(default = "lora_alpha", skip_serializing_if = "is_lora_alpha")]
    pub lora_alpha: f64,
    #[serde(default = "lora_dropout", skip_serializing_if = "is_lora_dropout")]
    pub lora_dropout: f64,
    /// The projections that get adapters, as PEFT's `target_modules` names them; empty for every
    /// attention and feed-forward projection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora_target_modules: Vec<String>,
    /// Without LoRA: the embeddings and this many encoder layers from the bottom stay frozen (as
    /// many as the model has: only the head trains).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frozen_layers: usize,
    /// Queries whose graph is in memory at once: the step still sees `train_batch_size`
    /// queries, its gradients accumulated over micro-batches of this many. 0, or as many as the
    /// batch or more, runs the batch whole. The memory settings are left out of the serialized
    /// form when off, like LoRA's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub micro_batch_size: usize,
    /// Keeps only each encoder layer's input through the forward pass and recomputes the layer
    /// for its gradients: a layer's activations instead of every layer's, for a third more
    /// compute.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
}

/// LoRA's defaults: PEFT's usual alpha of twice a rank of 8, and the encoders' own dropout.
const LORA_ALPHA: f64 = 16.0;
const LORA_DROPOUT: f64 = 0.1;

fn lora_alpha() -> f64 {
    LORA_ALPHA
}
fn lora_dropout() -> f64 {
    LORA_DROPOUT
}
fn is_lora_alpha(v: &f64) -> bool {
    *v == LORA_ALPHA
}
fn is_lora_dropout(v: &f64) -> bool {
    *v == LORA_DROPOUT
}
fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// What the user set; the rest comes from [`Hyperparameters::defaults`]. With the `clap`
/// feature these are also the command line's flags, under Cohere's names.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct HyperOverrides {
    /// Passes over the training data.
    #[cfg_attr(feature = "clap", arg(long))]
    pub train_epochs: Option<usize>,
    /// Peak AdamW learning rate (after warmup).
    #[cfg_attr(feature = "clap", arg(long))]
    pub learning_rate: Option<f64>,
    /// Queries per optimizer step.
    #[cfg_attr(feature = "clap", arg(long))]
    pub train_batch_size: Option<usize>,
    /// Evaluations without a gain above the threshold before stopping (0: never stop early).
    #[cfg_attr(feature = "clap", arg(long))]
    pub early_stopping_patience: Option<usize>,
    /// Validation MRR@10 gain that resets early stopping's patience (any gain picks the checkpoint).
    #[cfg_attr(feature = "clap", arg(long))]
    pub early_stopping_threshold: Option<f64>,
    /// Train LoRA adapters of this rank instead of every weight (0: every weight).
    #[cfg_attr(feature = "clap", arg(long))]
    pub lora_rank: Option<usize>,
    /// LoRA's scaling numerator: updates are scaled by alpha / rank [default: 16].
    #[cfg_attr(feature = "clap", arg(long))]
    pub lora_alpha: Option<f64>,
    /// Dropout on the adapters' input while training [default: 0.1].
    #[cfg_attr(feature = "clap", arg(long))]
    pub lora_dropout: Option<f64>,
    /// Projections to adapt, comma-separated, as PEFT's target_modules name them (a projection
    /// matches a name its path ends with) [default: every attention and feed-forward projection].
    #[cfg_attr(
        feature = "clap",
        arg(long, alias = "lora-targets", value_delimiter = ',')
    )]
    pub lora_target_modules: Option<Vec<String>>,
    /// Full fine-tuning with the embeddings and this many encoder layers from the bottom frozen
    /// (the model's layer count or more: only the head trains).
    #[cfg_attr(feature = "clap", arg(long))]
    pub frozen_layers: Option<usize>,
    /// Queries in memory at once: gradients are accumulated over micro-batches of this many, and
    /// the optimizer still steps once per train_batch_size (0: the whole batch at once).
    #[cfg_attr(feature = "clap", arg(long))]
    pub micro_batch_size: Option<usize>,
    /// Keep only each encoder layer's input in memory and recompute the layer for its gradients
    /// (about a third more compute).
    #[cfg_attr(
        feature = "clap",
        arg(long, num_args = 0..=1, default_missing_value = "true")
    )]
    pub gradient_checkpointing: Option<bool>,
}

impl HyperOverrides {
    /// The adapters a run with these settings trains, if any. Known before the model loads (its
    /// adapters are built with it), which is before the data sets the other defaults: none of
    /// LoRA's own depends on them.
    pub fn lora(&self) -> Option<Lora> {
        let rank = self.lora_rank.filter(|&r| r > 0)?;
        Some(Lora {
            rank: rank as i64,
            alpha: self.lora_alpha.unwrap_or(LORA_ALPHA),
            dropout: self.lora_dropout.unwrap_or(LORA_DROPOUT),
            targets: self.lora_target_modules.clone().unwrap_or_default(),
        })
    }
}

impl Hyperparameters {
    /// Defaults by model kind and data size. Small sets get more passes over the data. A
    /// bi-encoder's rate is twice the usual sentence-transformers 2e-5: a few hundred steps
    /// leave MiniLM under-trained at 2e-5 (held-out CaseHOLD accuracy rose from 2e-5 to 4e-5 to
    /// 6e-5). 4e-5 is the middle of that range; on the 1,846-row split it also scored above 6e-5
    /// on the test rows, a look at test data the README owns up to ("Choosing the learning rate").
    pub fn defaults(kind: Kind, train_rows: usize) -> Hyperparameters {
        let train_epochs = if train_rows <= 1000 { 4 } else { 2 };
        let (learning_rate, train_batch_size) = match kind {
            Kind::BiEncoder => (4e-5, 16),
            Kind::CrossEncoder => (3e-5, 8),
        };
        Hyperparameters {
            train_epochs,
            learning_rate,
            train_batch_size,
            early_stopping_patience: 3,
            early_stopping_threshold: 0.001,
            lora_rank: 0,
            lora_alpha: LORA_ALPHA,
            lora_dropout: LORA_DROPOUT,
            lora_target_modules: Vec::new(),
            frozen_layers: 0,
            micro_batch_size: 0,
            gradient_checkpointing: false,
        }
    }

    /// The defaults with what the user set. LoRA's default learning rate is ten times full
    /// fine-tuning's: the rates the LoRA paper (Hu et al., 2021) tuned for RoBERTa-base on GLUE
    /// are 4e-4 to 5e-4, against 1e-5 to 3e-5 for full fine-tuning; finerank has not measured
    /// its own.
    pub fn with(mut self, o: &HyperOverrides) -> Result<Hyperparameters, String> {
        let lora = o.lora();
        if let Some(lora) = &lora {
            self.learning_rate *= 10.0;
            self.lora_rank = lora.rank as usize;
            self.lora_alpha = lora.alpha;
            self.lora_dropout = lora.dropout;
            self.lora_target_modules = lora.targets.clone();
        } else if o.lora_alpha.is_some()
            || o.lora_dropout.is_some()
            || o.lora_target_modules.is_some()
        {
            return Err(
                "lora_alpha, lora_dropout and lora_target_modules need a lora_rank of at least 1"
                    .into(),
            );
        }
        self.frozen_layers = o.frozen_layers.unwrap_or(self.frozen_layers);
        if lora.is_some() && self.frozen_layers > 0 {
            return Err(
                "frozen_layers is for full fine-tuning; with lora_rank the base model \
                        is frozen whole: set one of them"
                    .into(),
            );
        }
        self.micro_batch_size = o.micro_batch_size.unwrap_or(self.micro_batch_size);
        self.gradient_checkpointing = o
            .gradient_checkpointing
            .unwrap_or(self.gradient_checkpointing);
        self.train_epochs = o.train_epochs.unwrap_or(self.train_epochs);
        self.learning_rate = o.learning_rate.unwrap_or(self.learning_rate);
        self.train_batch_size = o.train_batch_size.unwrap_or(self.train_batch_size);
        self.early_stopping_patience = o
            .early_stopping_patience
            .unwrap_or(self.early_stopping_patience);
        self.early_stopping_threshold = o
            .early_stopping_threshold
            .unwrap_or(self.early_stopping_threshold);
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> Result<(), String> {
        for spec in &HYPERPARAMETERS {
            let value = (spec.value)(self);
            if !spec.allows(value) {
                return Err(format!(
                    "{} must be {}, got {value}",
                    spec.name,
                    spec.range()
                ));
            }
        }
        Ok(())
    }
}

/// One hyperparameter: what it does and the values `Hyperparameters::with` accepts. Forms show
/// these, so the ranges a user reads are the ones training enforces.
pub struct HyperparameterSpec {
    /// Cohere's field name.
    pub name: &'static str,
    pub description: &'static str,
    /// The least value allowed; itself refused when `exclusive_minimum`.
    pub minimum: f64,
    pub exclusive_minimum: bool,
    pub maximum: Option<f64>,
    /// Whole numbers only.
    pub integer: bool,
    /// Reads this hyperparameter's value.
    pub value: fn(&Hyperparameters) -> f64,
}

impl HyperparameterSpec {
    pub fn allows(&self, v: f64) -> bool {
        let above = if self.exclusive_minimum {
            v > self.minimum
        } else {
            v >= self.minimum
        };
        above && self.maximum.is_none_or(|max| v <= max) && (!self.integer || v.fract() == 0.0)
    }

    fn range(&self) -> String {
        let open = if self.exclusive_minimum { "(" } else { "[" };
        match (self.integer, self.maximum) {
            (true, Some(max)) => format!("{}..={max}", self.minimum),
            (true, None) => format!("at least {}", self.minimum),
            (false, Some(max)) => format!("in {open}{}, {max}]", self.minimum),
            (false, None) => format!("in {open}{}, inf)", self.minimum),
        }
    }
}

pub const HYPERPARAMETERS: [HyperparameterSpec; 10] = [
    HyperparameterSpec {
        name: "train_epochs",
        description: "Passes over the training data; small sets need more of them.",
        minimum: 1.0,
        exclusive_minimum: false,
        maximum: Some(100.0),
        integer: true,
        value: |h| h.train_epochs as f64,
    },
    HyperparameterSpec {
        name: "learning_rate",
        description: "Peak AdamW learning rate, reached after a 10% warmup and then decayed to 0.",
        minimum: 0.0,
        exclusive_minimum: true,
        maximum: Some(0.1),
        integer: false,
        value: |h| h.learning_rate,
    },
    HyperparameterSpec {
        name: "train_batch_size",
        description: "Queries per optimizer step; larger batches are steadier but slower per step.",
        minimum: 2.0,
        exclusive_minimum: false,
        maximum: Some(1024.0),
        integer: true,
        value: |h| h.train_batch_size as f64,
    },
    HyperparameterSpec {
        name: "early_stopping_patience",
        description:
            "Evaluations in a row without a gain above the threshold before stopping; 0 never \
             stops early.",
        minimum: 0.0,
        exclusive_minimum: false,
        maximum: None,
        integer: true,
        value: |h| h.early_stopping_patience as f64,
    },
    HyperparameterSpec {
        name: "early_stopping_threshold",
        description: "The gain in validation MRR@10 that resets early stopping's patience; any \
                      gain still makes the checkpoint the kept one.",
        minimum: 0.0,
        exclusive_minimum: false,
        maximum: Some(0.1),
        integer: false,
        value: |h| h.early_stopping_threshold,
    },
    HyperparameterSpec {
        name: "lora_rank",
        description: "Train LoRA adapters of this rank on the encoder's attention and \
                      feed-forward projections (and a cross-encoder's head) instead of every \
                      weight; 0 trains every weight. With LoRA, the default learning rate is \
                      ten times the one shown.",
        minimum: 0.0,
        exclusive_minimum: false,
        maximum: Some(256.0),
        integer: true,
        value: |h| h.lora_rank as f64,
    },
    HyperparameterSpec {
        name: "lora_alpha",
        description: "LoRA's scaling: the adapters' update is scaled by lora_alpha / lora_rank.",
        minimum: 0.0,
        exclusive_minimum: true,
        maximum: Some(1024.0),
        integer: false,
        value: |h| h.lora_alpha,
    },
    HyperparameterSpec {
        name: "lora_dropout",
        description: "Dropout on the LoRA adapters' input while training.",
        minimum: 0.0,
        exclusive_minimum: false,
        maximum: Some(0.9),
        integer: false,
        value: |h| h.lora_dropout,
    },
    HyperparameterSpec {
        name: "frozen_layers",
        description: "Without LoRA: keep the embeddings and this many encoder layers from the \
                      bottom frozen (the model's layer count or more trains the head alone).",
        minimum: 0.0,
        exclusive_minimum: false,
        maximum: None,
        integer: true,
        value: |h| h.frozen_layers as f64,
    },
    HyperparameterSpec {
        name: "micro_batch_size",
        description: "Queries in memory at once: each step's gradients are accumulated over \
                      micro-batches of this many, so a large train_batch_size fits in less \
                      memory at the same result; 0 runs the whole batch at once.",
        minimum: 0.0,
        exclusive_minimum: false,
        maximum: None,
        integer: true,
        value: |h| h.micro_batch_size as f64,
    },
];

/// Everything a training run needs besides its data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub hyper: Hyperparameters,
    pub seed: u64,
    /// Tokens per input: a bi-encoder's query or passage, a cross-encoder's pair.
    pub max_len: usize,
    /// Evaluate every this many steps (at least once per run, and always at the end).
    pub eval_every: usize,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// Temperature of the bi-encoder's contrastive softmax (sentence-transformers' scale).
    pub scale: f64,
    /// Hard negatives used per query and step for a cross-encoder (they multiply its cost).
    pub max_negatives: usize,
    /// Stop after this many steps (quick runs and tests); `None` runs all epochs.
    pub max_steps: Option<usize>,
    /// Where to save the run's state as it goes, and resume it from. Not part of what the run
    /// computes, so not serialized: the serialized configuration is what a resume must match.
    #[serde(skip)]
    pub resume: Option<Resume>,
}

impl FinetuneConfig {
    pub fn new(hyper: Hyperparameters, train_rows: usize, max_len: usize) -> FinetuneConfig {
        let steps = hyper.train_epochs * train_rows.div_ceil(hyper.train_batch_size);
        FinetuneConfig {
            // About four evaluations a run: enough to catch the best point, few enough to be cheap.
            eval_every: steps.div_ceil(hyper.train_epochs.max(4)).max(1),
            hyper,
            seed: 0,
            max_len,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            scale: 20.0,
            max_negatives: 7,
            max_steps: None,
            resume: None,
        }
    }

    /// Queries per micro-batch: `micro_batch_size`, or the whole batch of `rows`.
    pub(crate) fn micro_batch(&self, rows: usize) -> usize {
        match self.hyper.micro_batch_size {
            0 => rows,
            m => m.min(rows),
        }
        .max(1)
    }

    pub fn total_steps(&self, train_rows: usize) -> usize {
        let full = self.hyper.train_epochs * train_rows.div_ceil(self.hyper.train_batch_size);
        self.max_steps.map_or(full, |m| m.min(full))
    }

    /// Linear warmup to the peak rate, then linear decay to zero.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warm = ((total as f64 * self.warmup_ratio) as usize).max(1);
        let up = (step + 1) as f64 / warm as f64;
        let down = total.saturating_sub(step) as f64 / (total.saturating_sub(warm)).max(1) as f64;
        self.hyper.learning_rate * up.min(down.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(name: &str, value: f64) -> bool {
        let mut o = HyperOverrides::default();
        match name {
            "train_epochs" => o.train_epochs = Some(value as usize),
            "learning_rate" => o.learning_rate = Some(value),
            "train_batch_size" => o.train_batch_size = Some(value as usize),
            "early_stopping_patience" => o.early_stopping_patience = Some(value as usize),
            "early_stopping_threshold" => o.early_stopping_threshold = Some(value),
            // LoRA's own settings take a rank.
            "lora_rank" => o.lora_rank = Some(value as usize),
            "lora_alpha" => (o.lora_rank, o.lora_alpha) = (Some(8), Some(value)),
            "lora_dropout" => (o.lora_rank, o.lora_dropout) = (Some(8), Some(value)),
            "frozen_layers" => o.frozen_layers = Some(value as usize),
            "micro_batch_size" => o.micro_batch_size = Some(value as usize),
            other => panic!("no hyperparameter {other}"),
        }
        Hyperparameters::defaults(Kind::CrossEncoder, 0)
            .with(&o)
            .is_ok()
    }

    /// Each bound is accepted (unless exclusive), the next value past it is refused, and every
    /// default is in range.
    #[test]
    fn the_table_is_what_with_enforces() {
        for s in &HYPERPARAMETERS {
            let step = if s.integer { 1.0 } else { 1e-9 };
            assert_eq!(
                accepts(s.name, s.minimum),
                !s.exclusive_minimum,
                "{}",
                s.name
            );
            assert!(accepts(s.name, s.minimum + step), "{}", s.name);
            // An unsigned field cannot go below zero in the first place.
            if s.minimum - step >= 0.0 || !s.integer {
                assert!(!accepts(s.name, s.minimum - step), "{}", s.name);
            }
            match s.maximum {
                Some(max) => {
                    assert!(accepts(s.name, max), "{}", s.name);
                    assert!(!accepts(s.name, max + step), "{}", s.name);
                }
                None => assert!(accepts(s.name, 1e6), "{}", s.name),
            }
            for kind in [Kind::BiEncoder, Kind::CrossEncoder] {
                for rows in [256, 2000] {
                    let defaults = Hyperparameters::defaults(kind, rows);
                    assert!(s.allows((s.value)(&defaults)), "{}", s.name);
                }
            }
        }
    }

    #[test]
    fn errors_name_the_field_and_its_range() {
        let err = Hyperparameters::defaults(Kind::BiEncoder, 256)
            .with(&HyperOverrides {
                learning_rate: Some(0.0),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err, "learning_rate must be in (0, 0.1], got 0");
    }

    #[test]
    fn lora_raises_the_default_rate_and_its_settings_need_a_rank() {
        let defaults = Hyperparameters::defaults(Kind::CrossEncoder, 2000);
        let lora = HyperOverrides {
            lora_rank: Some(16),
            ..Default::default()
        };
        let h = defaults.clone().with(&lora).unwrap();
        assert_eq!((h.lora_rank, h.lora_alpha), (16, 16.0));
        assert!((h.learning_rate - 10.0 * defaults.learning_rate).abs() < 1e-12);
        let set = HyperOverrides {
            learning_rate: Some(1e-4),
            ..lora.clone()
        };
        assert_eq!(defaults.clone().with(&set).unwrap().learning_rate, 1e-4);
        let alpha_alone = HyperOverrides {
            lora_alpha: Some(32.0),
            ..Default::default()
        };
        assert!(defaults
            .clone()
            .with(&alpha_alone)
            .unwrap_err()
            .contains("lora_rank"));
        let both = HyperOverrides {
            frozen_layers: Some(2),
            ..lora
        };
        assert!(defaults.with(&both).unwrap_err().contains("frozen_layers"));
    }

    /// A run without LoRA or frozen layers serializes as runs did before those fields existed,
    /// so resume states saved then still match.
    #[test]
    fn defaults_serialize_as_before() {
        let h = Hyperparameters::defaults(Kind::BiEncoder, 2000);
        let fields: Vec<String> = serde_json::to_value(&h)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(fields.len(), 5, "{fields:?}");
        let back: Hyperparameters =
            serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
