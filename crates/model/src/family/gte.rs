//! Alibaba's GTE "new" architecture (`NewModel`: gte-multilingual-reranker-base and kin): rotary
//! positions, with the fixed NTK scaling their configs ask for; one fused q/k/v projection; a gated
//! (GLU) MLP; post-norm layers; a BERT-style tanh pooler over the first token. Weight names are the
//! Hub's (`new.encoder.layer.N.attention.qkv_proj`, `mlp.up_gate_proj`, `attn_ln`, `mlp_ln`), which
//! the remote code and transformers' `gte` conversion both read, so a saved model keeps them.
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Kind as DType, Tensor};

use super::blocks::{apply_rotary, attention, rotary_tables, split_heads, TokenTypes};
use super::{defaults, exact_gelu, unsupported, LayerNorm, Network, Stack, EMBEDDING, ZEROS};
use crate::config::Config;
use crate::lora::Projection;
use crate::ModelError;

/// The keys of a `NewConfig` beyond the sizes every family has. Defaults are NewConfig's own
/// (Alibaba-NLP/new-impl), which a checkpoint relies on when it leaves a key out.
#[derive(Deserialize)]
struct Keys {
    #[serde(default = "defaults::one")]
    type_vocab_size: i64,
    #[serde(default = "defaults::eps_1e12")]
    layer_norm_eps: f64,
    #[serde(default = "layer_norm")]
    layer_norm_type: String,
    #[serde(default = "defaults::gelu")]
    hidden_act: String,
    #[serde(default = "rope")]
    position_embedding_type: String,
    #[serde(default = "theta")]
    rope_theta: f64,
    #[serde(default)]
    rope_scaling: Option<RopeScaling>,
    #[serde(default = "defaults::yes")]
    pack_qkv: bool,
    #[serde(default)]
    logn_attention_scale: bool,
    #[serde(default = "hidden_dropout")]
    hidden_dropout_prob: f64,
    #[serde(default)]
    attention_probs_dropout_prob: f64,
    #[serde(default)]
    classifier_dropout: Option<f64>,
    // `unpad_inputs` and `use_memory_efficient_attention` only pick xformers kernels for the same
    // arithmetic, so they are not read.
}

/// `rope_scaling`: the remote code reads `type` (a later copy also `rope_type`) and `factor`.
#[derive(Deserialize)]
struct RopeScaling {
    #[serde(rename = "type")]
    kind: Option<String>,
    rope_type: Option<String>,
    factor: f64,
    #[serde(default)]
    mixed_b: Option<serde_json::Value>,
}

fn layer_norm() -> String {
    "layer_norm".into()
}
fn rope() -> String {
    "rope".into()
}
fn theta() -> f64 {
    10000.0
}
fn hidden_dropout() -> f64 {
    0.1
}

pub(super) struct Gte {
    heads: i64,
    max_positions: i64,
    /// The rotary frequencies, [head_size / 2] float32: computed, not a weight.
    inv_freq: Tensor,
    hidden_dropout: f64,
    attention_dropout: f64,
    classifier_dropout: f64,
    word: nn::Embedding,
    /// Absent when `type_vocab_size` is 0 (gte-base-en-v1.5); one row for gte-multilingual.
    token_type: TokenTypes,
    norm: LayerNorm,
    layers: Vec<Layer>,
    head: Option<Head>,
}

struct Layer {
    qkv: Projection,
    o_proj: Projection,
    attn_ln: LayerNorm,
    /// Up then gate, each `intermediate_size` rows, no bias.
    up_gate: Projection,
    down: Projection,
    mlp_ln: LayerNorm,
}

/// NewForSequenceClassification: tanh pooler over the first token, dropout, a linear layer.
struct Head {
    pooler: nn::Linear,
    classifier: nn::Linear,
}

impl Layer {
    fn new(p: nn::Path, cfg: &Config, eps: f64) -> Layer {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let attn = &p / "attention";
        let mlp = &p / "mlp";
        let no_bias = nn::LinearConfig {
            bias: false,
            ..ZEROS
        };
        Layer {
            qkv: Projection::new(&attn / "qkv_proj", h, 3 * h, ZEROS, cfg),
            o_proj: Projection::new(&attn / "o_proj", h, h, ZEROS, cfg),
            attn_ln: LayerNorm::new(&p / "attn_ln", h, eps, true),
            up_gate: Projection::new(&mlp / "up_gate_proj", h, 2 * i, no_bias, cfg),
            down: Projection::new(&mlp / "down_proj", i, h, ZEROS, cfg),
            mlp_ln: LayerNorm::new(&p / "mlp_ln", h, eps, true),
        }
    }
}

/// The rotary frequencies `1 / theta^(2j / d)`, in the reference's float32 arithmetic. With NTK
/// scaling, the remote code's NTKScalingRotaryEmbedding builds its cache for
/// `max_position_embeddings * factor` positions; past the table (any factor above 1) it uses
/// `theta * factor` and divides by `factor^(2 / d)`, at every length.
fn inv_freq(cfg: &Config, keys: &Keys, p: &nn::Path) -> Result<Tensor, ModelError> {
    let ntk = match &keys.rope_scaling {
        None => None,
        Some(s) => {
            let kind = s.kind.as_deref().or(s.rope_type.as_deref());
            if kind != Some("ntk") || s.mixed_b.is_some() {
                return Err(unsupported(
                    cfg,
                    "rope_scaling",
                    cfg.raw.get("rope_scaling").cloned().unwrap_or_default(),
                    "fixed NTK scaling ({\"type\": \"ntk\", \"factor\": f}, no mixed_b) only",
                ));
            }
            (s.factor > 1.0).then_some(s.factor)
        }
    };
    let d = cfg.hidden_size / cfg.num_attention_heads;
    let exponent = Tensor::arange_start_step(0, d, 2, (DType::Float, p.device())) / d as f64;
    Ok(match ntk {
        None => Tensor::pow_scalar(keys.rope_theta, &exponent).reciprocal(),
        Some(f) => {
            Tensor::pow_scalar(keys.rope_theta * f, &exponent).reciprocal() / f.powf(2.0 / d as f64)
        }
    })
}

