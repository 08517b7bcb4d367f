//! Reading weights from `model.safetensors` into a model, and writing a model back out as a
//! Hugging Face checkpoint directory that transformers and sentence-transformers load.
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use tch::{nn, Device, Kind as DType, Tensor};

use crate::config::{Family, Kind};
use crate::lora::{self, AdapterConfig, ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX};
use crate::sentence::{module_folders, read_json};
use crate::{Model, ModelError};

/// Files copied verbatim from the source checkpoint: the tokenizer, whatever its flavour.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
];

/// What loading learnt about the checkpoint that saving needs.
pub(crate) struct Loaded {
    /// Tensors the model did not use, kept when the layout is unchanged.
    pub extras: Vec<(String, Tensor)>,
    /// The dtype of the checkpoint's floating-point weights.
    pub dtype: DType,
}

/// Copies the checkpoint's tensors into `vs`, accepting both the bare encoder layout
/// (`embeddings.…`) and the `bert.`/`roberta.`-prefixed one. `native` is the kind the config
/// declares: only a checkpoint that is not already a classifier may get a fresh head.
pub(crate) fn load_weights(
    vs: &nn::VarStore,
    dir: &Path,
    family: Family,
    kind: Kind,
    native: Kind,
) -> Result<Loaded, ModelError> {
    let path = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if !path.exists() && index.exists() {
        return Err(ModelError::Invalid(format!(
            "{}: a sharded checkpoint; finerank reads one model.safetensors. Merge the shards \
             (transformers: from_pretrained(dir).save_pretrained(out, max_shard_size=\"1000GB\"))",
            index.display()
        )));
    }
    if !path.exists() {
        return Err(ModelError::Invalid(format!(
            "{}: missing; finerank reads safetensors checkpoints (convert pytorch_model.bin with \
             transformers' save_pretrained(safe_serialization=True))",
            path.display()
        )));
    }
    let mut file: HashMap<String, Tensor> = Tensor::read_safetensors(&path)?.into_iter().collect();
    let mut fresh = Vec::new();
    let mut dtype = None;
    tch::no_grad(|| -> Result<(), ModelError> {
        for (name, mut var) in vs.variables() {
            // Dense modules keep their weights in their own folders (`Modules::load_weights`),
            // and adapters in theirs, or start fresh.
            if name.starts_with(crate::sentence::DENSE_ROOT) || lora::is_adapter(&name) {
                continue;
            }
            match take(&mut file, family, &name) {
                Some(src) if src.size() == var.size() => {
                    if src.is_floating_point() {
                        dtype.get_or_insert(src.kind());
                    }
                    var.copy_(&src.to_kind(var.kind()).to_device(var.device()));
                }
                Some(src) => {
                    return Err(ModelError::Invalid(format!(
                        "{}: tensor {name} has shape {:?}, config.json implies {:?}",
                        path.display(),
                        src.size(),
                        var.size()
                    )))
                }
                None if kind == Kind::CrossEncoder
                    && family.is_head(&name)
                    && native != Kind::CrossEncoder =>
                {
                    fresh.push(name)
                }
                None if family.is_head(&name) => {
                    return Err(ModelError::Invalid(format!(
                        "{}: tensor {name} is missing, but config.json's architectures say this \
                         is a trained classifier, and a random head would score at random. \
                         Re-save the checkpoint with transformers, or remove `architectures` \
                         from config.json to train a new head on its encoder",
                        path.display()
                    )))
                }
                None => {
                    return Err(ModelError::Invalid(format!(
                        "{}: tensor {name} is missing; is this a {} checkpoint?",
                        path.display(),
                        family.name()
                    )))
                }
            }
        }
        Ok(())
    })?;
    if !fresh.is_empty() {
        fresh.sort();
        tracing::info!(tensors = ?fresh, "initialising a new classification head");
    }
    let mut extras: Vec<(String, Tensor)> = if native == kind {
        file.into_iter().collect()
    } else {
        Vec::new()
    };
    extras.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Loaded {
        extras,
        dtype: dtype.unwrap_or(DType::Float),
    })
}

/// Takes the model's tensor `name` out of a checkpoint's tensors, under its own name or with the
/// family's prefix (`bert.`) added or removed.
pub(crate) fn take(
    file: &mut HashMap<String, Tensor>,
    family: Family,
    name: &str,
) -> Option<Tensor> {
    let prefix = format!("{}.", family.prefix());
    let bare = name.strip_prefix(&prefix).unwrap_or(name);
    [
        name.to_string(),
        bare.to_string(),
        format!("{prefix}{bare}"),
    ]
    .into_iter()
    .find_map(|k| file.remove(&k))
}

