//! Resuming an interrupted run from its last validation.
//!
//! A run given a [`Resume`] saves its state into `Resume::dir` at each validation that does not
//! end it: `state.json` (the step, the epoch's data order, the ChaCha8 generator, the base's and
//! the kept checkpoint's metrics, patience, each parameter's AdamW step count, and what the run
//! is) and the safetensors it names, `weights-<step>.safetensors` for the weights at a step (the
//! current ones and the kept checkpoint's) and `optimizer-<step>.safetensors` for the AdamW
//! moments. Every file is written under a temporary name and renamed, `state.json` last, so a
//! crash at any point leaves the previous state whole; the files the new `state.json` no longer
//! names go after it. libtorch's generator (dropout) needs no saving: each step seeds it afresh.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{nn, Device, Tensor};

use crate::adamw::AdamW;
use crate::loop_::{restore, Progress, Weights};
use crate::FinetuneConfig;

/// The file that makes a saved state whole: written last, it names every other file.
pub(crate) const STATE: &str = "state.json";

/// Where a run keeps its resume state, and what makes a later run the same one.
#[derive(Clone, Debug)]
pub struct Resume {
    pub dir: PathBuf,
    /// A JSON object of what must not change between an interrupted run and its continuation
    /// besides the training configuration, which is checked as well: the base model and the
    /// data. `run_job` puts their names and sha256 here.
    pub identity: Value,
}

#[derive(Serialize, Deserialize)]
struct State {
    identity: Value,
    config: Value,
    progress: Progress,
    optimizer_steps: BTreeMap<String, u64>,
    /// The files of the current weights, of the kept checkpoint's and of the AdamW moments.
    weights: String,
    best_weights: String,
    moments: String,
}

impl State {
    fn files(&self) -> [&str; 3] {
        [&self.weights, &self.best_weights, &self.moments]
    }
}

fn weights_file(step: usize) -> String {
    format!("weights-{step}.safetensors")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// The step the run saved in `dir` continues from, or `None` when there is nothing to resume.
pub fn resume_step(dir: &Path) -> Result<Option<usize>, String> {
    Ok(read_state(dir)?.map(|s| s.progress.step))
}

/// The step of a saved `state.json`, read from its bytes (`what` names it in an error).
pub(crate) fn step_of(text: &[u8], what: &str) -> Result<usize, String> {
    let state: State = serde_json::from_slice(text)
        .map_err(|e| format!("{what}: unreadable resume state ({e})"))?;
    Ok(state.progress.step)
}

/// The files besides `state.json` that the state saved in `dir` needs, or `None` when nothing is
/// saved there.
pub(crate) fn saved_files(dir: &Path) -> Result<Option<Vec<String>>, String> {
    Ok(read_state(dir)?.map(|state| {
        let mut files: Vec<String> = state.files().map(str::to_string).into();
        files.sort();
        files.dedup();
        files
    }))
}

fn read_state(dir: &Path) -> Result<Option<State>, String> {
    let path = dir.join(STATE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{}: unreadable resume state ({e}); delete {} to start the run over",
            path.display(),
            dir.display()
        )
    })
}

/// `value` as it reads back from JSON, where a float may come back a unit in the last place
/// away: the run's identity is compared after the same round trip the saved one made.
fn read_back(value: &impl Serialize) -> Value {
    let text = serde_json::to_string(value).expect("identities serialize");
    serde_json::from_str(&text).expect("serde_json reads what it writes")
}

