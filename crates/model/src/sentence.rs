//! A bi-encoder's sentence-transformers modules after the transformer: pooling, Dense
//! projections and normalisation (`modules.json`), the prompts it puts before queries and
//! documents (`config_sentence_transformers.json`), and its `max_seq_length`.
//!
//! A module finerank does not implement changes the embedding, so such a bi-encoder is refused
//! rather than scored wrong.
use std::path::Path;

use serde_json::Value;
use tch::nn::{self, Module};
use tch::Tensor;

use crate::ModelError;

/// Which text a bi-encoder embeds: some models put a different prompt before each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Query,
    Document,
}

/// How token states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pooling {
    /// The masked mean over tokens.
    Mean,
    /// The first token's state (the bge family).
    Cls,
}

/// sentence-transformers' `Dense`: a linear layer and an activation.
struct Dense {
    /// The module's folder, where its weights are read from and saved to.
    path: String,
    linear: nn::Linear,
    tanh: bool,
}

pub(crate) struct Modules {
    pooling: Pooling,
    dense: Vec<Dense>,
    query_prompt: String,
    document_prompt: String,
}

/// Where the Dense modules' variables live in the model's VarStore: apart from the encoder's,
/// as each module keeps its weights in its own folder.
pub(crate) const DENSE_ROOT: &str = "sentence_transformers";

impl Modules {
    /// Reads the modules of the bi-encoder in `dir` and builds its Dense layers under
    /// [`DENSE_ROOT`] in `root`, zero-initialised for [`Modules::load_weights`] to read over.
    /// A checkpoint without `modules.json` is a bare encoder: mean pooling, as
    /// sentence-transformers gives one.
    pub(crate) fn read(dir: &Path, root: &nn::Path, hidden: i64) -> Result<Modules, ModelError> {
        let mut modules = Modules {
            pooling: Pooling::Mean,
            dense: Vec::new(),
            query_prompt: String::new(),
            document_prompt: String::new(),
        };
        let path = dir.join("modules.json");
        let listed: Vec<Value> = match path.exists() {
            true => serde_json::from_value(read_json(&path)?)
                .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?,
            false => {
                let pooling = dir.join("1_Pooling/config.json");
                if pooling.exists() {
                    modules.pooling = read_pooling(&pooling)?;
                }
                return Ok(modules);
            }
        };
        let mut width = hidden;
        for module in &listed {
            let ty = module.get("type").and_then(Value::as_str).unwrap_or("");
            let sub = module.get("path").and_then(Value::as_str).unwrap_or("");
            match ty.rsplit('.').next().unwrap_or(ty) {
                "Transformer" | "Normalize" => {}
                "Pooling" => modules.pooling = read_pooling(&dir.join(sub).join("config.json"))?,
                "Dense" => {
                    let dense = read_dense(dir, sub, root, width)?;
                    width = dense.linear.ws.size()[0];
                    modules.dense.push(dense);
                }
                _ => {
                    return Err(ModelError::Invalid(format!(
                        "{}: module {ty:?} is not supported: finerank implements \
                         sentence-transformers' Transformer, Pooling (mean or CLS), Dense and \
                         Normalize modules",
                        path.display()
                    )))
                }
            }
        }
        let st = dir.join("config_sentence_transformers.json");
        if st.exists() {
            (modules.query_prompt, modules.document_prompt) = read_prompts(&st)?;
        }
        Ok(modules)
    }