/// Whether `model.safetensors` in `dir` holds a tensor `name`, from its header alone (no tensor is
/// read). False when the file cannot be read that way: loading it then says why.
pub(crate) fn has_tensor(dir: &Path, name: &str) -> bool {
    // The format: an 8-byte little-endian length, then that many bytes of JSON keyed by name.
    const MAX_HEADER: u64 = 100 << 20;
    let read = || -> std::io::Result<bool> {
        let mut file = fs::File::open(dir.join("model.safetensors"))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)?;
        let len = u64::from_le_bytes(len);
        if len > MAX_HEADER {
            return Ok(false);
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)?;
        let names: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)?;
        Ok(names.contains_key(name))
    };
    read().unwrap_or(false)
}

/// Makes the encoder tensors of `vs` those of `from`, the same storage, and copies the rest (a
/// cross-encoder's head, which an adapter brings its own of). Adapters and Dense modules are
/// left to their own loading.
pub(crate) fn share_weights(
    vs: &nn::VarStore,
    from: &Model,
    kind: Kind,
) -> Result<Loaded, ModelError> {
    let family = from.config.family();
    let theirs = from.vs.variables();
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if name.starts_with(crate::sentence::DENSE_ROOT) || lora::is_adapter(&name) {
                continue;
            }
            let Some(src) = theirs.get(&name).filter(|t| t.size() == var.size()) else {
                return Err(ModelError::Invalid(format!(
                    "{}: no tensor {name} of this shape to share",
                    from.source.display()
                )));
            };
            match kind == Kind::CrossEncoder && family.is_head(&name) {
                true => var.copy_(src),
                false => var.set_data(src),
            }
        }
        Ok(())
    })?;
    Ok(Loaded {
        extras: from
            .extras
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        dtype: from.dtype,
    })
}

pub(crate) fn save(model: &Model, dest: &Path, max_len: Option<usize>) -> Result<(), ModelError> {
    write_atomically(dest, |dir| {
        let vars = model.vs.variables();
        let originals = crate::base_dtype::originals(model, &vars)?;
        let mut tensors: Vec<(String, Tensor)> = vars
            .iter()
            .filter(|(n, _)| !n.starts_with(crate::sentence::DENSE_ROOT) && !lora::is_adapter(n))
            .map(|(n, t)| {
                let t = merged(model, &vars, n, originals.get(n).unwrap_or(t));
                let t = t.to_device(Device::Cpu).to_kind(model.dtype).contiguous();
                (n.clone(), t)
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors.extend(
            model
                .extras
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone())),
        );
        Tensor::write_safetensors(&tensors, dir.join("model.safetensors"))?;

        let config = model.config.for_saving(model.kind);
        write_json(&dir.join("config.json"), &serde_json::Value::Object(config))?;
        copy_tokenizer(model, dir)?;
        if let Some(modules) = &model.modules {
            write_sentence_transformers(model, dir, max_len.unwrap_or(model.window))?;
            // After the source's module folders are copied: their Dense weights are the old ones.
            modules.save_weights(dir, model.dtype)?;
        }
        Ok(())
    })
}

/// Weight `name`, detached, with its adapter folded in when it has one: `W + (alpha / r) · B A`,
/// in fp32 whatever dtype the model saves in.
fn merged(model: &Model, vars: &HashMap<String, Tensor>, name: &str, weight: &Tensor) -> Tensor {
    let weight = weight.detach();
    let (Some(lora), Some(module)) = (&model.config.lora, name.strip_suffix(".weight")) else {
        return weight;
    };
    let (Some(a), Some(b)) = (
        vars.get(&format!("{module}.lora_A.weight")),
        vars.get(&format!("{module}.lora_B.weight")),
    ) else {
        return weight;
    };
    tch::no_grad(|| {
        let kind = weight.kind();
        let update = b.to_kind(DType::Float).matmul(&a.to_kind(DType::Float)) * lora.scale();
        (weight.to_kind(DType::Float) + update).to_kind(kind)
    })
}

pub(crate) fn save_adapter(model: &Model, dest: &Path) -> Result<(), ModelError> {
    let Some(lora) = &model.config.lora else {
        return Err(ModelError::Invalid(
            "the model has no LoRA adapters to save; save the whole model instead".into(),
        ));
    };
    // PEFT's layout: the adapters, and a cross-encoder's head (its `modules_to_save`) whole.
    let family = model.config.family();
    let saved =
        |n: &str| lora::is_adapter(n) || (model.kind == Kind::CrossEncoder && family.is_head(n));
    write_atomically(dest, |dir| {
        let mut tensors: Vec<(String, Tensor)> = model
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| saved(n))
            .map(|(n, t)| {
                let t = t.detach().to_device(Device::Cpu).contiguous();
                (format!("{PEFT_PREFIX}{n}"), t)
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&tensors, dir.join(ADAPTER_WEIGHTS))?;
        let base = model
            .source
            .canonicalize()
            .map_err(|e| ModelError::io(&model.source, e))?;
        let config = AdapterConfig::new(
            &base,
            model.kind,
            family.is_decoder(),
            lora,
            lora::adapted_modules(&model.vs),
            family.head_modules(),
        );
        let config = serde_json::to_value(&config).expect("adapter configs serialize");
        write_json(&dir.join(ADAPTER_CONFIG), &config)?;
        copy_tokenizer(model, dir)
    })
}

