//! The fit check: before a run trains, one trial step tells whether it fits in memory, and a run
//! that would not fit fails at once, naming the settings that make it fit, rather than after its
//! base evaluation or hours in, when a long batch comes up.
//!
//! An estimate from the model's shape could not be made to agree with measured peaks (libtorch's
//! caching allocator, autocast's casts and the families' own intermediate tensors all move
//! them), so the check measures instead: it runs the costliest step the data can make, forward
//! and backward through the code the run steps with, and catches libtorch's out-of-memory
//! error. On CUDA that error carries what the device says of its memory; on a CPU, the size of
//! the allocation that failed.
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use finerank_data::TrainRow;
use finerank_engine::Reranker;
use finerank_model::Kind;
use tch::Tensor;

use crate::adamw::AdamW;
use crate::loop_::{gradients, step_seeds};
use crate::FinetuneConfig;

/// What the trial step ran on, for the error.
struct Trial<'a> {
    rows: Vec<&'a TrainRow>,
    positives: Vec<&'a str>,
    /// Inputs the model reads (pairs, or a bi-encoder's texts) and the longest, in tokens.
    inputs: usize,
    longest: usize,
}

/// Runs one trial step on the `train_batch_size` training rows that make the most tokens (each
/// with its longest relevant passage), in the run's micro-batches, costliest first, while
/// holding as much memory as the optimizer's first step will add for its moments. Its
/// gradients are zeroed after; the optimizer, the weights and what the run draws are untouched
/// (each step reseeds libtorch's generator), so the run goes on as it would have without it.
/// An out-of-memory error becomes the error the run fails with; any other failure of the step,
/// too, since the run's first step would meet it.
pub(crate) fn check(
    r: &Reranker,
    train: &[TrainRow],
    cfg: &FinetuneConfig,
    opt: &mut AdamW,
) -> Result<(), String> {
    let trial = costliest(r, train, cfg);
    quiet_trial_panics();
    IN_TRIAL.with(|t| t.set(true));
    let ran = panic::catch_unwind(AssertUnwindSafe(|| {
        let _moments: Vec<Tensor> = opt.first_step_moments();
        let mut seeds = step_seeds(cfg.seed, 0);
        opt.zero_grad();
        gradients(r, &trial.rows, &trial.positives, cfg, &mut seeds);
    }));
    IN_TRIAL.with(|t| t.set(false));
    opt.zero_grad();
    let Err(panic) = ran else {
        return Ok(());
    };
    let message = panic_message(&*panic);
    let said = libtorch_says(&message);
    let out_of_memory = ["out of memory", "can't allocate memory", "bad_alloc"]
        .iter()
        .any(|m| said.contains(m));
    if !out_of_memory {
        return Err(format!("the first step failed: {said}"));
    }
    Err(advice(r, cfg, &trial, said))
}

/// The error of a run that does not fit: what ran out, and each setting that would make it fit
/// that the run does not use already.
fn advice(r: &Reranker, cfg: &FinetuneConfig, trial: &Trial, said: &str) -> String {
    let h = &cfg.hyper;
    let micro = cfg.micro_batch(trial.rows.len());
    let mut fixes = Vec::new();
    if micro > 1 {
        fixes.push(format!(
            "micro-batches of fewer queries (--micro-batch-size, API micro_batch_size; now {micro} \
             at once of a train_batch_size of {}): the step stays the same",
            h.train_batch_size
        ));
    }
    if !h.gradient_checkpointing {
        fixes.push(
            "gradient checkpointing (--gradient-checkpointing, API gradient_checkpointing)".into(),
        );
    }
    if h.lora_rank == 0 {
        fixes.push("LoRA adapters instead of every weight (--lora-rank 16, API lora_rank)".into());
    }
    fixes.push(format!(
        "a shorter max length (--max-length, the server's --train-max-length; now {} tokens)",
        cfg.max_len
    ));
    format!(
        "the fine-tune does not fit in memory on {}: a trial step on its costliest batch ({} \
         queries, {} inputs of up to {} tokens) ran out: {said}. To fit, use {}",
        r.model().describe_device(),
        trial.rows.len(),
        trial.inputs,
        trial.longest,
        fixes.join("; or ")
    )
}

