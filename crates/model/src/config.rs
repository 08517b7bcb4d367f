//! The parts of a Hugging Face `config.json` that every family shares, and which kind of
//! reranker a checkpoint is.
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

pub use crate::family::Family;
use crate::lora::Lora;
use crate::ModelError;

/// How a model scores a (query, document) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Reads query and document together and outputs one logit, its raw score.
    CrossEncoder,
    /// Embeds query and document apart (its pooling and projections, L2 norm); its raw score is
    /// their cosine.
    BiEncoder,
}

/// The sizes every family's `config.json` has, and the whole file for the family to read its
/// own keys from.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    /// The id padding fills masked positions with; any id in the vocabulary does, and
    /// transformers writes `null` for a decoder that names none.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub pad_token_id: i64,
    #[serde(default)]
    pub num_labels: Option<i64>,
    #[serde(default)]
    pub id2label: Option<serde_json::Map<String, Value>>,
    /// Kept so that a saved config round-trips every field transformers wrote, not only ours.
    #[serde(skip)]
    pub raw: serde_json::Map<String, Value>,
    #[serde(skip)]
    pub path: PathBuf,
    /// The adapters to build on the encoder's projections: from the load options or an adapter
    /// directory, never from `config.json`.
    #[serde(skip)]
    pub lora: Option<Lora>,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or(0))
}

impl Config {
    pub fn read(dir: &Path) -> Result<Config, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let raw: serde_json::Map<String, Value> = serde_json::from_str(&text).map_err(|e| {
            ModelError::Invalid(format!("{}: not valid JSON ({e})", path.display()))
        })?;
        // The family first: an unknown model_type says so, not that a size is missing.
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Family::of(model_type)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        let mut cfg: Config = serde_json::from_value(Value::Object(raw.clone()))
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        cfg.raw = raw;
        cfg.path = path;
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(ModelError::Invalid(format!(
                "{}: hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.path.display(),
                cfg.hidden_size,
                cfg.num_attention_heads
            )));
        }
        Ok(cfg)
    }

    pub fn family(&self) -> Family {
        Family::of(&self.model_type).expect("read checks the family")
    }

    fn labels(&self) -> i64 {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len() as i64))
            .unwrap_or(2)
    }

    /// The checkpoint's own kind: a `*ForSequenceClassification` with one label is a cross-encoder,
    /// a bare encoder is a bi-encoder, and a decoder reranker scores pairs as a cross-encoder.
    pub fn native_kind(&self) -> Result<Kind, ModelError> {
        if self.family().is_decoder() {
            return Ok(Kind::CrossEncoder);
        }
        let classifier = self
            .architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"));
        if !classifier {
            return Ok(Kind::BiEncoder);
        }
        match self.labels() {
            1 => Ok(Kind::CrossEncoder),
            n => Err(ModelError::Invalid(format!(
                "{}: {} has {n} labels; a reranker cross-encoder has num_labels=1",
                self.path.display(),
                self.architectures.join(",")
            ))),
        }
    }

    /// The config to write beside weights saved as `kind`, starting from what the checkpoint had.
    pub fn for_saving(&self, kind: Kind) -> serde_json::Map<String, Value> {
        let mut out = self.raw.clone();
        let arch = self.family().architecture(kind);
        out.insert("architectures".into(), serde_json::json!([arch]));
        if kind == Kind::CrossEncoder && !self.family().is_decoder() {
            out.insert("num_labels".into(), 1.into());
            out.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
            out.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
        }
        out
    }
}
