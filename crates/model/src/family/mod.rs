//! The model families finerank reads, each a module behind one interface, [`Network`]: encoders
//! with a classification head, and decoders that score by their answer tokens (LLM rerankers).
//!
//! A family knows its layers, its classification head, the names its checkpoints give them and
//! which `config.json` keys change its arithmetic. Everything else (loading weights, pooling,
//! saving, devices, precision) is shared and lives outside this module.
mod bert;
mod blocks;
mod deberta;
mod gte;
mod modernbert;
mod mpnet;
mod qwen;

use std::path::Path;

use serde::de::DeserializeOwned;
use tch::{nn, Tensor};

use crate::config::{Config, Kind};
use crate::ModelError;

/// An encoder with, for a cross-encoder, its classification head; or a decoder reranker.
pub(crate) trait Network: Send {
    /// The encoder taken apart for a batch: `ids`, `type_ids`: [batch, len] int64; `mask`:
    /// [batch, len] bool, true on real tokens. Apart, so that training can keep only each
    /// layer's input and recompute the layer (`Model::forward_checkpointed`).
    fn stack<'a>(
        &'a self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Stack<'a>;

    /// What follows the last layer, on its output: ModernBERT's final norm; nothing for most.
    fn finish(&self, last: Tensor) -> Tensor {
        last
    }

    /// One logit per input, [batch], from the last hidden states. Only a network built as a
    /// cross-encoder has a head (a decoder's is its output projection's answer rows).
    fn classify(&self, hidden: &Tensor, mask: &Tensor, train: bool) -> Tensor;

    /// The longest input the position scheme allows, in tokens.
    fn max_tokens(&self) -> usize;
}

/// An encoder's layers over one batch: the embeddings' output, and each layer as a function of
/// its input that holds what every layer reads besides (masks, position tables, relative
/// position embeddings, built once per batch).
pub(crate) struct Stack<'a> {
    /// The first layer's input, [batch, len, hidden].
    pub embedded: Tensor,
    pub layers: usize,
    pub layer: LayerFn<'a>,
}

/// Layer `i` on its input.
pub(crate) type LayerFn<'a> = Box<dyn Fn(usize, &Tensor) -> Tensor + 'a>;

/// The model family, from `config.json`'s `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Bert,
    XlmRoberta,
    ModernBert,
    DebertaV2,
    MpNet,
    Gte,
    /// Read as mixedbread-ai/mxbai-rerank-v2 only, as its `config.json` must say (see `qwen`).
    Qwen2,
    Qwen3,
}

/// What each family's checkpoints call things.
struct Names {
    /// `model_type` values this family reads.
    model_types: &'static [&'static str],
    /// Shown in errors and logs.
    name: &'static str,
    /// The prefix of the encoder's weights inside `*ForSequenceClassification`.
    prefix: &'static str,
    /// `architectures` written for a saved cross-encoder (a decoder reranker's causal LM), and
    /// for a saved bare encoder.
    classifier: &'static str,
    encoder: &'static str,
    /// Scores a pair by its answer tokens' logits at the last token of a prompt: an LLM
    /// reranker, always a cross-encoder, whose head is the checkpoint's own output projection.
    decoder: bool,
    /// The head's tensors, with or without the encoder prefix: a checkpoint may lack them (a
    /// cross-encoder trained from a bi-encoder base starts a fresh head).
    head: &'static [&'static str],
}