/// The fields in which two JSON objects differ.
fn differences(saved: &Value, now: &Value) -> Vec<String> {
    let fields = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let (a, b) = (fields(saved), fields(now));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

impl State {
    /// What differs between the run that saved this state and the run `resume` and `cfg` make.
    fn differences(&self, resume: &Resume, cfg: &FinetuneConfig) -> Vec<String> {
        let mut differ = differences(&self.identity, &read_back(&resume.identity));
        differ.extend(differences(&self.config, &read_back(cfg)));
        differ
    }
}

/// The fields (base model, data, settings) in which the run saved in `resume.dir` differs from
/// the one `cfg` makes; empty when it is the same run, or nothing is saved.
pub(crate) fn mismatch(resume: &Resume, cfg: &FinetuneConfig) -> Result<Vec<String>, String> {
    Ok(read_state(&resume.dir)?
        .map(|state| state.differences(resume, cfg))
        .unwrap_or_default())
}

pub(crate) fn mismatch_message(dir: &Path, fields: &[String]) -> String {
    format!(
        "{}: the resume state of a different run ({} differ); rerun with the same base model, \
         data and settings, or delete the directory to start over",
        dir.display(),
        fields.join(", ")
    )
}

/// Restores the run saved in `resume.dir` into the model's weights and `opt`, and returns its
/// progress and the kept checkpoint's weights (on the CPU); `None` when there is nothing saved.
pub(crate) fn load(
    resume: &Resume,
    cfg: &FinetuneConfig,
    vs: &nn::VarStore,
    opt: &mut AdamW,
) -> Result<Option<(Progress, Weights)>, String> {
    let dir = &resume.dir;
    let Some(state) = read_state(dir)? else {
        return Ok(None);
    };
    let differ = state.differences(resume, cfg);
    if !differ.is_empty() {
        return Err(mismatch_message(dir, &differ));
    }
    let weights = read_tensors(dir, &state.weights, vs)?;
    let best = read_tensors(dir, &state.best_weights, vs)?;
    let moments = Tensor::read_safetensors(dir.join(&state.moments))
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    opt.restore(moments, &state.optimizer_steps)
        .map_err(|e| format!("{}: {e}", dir.join(&state.moments).display()))?;
    restore(vs, &weights);
    Ok(Some((state.progress, best)))
}

/// Weights from `dir/name`, refused unless they are the model's, tensor for tensor.
fn read_tensors(dir: &Path, name: &str, vs: &nn::VarStore) -> Result<Weights, String> {
    let path = dir.join(name);
    let tensors: Weights = Tensor::read_safetensors(&path)
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let vars = vs.variables();
    let fits = tensors.len() == vars.len()
        && vars
            .iter()
            .all(|(n, v)| tensors.get(n).is_some_and(|t| t.size() == v.size()));
    match fits {
        true => Ok(tensors),
        false => Err(format!("{}: not the weights of this model", path.display())),
    }
}

/// Saves the run at `progress.step`. The previous state stays whole until the new one is.
pub(crate) fn save(
    resume: &Resume,
    cfg: &FinetuneConfig,
    progress: &Progress,
    vs: &nn::VarStore,
    best: &Weights,
    opt: &AdamW,
) -> Result<(), String> {
    let dir = &resume.dir;
    fs::create_dir_all(dir).map_err(io(dir))?;
    // A file the state on disk names is whole; the kept checkpoint's often is one already.
    let previous = read_state(dir)?;
    let weights = weights_file(progress.step);
    let best_weights = weights_file(progress.best.step);
    let moments = format!("optimizer-{}.safetensors", progress.step);
    let current: Weights = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach()))
        .collect();
    write_tensors(dir, &weights, current.iter())?;
    let kept = previous
        .as_ref()
        .is_some_and(|s| s.files().contains(&best_weights.as_str()));
    if best_weights != weights && !kept {
        write_tensors(dir, &best_weights, best.iter())?;
    }
    let (tensors, optimizer_steps) = opt.state();
    write_tensors(dir, &moments, tensors.iter().map(|(n, t)| (n, t)))?;
    let state = State {
        identity: resume.identity.clone(),
        config: serde_json::to_value(cfg).expect("configurations serialize"),
        progress: progress.clone(),
        optimizer_steps,
        weights,
        best_weights,
        moments,
    };
    let text = serde_json::to_vec_pretty(&state).expect("resume states serialize");
    write_file(dir, STATE, |tmp| fs::write(tmp, &text).map_err(io(tmp)))?;
    sync(dir)?;
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name != STATE && !state.files().contains(&name) {
            fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Writes tensors, in name order and on the CPU, as `dir/name`.
fn write_tensors<'a>(
    dir: &Path,
    name: &str,
    tensors: impl Iterator<Item = (&'a String, &'a Tensor)>,
) -> Result<(), String> {
    let mut tensors: Vec<(&String, Tensor)> = tensors
        .map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    write_file(dir, name, |tmp| {
        Tensor::write_safetensors(&tensors, tmp).map_err(|e| e.to_string())
    })
}

/// Writes `dir/name` through `write` to a temporary name, flushed to disk before the rename.
fn write_file(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.tmp"));
    if let Err(e) = write(&tmp).and_then(|()| sync(&tmp)) {
        // A full disk must not keep the part it took.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io(&path))
}

fn sync(path: &Path) -> Result<(), String> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Floats in a resume state as Rust prints them, which parse back bit for bit (serde_json's own
/// parser may land a unit in the last place away): a resumed run must compare validation scores
/// exactly as the uninterrupted one did.
pub(crate) mod exact {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ValidMetrics;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }

    /// Validation metrics the same way, as `[accuracy@1, accuracy@3, MRR@10, nDCG@10]`.
    pub mod metrics {
        use super::*;

        pub fn serialize<S: Serializer>(m: &ValidMetrics, s: S) -> Result<S::Ok, S::Error> {
            [m.accuracy_at_1, m.accuracy_at_3, m.mrr_at_10, m.ndcg_at_10]
                .map(|v| format!("{v:?}"))
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ValidMetrics, D::Error> {
            let [a1, a3, mrr, ndcg] =
                <[String; 4]>::deserialize(d)?.map(|v| v.parse::<f64>().map_err(D::Error::custom));
            Ok(ValidMetrics {
                accuracy_at_1: a1?,
                accuracy_at_3: a3?,
                mrr_at_10: mrr?,
                ndcg_at_10: ndcg?,
            })
        }
    }
}

/// The ChaCha8 generator as its seed, stream and place in the stream, from which it continues
/// exactly where it was.
pub(crate) mod chacha {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Place {
        seed: [u8; 32],
        stream: u64,
        word_pos: u128,
    }

    pub fn serialize<S: Serializer>(rng: &ChaCha8Rng, s: S) -> Result<S::Ok, S::Error> {
        Place {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChaCha8Rng, D::Error> {
        let place = Place::deserialize(d)?;
        let mut rng = ChaCha8Rng::from_seed(place.seed);
        rng.set_stream(place.stream);
        rng.set_word_pos(place.word_pos);
        Ok(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Score(#[serde(with = "exact")] f64);

    /// A tenth of simple fractions, such as a mean MRR of 1/11, come back from serde_json's
    /// default parser a unit in the last place away; through `exact` they come back whole.
    #[test]
    fn exact_floats_come_back_from_json_bit_for_bit() {
        let mrr = 1.0 / 11.0;
        let text = serde_json::to_string(&Score(mrr)).unwrap();
        let back: Score = serde_json::from_str(&text).unwrap();
        assert_eq!(back.0.to_bits(), mrr.to_bits());
    }
}
