//! Cohere's fine-tuning hyperparameters, and the defaults finerank picks when a user sets none.
use finerank_model::Kind;
use serde::{Deserialize, Serialize};

/// The knobs Cohere exposes, under Cohere's names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub train_epochs: usize,
    pub learning_rate: f64,
    pub train_batch_size: usize,
    /// Evaluations in a row without an improvement of at least `early_stopping_threshold`
    /// before training stops; 0 turns early stopping off.
    pub early_stopping_patience: usize,
    pub early_stopping_threshold: f64,
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
    /// Evaluations without improvement before stopping (0: never stop early).
    #[cfg_attr(feature = "clap", arg(long))]
    pub early_stopping_patience: Option<usize>,
    /// Least validation MRR@10 gain that counts as an improvement.
    #[cfg_attr(feature = "clap", arg(long))]
    pub early_stopping_threshold: Option<f64>,
}

impl Hyperparameters {
    /// Defaults by model kind and data size. Small sets get more passes over the data; the
    /// learning rates are the ones that work for MiniLM/BERT-sized encoders (bi-encoders are
    /// more sensitive to a high rate than a fresh cross-encoder head is).
    pub fn defaults(kind: Kind, train_rows: usize) -> Hyperparameters {
        let train_epochs = if train_rows <= 1000 { 4 } else { 2 };
        let (learning_rate, train_batch_size) = match kind {
            Kind::BiEncoder => (2e-5, 16),
            Kind::CrossEncoder => (3e-5, 8),
        };
        Hyperparameters {
            train_epochs,
            learning_rate,
            train_batch_size,
            early_stopping_patience: 3,
            early_stopping_threshold: 0.001,
        }
    }

    pub fn with(mut self, o: &HyperOverrides) -> Result<Hyperparameters, String> {
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
        if !(1..=100).contains(&self.train_epochs) {
            return Err(format!(
                "train_epochs must be 1..=100, got {}",
                self.train_epochs
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 0.1) {
            return Err(format!(
                "learning_rate must be in (0, 0.1], got {}",
                self.learning_rate
            ));
        }
        if !(2..=1024).contains(&self.train_batch_size) {
            return Err(format!(
                "train_batch_size must be 2..=1024, got {}",
                self.train_batch_size
            ));
        }
        if !(self.early_stopping_threshold >= 0.0 && self.early_stopping_threshold <= 0.1) {
            return Err(format!(
                "early_stopping_threshold must be in [0, 0.1], got {}",
                self.early_stopping_threshold
            ));
        }
        Ok(())
    }
}

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
        }
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