const FAMILIES: &[(Family, Names)] = &[
    (
        Family::Bert,
        Names {
            model_types: &["bert"],
            name: "BERT",
            prefix: "bert",
            classifier: "BertForSequenceClassification",
            encoder: "BertModel",
            head: &["classifier.", "pooler."],
            decoder: false,
        },
    ),
    (
        Family::XlmRoberta,
        Names {
            model_types: &["xlm-roberta", "roberta"],
            name: "XLM-RoBERTa",
            prefix: "roberta",
            classifier: "XLMRobertaForSequenceClassification",
            encoder: "XLMRobertaModel",
            head: &["classifier."],
            decoder: false,
        },
    ),
    (
        Family::ModernBert,
        Names {
            model_types: &["modernbert"],
            name: "ModernBERT",
            prefix: "model",
            classifier: "ModernBertForSequenceClassification",
            encoder: "ModernBertModel",
            head: &["head.", "classifier."],
            decoder: false,
        },
    ),
    (
        Family::DebertaV2,
        Names {
            model_types: &["deberta-v2"],
            name: "DeBERTa-v2",
            prefix: "deberta",
            classifier: "DebertaV2ForSequenceClassification",
            encoder: "DebertaV2Model",
            head: &["pooler.", "classifier."],
            decoder: false,
        },
    ),
    (
        Family::MpNet,
        Names {
            model_types: &["mpnet"],
            name: "MPNet",
            prefix: "mpnet",
            classifier: "MPNetForSequenceClassification",
            encoder: "MPNetModel",
            head: &["classifier."],
            decoder: false,
        },
    ),
    (
        Family::Gte,
        Names {
            model_types: &["new"],
            name: "GTE",
            prefix: "new",
            classifier: "NewForSequenceClassification",
            encoder: "NewModel",
            head: &["classifier.", "pooler."],
            decoder: false,
        },
    ),
    (
        Family::Qwen2,
        Names {
            model_types: &["qwen2"],
            name: "Qwen2",
            prefix: "model",
            classifier: "Qwen2ForCausalLM",
            encoder: "Qwen2Model",
            head: &[],
            decoder: true,
        },
    ),
    (
        Family::Qwen3,
        Names {
            model_types: &["qwen3"],
            name: "Qwen3",
            prefix: "model",
            classifier: "Qwen3ForCausalLM",
            encoder: "Qwen3Model",
            // `lm_head` is not a head a fine-tune may start afresh: it is the language model's.
            head: &[],
            decoder: true,
        },
    ),
];

impl Family {
    fn names(self) -> &'static Names {
        &FAMILIES
            .iter()
            .find(|(f, _)| *f == self)
            .expect("every family is listed")
            .1
    }

    pub(crate) fn of(model_type: &str) -> Result<Family, ModelError> {
        FAMILIES
            .iter()
            .find(|(_, n)| n.model_types.contains(&model_type))
            .map(|(f, _)| *f)
            .ok_or_else(|| {
                let known: Vec<&str> = FAMILIES
                    .iter()
                    .flat_map(|(_, n)| n.model_types.iter().copied())
                    .collect();
                ModelError::Invalid(format!(
                    "model_type {model_type:?} is not supported; finerank reads {}",
                    known.join(", ")
                ))
            })
    }

    pub fn name(self) -> &'static str {
        self.names().name
    }

    /// An LLM reranker: it reads a pair through a prompt and scores it by its answer tokens.
    pub fn is_decoder(self) -> bool {
        self.names().decoder
    }

    /// The prefix Hugging Face puts before the encoder's weights in `*ForSequenceClassification`.
    pub fn prefix(self) -> &'static str {
        self.names().prefix
    }

    pub(crate) fn architecture(self, kind: Kind) -> &'static str {
        match kind {
            Kind::CrossEncoder => self.names().classifier,
            Kind::BiEncoder => self.names().encoder,
        }
    }

    /// Whether a tensor belongs to the classification head.
    pub(crate) fn is_head(self, name: &str) -> bool {
        let bare = name
            .strip_prefix(self.prefix())
            .and_then(|n| n.strip_prefix('.'))
            .unwrap_or(name);
        self.names().head.iter().any(|h| bare.starts_with(h))
    }

    /// The head's modules as PEFT's `modules_to_save` names them (`classifier`, `pooler`).
    pub(crate) fn head_modules(self) -> Vec<String> {
        let names = self.names().head.iter();
        names.map(|h| h.trim_end_matches('.').to_string()).collect()
    }

    /// Checks the family's own `config.json` keys, then builds the network under `root` with
    /// all-zero weights for the checkpoint to be read over. `head` initialises a cross-encoder's
    /// head: zeros when the checkpoint has one, a fresh draw when it does not.
    ///
    /// Each family's `new(root, encoder, cfg, head)` puts its encoder's tensors under `encoder`
    /// and its head's under `root`, named as in the family's Hugging Face checkpoints, reads its
    /// own keys with `cfg.family_keys()`, and refuses a value it does not implement with
    /// [`unsupported`]. A decoder reads its answer tokens from the tokenizer in `dir`.
    pub(crate) fn build(
        self,
        root: &nn::Path,
        cfg: &Config,
        kind: Kind,
        head: nn::LinearConfig,
        dir: &Path,
    ) -> Result<Box<dyn Network>, ModelError> {
        if self.is_decoder() && kind != Kind::CrossEncoder {
            return Err(ModelError::Invalid(format!(
                "{}: a {} reranker scores (query, document) pairs together; it has no \
                 embeddings to load as a bi-encoder",
                cfg.path.display(),
                self.name()
            )));
        }
        let head = (kind == Kind::CrossEncoder).then_some(head);
        // The encoder sits under the family's prefix when a head sits beside it.
        let encoder = match head {
            Some(_) => root / self.prefix(),
            None => root.clone(),
        };
        Ok(match self {
            Family::Bert => Box::new(bert::Bert::new(root, encoder, cfg, false, head)?),
            Family::XlmRoberta => Box::new(bert::Bert::new(root, encoder, cfg, true, head)?),
            Family::ModernBert => Box::new(modernbert::ModernBert::new(root, encoder, cfg, head)?),
            Family::DebertaV2 => Box::new(deberta::Deberta::new(root, encoder, cfg, head)?),
            Family::MpNet => Box::new(mpnet::MpNet::new(root, encoder, cfg, head)?),
            Family::Gte => Box::new(gte::Gte::new(root, encoder, cfg, head)?),
            Family::Qwen2 => Box::new(qwen::Qwen::new(root, encoder, cfg, dir, &qwen::QWEN2)?),
            Family::Qwen3 => Box::new(qwen::Qwen::new(root, encoder, cfg, dir, &qwen::QWEN3)?),
        })
    }
}