    /// Reads each Dense module's weights from its own folder.
    pub(crate) fn load_weights(&self, dir: &Path) -> Result<(), ModelError> {
        for dense in &self.dense {
            let path = dir.join(&dense.path).join("model.safetensors");
            if !path.exists() {
                return Err(ModelError::Invalid(format!(
                    "{}: missing; finerank reads a Dense module's weights from safetensors \
                     (re-save the model with sentence-transformers 3 or later)",
                    path.display()
                )));
            }
            let file: Vec<(String, Tensor)> = Tensor::read_safetensors(&path)?;
            let mut vars = vec![("linear.weight", &dense.linear.ws)];
            vars.extend(dense.linear.bs.as_ref().map(|b| ("linear.bias", b)));
            for (name, var) in vars {
                let src = file.iter().find(|(n, _)| n == name).map(|(_, t)| t);
                match src {
                    Some(src) if src.size() == var.size() => tch::no_grad(|| {
                        var.shallow_clone()
                            .copy_(&src.to_kind(var.kind()).to_device(var.device()))
                    }),
                    _ => {
                        return Err(ModelError::Invalid(format!(
                            "{}: tensor {name} is missing or not of shape {:?}",
                            path.display(),
                            var.size()
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes each Dense module's weights into its folder under `dir`, in `dtype`.
    pub(crate) fn save_weights(&self, dir: &Path, dtype: tch::Kind) -> Result<(), ModelError> {
        for dense in &self.dense {
            let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).to_kind(dtype);
            let mut tensors = vec![("linear.weight".to_string(), cpu(&dense.linear.ws))];
            tensors.extend(
                dense
                    .linear
                    .bs
                    .as_ref()
                    .map(|b| ("linear.bias".into(), cpu(b))),
            );
            let folder = dir.join(&dense.path);
            std::fs::create_dir_all(&folder).map_err(|e| ModelError::io(&folder, e))?;
            Tensor::write_safetensors(&tensors, folder.join("model.safetensors"))?;
        }
        Ok(())
    }

    /// One unit-length vector per input from the encoder's last states, [batch, dim].
    pub(crate) fn embed(&self, hidden: &Tensor, mask: &Tensor) -> Tensor {
        let mut x = match self.pooling {
            Pooling::Mean => {
                let m = mask.to_kind(hidden.kind()).unsqueeze(-1);
                let summed = (hidden * &m).sum_dim_intlist(1, false, None);
                summed / m.sum_dim_intlist(1, false, None).clamp_min(1e-9)
            }
            Pooling::Cls => hidden.select(1, 0),
        };
        for dense in &self.dense {
            x = dense.linear.forward(&x);
            if dense.tanh {
                x = x.tanh();
            }
        }
        // Scores are cosines, so the vector is normalised whether or not the model lists
        // Normalize: the score is the same either way.
        let norm = x.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
        x / norm
    }

    pub(crate) fn prompt(&self, role: Role) -> &str {
        match role {
            Role::Query => &self.query_prompt,
            Role::Document => &self.document_prompt,
        }
    }
}

/// The folders of the sentence-transformers modules that `dir/modules.json` lists (`1_Pooling`,
/// `2_Dense`, ...), in its order; none when it is absent or unreadable (loading the model
/// reports that). What travels with a bi-encoder beside its weights.
pub fn module_folders(dir: &Path) -> Vec<String> {
    let Ok(Value::Array(modules)) = read_json(&dir.join("modules.json")) else {
        return Vec::new();
    };
    modules
        .iter()
        .filter_map(|m| m.get("path")?.as_str())
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

pub(crate) fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))
}

/// One pooling mode, the mean or the first token, as sentence-transformers 6 writes it
/// (`"pooling_mode": "mean"`, or a list of one) or as earlier versions did (`pooling_mode_*`
/// flags, one of them on).
fn read_pooling(path: &Path) -> Result<Pooling, ModelError> {
    let v = read_json(path)?;
    let (modes, given): (Vec<String>, String) = match v.get("pooling_mode") {
        Some(mode) => {
            let modes = match mode {
                Value::String(m) => vec![m.clone()],
                Value::Array(ms) => ms
                    .iter()
                    .filter_map(|m| m.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            (modes, format!("\"pooling_mode\": {mode}"))
        }
        None => {
            let on: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, on)| k.starts_with("pooling_mode_") && on.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect();
            let given = format!("{on:?}");
            let modes = on
                .iter()
                .map(|k| match k.as_str() {
                    "pooling_mode_mean_tokens" => "mean".to_string(),
                    "pooling_mode_cls_token" => "cls".to_string(),
                    other => other.to_string(),
                })
                .collect();
            (modes, given)
        }
    };
    let pooling = match modes.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["mean"] => Pooling::Mean,
        ["cls"] => Pooling::Cls,
        _ => {
            return Err(ModelError::Invalid(format!(
                "{}: pooling {given} is not supported: finerank implements one pooling mode, \
                 mean (\"pooling_mode\": \"mean\" or pooling_mode_mean_tokens) or CLS \
                 (\"cls\" or pooling_mode_cls_token), for bi-encoders",
                path.display()
            )))
        }
    };
    // Without the prompt, the mean would skip the prompt's tokens, which finerank does not do.
    if pooling == Pooling::Mean && v.get("include_prompt") == Some(&Value::Bool(false)) {
        return Err(ModelError::Invalid(format!(
            "{}: include_prompt false is not supported: finerank's mean pooling includes the \
             prompt's tokens",
            path.display()
        )));
    }
    Ok(pooling)
}

fn read_dense(dir: &Path, sub: &str, root: &nn::Path, width: i64) -> Result<Dense, ModelError> {
    let path = dir.join(sub).join("config.json");
    let v = read_json(&path)?;
    let field = |k: &str| v.get(k).and_then(Value::as_i64);
    let (Some(inputs), Some(outputs)) = (field("in_features"), field("out_features")) else {
        return Err(ModelError::Invalid(format!(
            "{}: in_features and out_features are required",
            path.display()
        )));
    };
    if inputs != width {
        return Err(ModelError::Invalid(format!(
            "{}: in_features {inputs} does not match the {width} values before it",
            path.display()
        )));
    }
    let activation = v
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("torch.nn.modules.activation.Tanh");
    let tanh = match activation.rsplit('.').next() {
        Some("Tanh") => true,
        Some("Identity") => false,
        _ => {
            return Err(ModelError::Invalid(format!(
                "{}: activation_function {activation:?} is not supported: finerank implements \
                 Tanh and Identity",
                path.display()
            )))
        }
    };
    let bias = v.get("bias").and_then(Value::as_bool).unwrap_or(true);
    let config = nn::LinearConfig {
        bias,
        ..crate::family::ZEROS
    };
    let p = root / DENSE_ROOT / sub.replace('.', "_");
    Ok(Dense {
        path: sub.to_string(),
        linear: nn::linear(&p / "linear", inputs, outputs, config),
        tanh,
    })
}

/// The query and document prompts: `prompts["query"]`, and the first of `document`,
/// `passage` and `corpus` (the names sentence-transformers' `encode_document` tries), each
/// falling back to `default_prompt_name`'s.
fn read_prompts(path: &Path) -> Result<(String, String), ModelError> {
    let v = read_json(path)?;
    let prompts = v.get("prompts").and_then(Value::as_object);
    let named = |name: &str| {
        prompts
            .and_then(|p| p.get(name))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let default = v
        .get("default_prompt_name")
        .and_then(Value::as_str)
        .and_then(named)
        .unwrap_or_default();
    let query = named("query").unwrap_or_else(|| default.clone());
    let document = ["document", "passage", "corpus"]
        .into_iter()
        .find_map(named)
        .unwrap_or(default);
    Ok((query, document))
}

/// The window sentence-transformers reads a bi-encoder's texts with: `max_seq_length` in
/// `sentence_bert_config.json`, or, as sentence-transformers 6 saves it, the tokenizer's
/// `model_max_length` (unless it is transformers' "no limit" sentinel, about 1e30).
pub(crate) fn max_len(dir: &Path) -> Option<usize> {
    let field = |file: &str, key: &str| {
        let v = read_json(&dir.join(file)).ok()?;
        v.get(key)?.as_u64().map(|n| n as usize)
    };
    field("sentence_bert_config.json", "max_seq_length")
        .or_else(|| field("tokenizer_config.json", "model_max_length"))
}