/// Writes a directory at `dest` through `write`, atomically: everything goes to a temporary
/// sibling that is renamed into place, so `dest` is whole or absent.
fn write_atomically(
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    if dest.exists() {
        return Err(ModelError::Invalid(format!(
            "{}: already exists; refusing to overwrite",
            dest.display()
        )));
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    // A temp dir is private (0700); the finished model gets the usual mode, less the umask.
    let tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir_in(parent)
        .map_err(|e| ModelError::io(parent, e))?;
    let dir = tmp.path();
    write(dir)?;
    sync_dir(dir)?;
    fs::rename(dir, dest).map_err(|e| ModelError::io(dest, e))?;
    sync_dir(parent)
}

fn copy_tokenizer(model: &Model, dir: &Path) -> Result<(), ModelError> {
    for name in TOKENIZER_FILES {
        let src = model.source.join(name);
        if src.exists() {
            fs::copy(&src, dir.join(name)).map_err(|e| ModelError::io(&src, e))?;
        }
    }
    Ok(())
}

/// The sentence-transformers module files. A source that had them keeps its own (they passed
/// `Modules::read` when it loaded), with the new `max_seq_length`; a bare encoder gets
/// Transformer → mean Pooling → Normalize.
fn write_sentence_transformers(
    model: &Model,
    dir: &Path,
    max_len: usize,
) -> Result<(), ModelError> {
    let source_modules = model.source.join("modules.json");
    if source_modules.exists() {
        return copy_sentence_transformers(&model.source, dir, max_len);
    }
    let modules = serde_json::json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    write_json(&dir.join("modules.json"), &modules)?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &serde_json::json!({"max_seq_length": max_len, "do_lower_case": false}),
    )?;
    let pooling = dir.join("1_Pooling");
    fs::create_dir_all(&pooling).map_err(|e| ModelError::io(&pooling, e))?;
    write_json(
        &pooling.join("config.json"),
        &serde_json::json!({
            "word_embedding_dimension": model.config.hidden_size,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false
        }),
    )?;
    let normalize = dir.join("2_Normalize");
    fs::create_dir_all(&normalize).map_err(|e| ModelError::io(&normalize, e))
}

fn copy_sentence_transformers(src: &Path, dir: &Path, max_len: usize) -> Result<(), ModelError> {
    // The source's modules.json passed `Modules::read` when it loaded.
    for sub in module_folders(src) {
        let (from, to) = (src.join(&sub), dir.join(&sub));
        fs::create_dir_all(&to).map_err(|e| ModelError::io(&to, e))?;
        // Normalize has no files, and some checkpoints ship without its empty folder.
        if !from.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&from).map_err(|e| ModelError::io(&from, e))? {
            let path = entry.map_err(|e| ModelError::io(&from, e))?.path();
            if path.is_file() {
                let dest = to.join(path.file_name().expect("a file has a name"));
                fs::copy(&path, &dest).map_err(|e| ModelError::io(&path, e))?;
            }
        }
    }
    for name in ["modules.json", "config_sentence_transformers.json"] {
        let path = src.join(name);
        if path.exists() {
            fs::copy(&path, dir.join(name)).map_err(|e| ModelError::io(&path, e))?;
        }
    }
    let bert_config = src.join("sentence_bert_config.json");
    let mut config = match bert_config.exists() {
        true => read_json(&bert_config)?,
        false => serde_json::json!({"do_lower_case": false}),
    };
    let Some(fields) = config.as_object_mut() else {
        return Err(ModelError::Invalid(format!(
            "{}: expected a JSON object",
            bert_config.display()
        )));
    };
    fields.insert("max_seq_length".into(), max_len.into());
    write_json(&dir.join("sentence_bert_config.json"), &config)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ModelError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    fs::write(path, text).map_err(|e| ModelError::io(path, e))
}

/// Flushes every file in `dir` and the directory itself, so a rename after it publishes whole files.
fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    let sync = |p: &Path| {
        fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| ModelError::io(p, e))
    };
    for entry in fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))? {
        let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
        if path.is_file() {
            sync(&path)?;
        }
    }
    sync(dir)
}