impl Config {
    /// The family's own view of `config.json`, an error naming the file when a key is off.
    pub(crate) fn family_keys<T: DeserializeOwned>(&self) -> Result<T, ModelError> {
        serde_json::from_value(serde_json::Value::Object(self.raw.clone()))
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", self.path.display())))
    }
}

/// Every tensor is read from the checkpoint over its initial value, so it starts as zeros: a
/// random initialisation would only cost time and draw from libtorch's generator, which a
/// fine-tune in another thread may hold (see `crate::seeded`).
pub(crate) const ZEROS: nn::LinearConfig = nn::LinearConfig {
    ws_init: nn::Init::Const(0.0),
    bs_init: Some(nn::Init::Const(0.0)),
    bias: true,
};

pub(crate) const EMBEDDING: nn::EmbeddingConfig = nn::EmbeddingConfig {
    sparse: false,
    scale_grad_by_freq: false,
    ws_init: nn::Init::Const(0.0),
    padding_idx: -1,
};

/// A layer norm over the last dimension. tch's always has a bias; some families' do not.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn new(p: nn::Path, size: i64, eps: f64, bias: bool) -> LayerNorm {
        LayerNorm {
            weight: p.var("weight", &[size], nn::Init::Const(1.0)),
            bias: bias.then(|| p.var("bias", &[size], nn::Init::Const(0.0))),
            eps,
        }
    }
}

impl nn::Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let shape = [*self.weight.size().last().expect("a norm has a size")];
        xs.layer_norm(
            shape,
            Some(&self.weight),
            self.bias.as_ref(),
            self.eps,
            true,
        )
    }
}

/// Refuses an activation other than exact (erf) GELU, the only one most families implement.
pub(crate) fn exact_gelu(cfg: &Config, key: &str, value: &str) -> Result<(), ModelError> {
    match value {
        "gelu" => Ok(()),
        other => Err(unsupported(
            cfg,
            key,
            format!("{other:?}"),
            "exact GELU (\"gelu\") only",
        )),
    }
}

/// `config.json` defaults that several families share, as transformers' configs have them.
pub(crate) mod defaults {
    pub fn one() -> i64 {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn gelu() -> String {
        "gelu".into()
    }
    pub fn dropout() -> f64 {
        0.1
    }
    pub fn eps_1e12() -> f64 {
        1e-12
    }
}

/// An error for a `config.json` value finerank does not implement, naming the key, the value
/// and what is supported.
pub(crate) fn unsupported(
    cfg: &Config,
    key: &str,
    value: impl std::fmt::Display,
    supported: &str,
) -> ModelError {
    ModelError::Invalid(format!(
        "{}: {key} {value} is not supported: finerank implements {supported}",
        cfg.path.display()
    ))
}