impl Gte {
    pub(super) fn new(
        root: &nn::Path,
        p: nn::Path,
        cfg: &Config,
        head: Option<nn::LinearConfig>,
    ) -> Result<Gte, ModelError> {
        let keys: Keys = cfg.family_keys()?;
        // Other values of these keys change the arithmetic: the model would load and score wrong.
        exact_gelu(cfg, "hidden_act", &keys.hidden_act)?;
        if keys.position_embedding_type != "rope" {
            return Err(unsupported(
                cfg,
                "position_embedding_type",
                format!("{:?}", keys.position_embedding_type),
                "rotary positions (\"rope\") only",
            ));
        }
        if keys.layer_norm_type != "layer_norm" {
            return Err(unsupported(
                cfg,
                "layer_norm_type",
                format!("{:?}", keys.layer_norm_type),
                "\"layer_norm\" only",
            ));
        }
        if !keys.pack_qkv {
            return Err(unsupported(
                cfg,
                "pack_qkv",
                false,
                "the fused attention.qkv_proj weights (pack_qkv true) only",
            ));
        }
        if keys.logn_attention_scale {
            return Err(unsupported(
                cfg,
                "logn_attention_scale",
                true,
                "unscaled queries (logn_attention_scale false) only",
            ));
        }
        let inv_freq = inv_freq(cfg, &keys, &p)?;
        let h = cfg.hidden_size;
        let emb = &p / "embeddings";
        let eps = keys.layer_norm_eps;
        let head = head.map(|init| Head {
            pooler: nn::linear(&p / "pooler" / "dense", h, h, init),
            classifier: nn::linear(root / "classifier", h, 1, init),
        });
        Ok(Gte {
            heads: cfg.num_attention_heads,
            max_positions: cfg.max_position_embeddings,
            inv_freq,
            hidden_dropout: keys.hidden_dropout_prob,
            attention_dropout: keys.attention_probs_dropout_prob,
            classifier_dropout: keys.classifier_dropout.unwrap_or(keys.hidden_dropout_prob),
            word: nn::embedding(&emb / "word_embeddings", cfg.vocab_size, h, EMBEDDING),
            token_type: TokenTypes::new(&emb / "token_type_embeddings", keys.type_vocab_size, h),
            norm: LayerNorm::new(&emb / "LayerNorm", h, eps, true),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(&p / "encoder" / "layer" / i, cfg, eps))
                .collect(),
            head,
        })
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        attend: &Tensor,
        train: bool,
    ) -> Tensor {
        let h = *x.size().last().expect("hidden states have a size");
        let qkv = l.qkv.forward_t(x, train).split(h, -1);
        let (q, k, v) = (
            split_heads(&qkv[0], self.heads),
            split_heads(&qkv[1], self.heads),
            split_heads(&qkv[2], self.heads),
        );
        // In the projections' dtype, as the reference casts them (bf16 under autocast).
        let (cos, sin) = (rope.0.to_kind(q.kind()), rope.1.to_kind(q.kind()));
        let (q, k) = (apply_rotary(&q, &cos, &sin), apply_rotary(&k, &cos, &sin));
        let dropout = if train { self.attention_dropout } else { 0.0 };
        let ctx = attention(&q, &k, &v, attend, dropout);
        let x = l.attn_ln.forward(
            &(l.o_proj
                .forward_t(&ctx, train)
                .dropout(self.hidden_dropout, train)
                + x),
        );
        let up_gate = l.up_gate.forward_t(&x, train);
        let i = up_gate.size().last().expect("the MLP has a size") / 2;
        let gated = up_gate.narrow(-1, i, i).gelu("none") * up_gate.narrow(-1, 0, i);
        let y = l
            .down
            .forward_t(&gated.dropout(self.hidden_dropout, train), train)
            .dropout(self.hidden_dropout, train);
        l.mlp_ln.forward(&(y + x))
    }
}

impl Network for Gte {
    fn stack<'a>(
        &'a self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Stack<'a> {
        let (_, len) = ids.size2().expect("ids are [batch, len]");
        let x = self.token_type.add(self.word.forward(ids), type_ids);
        let embedded = self.norm.forward(&x).dropout(self.hidden_dropout, train);
        // Positions count from 0 in every row; padding sits after the real tokens, so it moves none.
        let rope = rotary_tables(&self.inv_freq, len);
        // [batch, 1, 1, len]: every query position may attend to every real key.
        let attend = mask.unsqueeze(1).unsqueeze(1);
        Stack {
            embedded,
            layers: self.layers.len(),
            layer: Box::new(move |i, x| self.layer(&self.layers[i], x, &rope, &attend, train)),
        }
    }

    fn classify(&self, hidden: &Tensor, _mask: &Tensor, train: bool) -> Tensor {
        let head = self
            .head
            .as_ref()
            .expect("classify runs on a cross-encoder");
        let pooled = head
            .pooler
            .forward(&hidden.select(1, 0))
            .tanh()
            .dropout(self.classifier_dropout, train);
        head.classifier.forward(&pooled).squeeze_dim(1)
    }

    fn max_tokens(&self) -> usize {
        self.max_positions.max(1) as usize
    }
}