/// The rows of the costliest step: the `train_batch_size` rows whose inputs hold the most
/// tokens (each input cut at the run's max length), costliest first so that the first
/// micro-batch is the largest, each with its longest relevant passage.
fn costliest<'a>(r: &Reranker, train: &'a [TrainRow], cfg: &FinetuneConfig) -> Trial<'a> {
    let count = r.pair_counter();
    let kind = r.kind();
    let tokens = |query: &str, passage: &str| {
        match kind {
            Kind::CrossEncoder => count(query, passage),
            // A bi-encoder reads each text alone.
            Kind::BiEncoder => count(passage, ""),
        }
        .min(cfg.max_len)
    };
    // A cross-encoder reads up to `max_negatives` of a row's hard negatives, a bi-encoder all.
    let negatives = match kind {
        Kind::CrossEncoder => cfg.max_negatives,
        Kind::BiEncoder => usize::MAX,
    };
    let mut costs: Vec<Cost> = train
        .iter()
        .enumerate()
        .map(|(row, data)| {
            let (positive, passage) = data
                .relevant_passages
                .iter()
                .map(|p| (tokens(&data.query, p), p.as_str()))
                .max_by_key(|&(n, _)| n)
                .unwrap_or((0, ""));
            let mut lengths: Vec<usize> = std::iter::once(positive)
                .chain(
                    data.hard_negatives
                        .iter()
                        .take(negatives)
                        .map(|n| tokens(&data.query, n)),
                )
                .collect();
            if kind == Kind::BiEncoder {
                lengths.push(tokens("", &data.query));
            }
            Cost {
                tokens: lengths.iter().sum(),
                row,
                positive: passage,
                inputs: lengths.len(),
                longest: lengths.iter().copied().max().unwrap_or(0),
            }
        })
        .collect();
    // Most tokens first; among equals, the data's order, so that the trial is the same each time.
    costs.sort_by(|a, b| b.tokens.cmp(&a.tokens).then(a.row.cmp(&b.row)));
    costs.truncate(cfg.hyper.train_batch_size.max(1));
    Trial {
        rows: costs.iter().map(|c| &train[c.row]).collect(),
        positives: costs.iter().map(|c| c.positive).collect(),
        inputs: costs.iter().map(|c| c.inputs).sum(),
        longest: costs.iter().map(|c| c.longest).max().unwrap_or(0),
    }
}

/// What one training row costs a step: its inputs' tokens, each cut at the run's max length.
struct Cost<'a> {
    tokens: usize,
    /// The row's index in the training data.
    row: usize,
    /// Its longest relevant passage.
    positive: &'a str,
    inputs: usize,
    longest: usize,
}

/// What a caught panic said: its message, when it has one.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The line of libtorch's error in a panic's message: tch's panics print the error's Debug form,
/// `Torch("…")`, with C++'s stack trace after the first line.
fn libtorch_says(message: &str) -> &str {
    let text = message.split_once("Torch(\"").map_or(message, |(_, t)| t);
    let end = ["\\n", "\n", "\")"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    text[..end].trim()
}

thread_local! {
    /// Whether this thread runs a trial step, whose panics become its run's error.
    static IN_TRIAL: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the panic hook from printing a trial step's panic: it is the run's error, not a crash.
/// Other threads' panics, and this thread's outside a trial, print as before.
fn quiet_trial_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let before = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_TRIAL.with(Cell::get) {
                before(info)
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtorchs_first_line_is_read_out_of_a_tch_panic() {
        let cpu = "called `Result::unwrap()` on an `Err` value: Torch(\"DefaultCPUAllocator: \
                   can't allocate memory: you tried to allocate 4194304 bytes. Error code 12 \
                   (Cannot allocate memory)\\nException raised from alloc_cpu at …\")";
        assert_eq!(
            libtorch_says(cpu),
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4194304 bytes. \
             Error code 12 (Cannot allocate memory)"
        );
        let cuda = "Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total \
                    capacity of 139.8 GiB of which 1.1 GiB is free.\")";
        assert!(libtorch_says(cuda).ends_with("1.1 GiB is free."));
        assert_eq!(libtorch_says("plain"), "plain");
    }
}
