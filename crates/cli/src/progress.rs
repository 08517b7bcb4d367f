//! Progress bars on stderr (indicatif hides them when stderr is not a terminal).
use finerank_train::TrainEvent;
use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: usize, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("template is valid")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// One bar per stage of a multi-stage job (indexing, embedding, scoring, ...): a new stage
/// finishes the last stage's bar and starts its own.
#[derive(Default)]
pub struct StageBars {
    current: Option<(String, ProgressBar)>,
}

impl StageBars {
    pub fn update(&mut self, stage: &str, done: usize, total: usize) {
        if self.current.as_ref().is_none_or(|(s, _)| s != stage) {
            self.finish();
            self.current = Some((stage.to_string(), bar(total, stage)));
        }
        if let Some((_, pb)) = &self.current {
            pb.set_position(done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, pb)) = self.current.take() {
            pb.finish_and_clear();
        }
    }
}

/// Draws a training run: steps with loss and speed, and a line per evaluation.
pub struct TrainProgress {
    bar: Option<ProgressBar>,
    last_metric: Option<f64>,
}

impl TrainProgress {
    pub fn new() -> TrainProgress {
        TrainProgress {
            bar: None,
            last_metric: None,
        }
    }

    pub fn on_event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Started {
                kind,
                total_steps,
                epochs,
                train_rows,
                valid_rows,
                device,
                resumed_at,
            } => {
                eprintln!(
                    "fine-tuning a {kind:?} on {train_rows} queries ({valid_rows} for validation): \
                     {epochs} epoch(s), {total_steps} steps, on {device}"
                );
                let pb = bar(*total_steps, "fine-tune");
                if let Some(step) = resumed_at {
                    eprintln!(
                        "continuing from step {step}, the last validation before the interruption"
                    );
                    pb.set_position(*step as u64);
                }
                self.bar = Some(pb);
            }
            TrainEvent::Step {
                step,
                total_steps,
                loss,
                pairs_per_second,
                epoch,
                ..
            } => {
                let metric = self
                    .last_metric
                    .map_or(String::new(), |m| format!(" val MRR@10 {m:.3}"));
                let msg =
                    format!("epoch {epoch} loss {loss:.3}{metric} {pairs_per_second:.1} pairs/s");
                if let Some(pb) = &self.bar {
                    pb.set_position(*step as u64);
                    pb.set_message(msg.clone());
                }
                // Logs and CI have no terminal to draw on: a line every tenth of the run instead.
                if self.hidden()
                    && (step % total_steps.div_ceil(10).max(1) == 0 || step == total_steps)
                {
                    eprintln!("step {step}/{total_steps}: {msg}");
                }
            }
            TrainEvent::Eval {
                step,
                metrics,
                best,
                ..
            } => {
                self.last_metric = Some(metrics.mrr_at_10);
                let line = format!(
                    "validation at step {step}: acc@1 {:.3} acc@3 {:.3} MRR@10 {:.3} nDCG@10 {:.3}{}",
                    metrics.accuracy_at_1,
                    metrics.accuracy_at_3,
                    metrics.mrr_at_10,
                    metrics.ndcg_at_10,
                    if *best { "  (best so far)" } else { "" }
                );
                self.println(line);
            }
            TrainEvent::EarlyStop { step, best_step } => {
                let line =
                    format!("early stop at step {step}: no improvement since step {best_step}");
                self.println(line);
            }
            TrainEvent::Saved { .. } => {}
            TrainEvent::NoImprovement {
                steps,
                base_mrr_at_10,
            } => self.println(format!(
                "warning: no checkpoint of {steps} steps beat the base model on validation \
                 (base MRR@10 {base_mrr_at_10:.3}); the saved model holds the base's weights"
            )),
        }
    }

    fn hidden(&self) -> bool {
        self.bar.as_ref().is_none_or(|pb| pb.is_hidden())
    }

    fn println(&self, line: String) {
        match &self.bar {
            Some(pb) if !pb.is_hidden() => pb.println(line),
            _ => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}
