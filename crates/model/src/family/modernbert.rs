//! ModernBERT: rotary positions, pre-norm layers with a fused QKV projection and a GeGLU MLP,
//! full attention on every `global_attn_every_n_layers`-th layer and a sliding window on the
//! others, and a pooled prediction head. Weight names match Hugging Face's, so checkpoints load
//! and save without a table.
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Kind as DType, Tensor};

use super::blocks::{apply_rotary, attention, rotary};
use super::{defaults, unsupported, LayerNorm, Network, Stack, EMBEDDING, ZEROS};
use crate::config::Config;
use crate::lora::Projection;
use crate::ModelError;

/// The keys of a ModernBERT `config.json` beyond the sizes every family has, with
/// `ModernBertConfig`'s defaults.
#[derive(Deserialize)]
struct Keys {
    #[serde(default = "defaults::gelu")]
    hidden_activation: String,
    #[serde(default = "defaults::gelu")]
    classifier_activation: String,
    #[serde(default = "cls")]
    classifier_pooling: String,
    #[serde(default = "eps")]
    norm_eps: f64,
    #[serde(default)]
    norm_bias: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    classifier_bias: bool,
    #[serde(default)]
    embedding_dropout: f64,
    #[serde(default)]
    attention_dropout: f64,
    #[serde(default)]
    mlp_dropout: f64,
    #[serde(default)]
    classifier_dropout: f64,
    /// The whole window, centre included: a local layer sees half of it each side.
    #[serde(default = "local_attention")]
    local_attention: i64,
    /// transformers' setter for the half-window: when written, it overrides `local_attention`.
    #[serde(default)]
    sliding_window: Option<i64>,
    /// `"full_attention"` or `"sliding_attention"` per layer, as transformers 5 writes it;
    /// older configs give `global_attn_every_n_layers` instead.
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default = "every_third")]
    global_attn_every_n_layers: i64,
    /// Per layer type, as transformers 5 writes it; older configs give the two thetas below.
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default = "global_theta")]
    global_rope_theta: f64,
    #[serde(default = "local_theta")]
    local_rope_theta: f64,
    /// transformers merges it into both layer types' rotary parameters.
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    /// The rotary dimension when set; the projections always use hidden_size / heads.
    #[serde(default)]
    head_dim: Option<i64>,
    /// `ModernBertConfig`'s own default, which `Config` (0) does not know: the embedding row
    /// that gets no gradient.
    #[serde(default = "pad_id")]
    pad_token_id: i64,
}

#[derive(Deserialize)]
struct RopeParameters {
    #[serde(default)]
    full_attention: Option<Rope>,
    #[serde(default)]
    sliding_attention: Option<Rope>,
}

#[derive(Deserialize)]
struct Rope {
    #[serde(default)]
    rope_type: Option<String>,
    /// The name older configs used for `rope_type`.
    #[serde(default, rename = "type")]
    legacy_type: Option<String>,
    #[serde(default)]
    rope_theta: Option<f64>,
}

fn cls() -> String {
    "cls".into()
}
fn eps() -> f64 {
    1e-5
}
fn local_attention() -> i64 {
    128
}
fn every_third() -> i64 {
    3
}
fn global_theta() -> f64 {
    160_000.0
}
fn local_theta() -> f64 {
    10_000.0
}
fn pad_id() -> i64 {
    50283
}

/// The `approximate` argument of libtorch's GELU for a transformers activation name.
fn activation(cfg: &Config, key: &str, name: &str) -> Result<&'static str, ModelError> {
    match name {
        "gelu" => Ok("none"),
        "gelu_pytorch_tanh" => Ok("tanh"),
        _ => Err(unsupported(
            cfg,
            key,
            format!("{name:?}"),
            "exact GELU (\"gelu\") and tanh GELU (\"gelu_pytorch_tanh\") only",
        )),
    }
}

/// The rotary base of one layer type: its `rope_parameters` entry, else the legacy key.
fn rope_theta(
    cfg: &Config,
    layer_type: &str,
    params: Option<&Rope>,
    legacy: f64,
) -> Result<f64, ModelError> {
    let Some(rope) = params else {
        return Ok(legacy);
    };
    let kind = rope
        .rope_type
        .as_deref()
        .or(rope.legacy_type.as_deref())
        .unwrap_or("default");
    if kind != "default" {
        return Err(unsupported(
            cfg,
            &format!("rope_parameters.{layer_type}.rope_type"),
            format!("{kind:?}"),
            "the default rotary embedding only",
        ));
    }
    Ok(rope.rope_theta.unwrap_or(legacy))
}

pub(super) struct ModernBert {
    heads: i64,
    /// Tokens a local layer's query sees on each side, inclusive.
    half_window: i64,
    global_theta: f64,
    local_theta: f64,
    max_positions: i64,
    /// libtorch's `approximate` for the MLP's GELU.
    act: &'static str,
    embedding_dropout: f64,
    attention_dropout: f64,
    mlp_dropout: f64,
    tok_embeddings: nn::Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    head: Option<Head>,
}

struct Layer {
    /// Absent on layer 0, which reads the already normalised embeddings.
    attn_norm: Option<LayerNorm>,
    wqkv: Projection,
    wo: Projection,
    mlp_norm: LayerNorm,
    wi: Projection,
    mlp_out: Projection,
    /// Attends within the sliding window, with the local rotary base.
    local: bool,
}

/// ModernBertForSequenceClassification's head: pooling, dense + activation + norm, classifier.
struct Head {
    mean: bool,
    dense: nn::Linear,
    act: &'static str,
    norm: LayerNorm,
    dropout: f64,
    classifier: nn::Linear,
}

impl ModernBert {
    pub(super) fn new(
        root: &nn::Path,
        p: nn::Path,
        cfg: &Config,
        head: Option<nn::LinearConfig>,
    ) -> Result<ModernBert, ModelError> {
        let keys: Keys = cfg.family_keys()?;
        let h = cfg.hidden_size;
        let n = cfg.num_hidden_layers;
        // Other values of these keys change the arithmetic: the model would load and score wrong.
        let act = activation(cfg, "hidden_activation", &keys.hidden_activation)?;
        if let Some(dim) = keys.head_dim.filter(|&d| d != h / cfg.num_attention_heads) {
            return Err(unsupported(
                cfg,
                "head_dim",
                dim,
                "rotary embeddings over hidden_size / num_attention_heads only",
            ));
        }
        if let Some(scaling) = keys.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            return Err(unsupported(
                cfg,
                "rope_scaling",
                scaling,
                "unscaled rotary embeddings only",
            ));
        }
        let rope = keys.rope_parameters.as_ref();
        let global_theta = rope_theta(
            cfg,
            "full_attention",
            rope.and_then(|r| r.full_attention.as_ref()),
            keys.global_rope_theta,
        )?;
        let local_theta = rope_theta(
            cfg,
            "sliding_attention",
            rope.and_then(|r| r.sliding_attention.as_ref()),
            keys.local_rope_theta,
        )?;
        let local: Vec<bool> = match &keys.layer_types {
            Some(types) if types.len() as i64 != n => {
                return Err(unsupported(
                    cfg,
                    "layer_types",
                    format!("of {} entries", types.len()),
                    &format!("one entry per layer (num_hidden_layers {n})"),
                ))
            }
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    "full_attention" => Ok(false),
                    "sliding_attention" => Ok(true),
                    _ => Err(unsupported(
                        cfg,
                        "layer_types",
                        format!("{t:?}"),
                        "\"full_attention\" and \"sliding_attention\" only",
                    )),
                })
                .collect::<Result<_, _>>()?,
            None if keys.global_attn_every_n_layers < 1 => {
                return Err(unsupported(
                    cfg,
                    "global_attn_every_n_layers",
                    keys.global_attn_every_n_layers,
                    "a positive period",
                ))
            }
            None => (0..n)
                .map(|i| i % keys.global_attn_every_n_layers != 0)
                .collect(),
        };
        let head = match head {
            None => None,
            Some(init) => Some(Head {
                mean: match keys.classifier_pooling.as_str() {
                    "cls" => false,
                    "mean" => true,
                    other => {
                        return Err(unsupported(
                            cfg,
                            "classifier_pooling",
                            format!("{other:?}"),
                            "\"cls\" and \"mean\" pooling only",
                        ))
                    }
                },
                dense: nn::linear(
                    root / "head" / "dense",
                    h,
                    h,
                    nn::LinearConfig {
                        bias: keys.classifier_bias,
                        ..init
                    },
                ),
                act: activation(cfg, "classifier_activation", &keys.classifier_activation)?,
                norm: LayerNorm::new(root / "head" / "norm", h, keys.norm_eps, keys.norm_bias),
                dropout: keys.classifier_dropout,
                classifier: nn::linear(
                    root / "classifier",
                    h,
                    1,
                    nn::LinearConfig { bias: true, ..init },
                ),
            }),
        };

        let norm = |path: nn::Path| LayerNorm::new(path, h, keys.norm_eps, keys.norm_bias);
        let attn = nn::LinearConfig {
            bias: keys.attention_bias,
            ..ZEROS
        };
        let mlp = nn::LinearConfig {
            bias: keys.mlp_bias,
            ..ZEROS
        };
        let i = cfg.intermediate_size;
        let layers = local
            .into_iter()
            .enumerate()
            .map(|(at, local)| {
                let l = &p / "layers" / at;
                Layer {
                    attn_norm: (at > 0).then(|| norm(&l / "attn_norm")),
                    wqkv: Projection::new(&l / "attn" / "Wqkv", h, 3 * h, attn, cfg),
                    wo: Projection::new(&l / "attn" / "Wo", h, h, attn, cfg),
                    mlp_norm: norm(&l / "mlp_norm"),
                    wi: Projection::new(&l / "mlp" / "Wi", h, 2 * i, mlp, cfg),
                    mlp_out: Projection::new(&l / "mlp" / "Wo", i, h, mlp, cfg),
                    local,
                }
            })
            .collect();
        let emb = &p / "embeddings";
        Ok(ModernBert {
            heads: cfg.num_attention_heads,
            half_window: keys.sliding_window.unwrap_or(keys.local_attention / 2),
            global_theta,
            local_theta,
            max_positions: cfg.max_position_embeddings,
            act,
            embedding_dropout: keys.embedding_dropout,
            attention_dropout: keys.attention_dropout,
            mlp_dropout: keys.mlp_dropout,
            tok_embeddings: nn::embedding(
                &emb / "tok_embeddings",
                cfg.vocab_size,
                h,
                nn::EmbeddingConfig {
                    padding_idx: keys.pad_token_id,
                    ..EMBEDDING
                },
            ),
            embed_norm: norm(&emb / "norm"),
            layers,
            final_norm: norm(&p / "final_norm"),
            head,
        })
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        attend: &Tensor,
        (cos, sin): &(Tensor, Tensor),
        train: bool,
    ) -> Tensor {
        let (b, n, h) = x.size3().expect("hidden states are [batch, len, hidden]");
        let d = h / self.heads;
        let normed = match &l.attn_norm {
            Some(norm) => norm.forward(x),
            None => x.shallow_clone(),
        };
        let qkv = l
            .wqkv
            .forward_t(&normed, train)
            .view([b, n, 3, self.heads, d]);
        let part = |i: i64| qkv.select(2, i).transpose(1, 2);
        let (q, k, v) = (
            apply_rotary(&part(0), cos, sin),
            apply_rotary(&part(1), cos, sin),
            part(2),
        );
        let dropout = if train { self.attention_dropout } else { 0.0 };
        let ctx = attention(&q, &k, &v, attend, dropout);
        let x = x + l
            .wo
            .forward_t(&ctx, train)
            .dropout(self.attention_dropout, train);
        let gates = l.wi.forward_t(&l.mlp_norm.forward(&x), train).chunk(2, 2);
        let y = (gates[0].gelu(self.act) * &gates[1]).dropout(self.mlp_dropout, train);
        x + l.mlp_out.forward_t(&y, train)
    }
}

impl Network for ModernBert {
    fn stack<'a>(
        &'a self,
        ids: &Tensor,
        _type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Stack<'a> {
        let (_, len) = ids.size2().expect("ids are [batch, len]");
        let device = ids.device();
        let embedded = self
            .embed_norm
            .forward(&self.tok_embeddings.forward(ids))
            .dropout(self.embedding_dropout, train);
        // [batch, 1, 1, len]: a global layer's queries see every real key.
        let global = mask.unsqueeze(1).unsqueeze(1);
        // [batch, 1, len, len]: a local layer's see real keys at most half_window away. A
        // padding query may find none, and some of libtorch's kernels turn a fully masked row
        // into NaN (pytorch#103963), which mean pooling's zero weight would not cancel; its
        // output is never read, so it attends to every real key instead.
        let pos = Tensor::arange(len, (DType::Int64, device));
        let near = (pos.unsqueeze(1) - pos.unsqueeze(0))
            .abs()
            .le(self.half_window);
        let local = near
            .logical_or(&mask.logical_not().unsqueeze(2))
            .unsqueeze(1)
            .logical_and(&global);
        let d = embedded.size()[2] / self.heads;
        let global_rope = rotary(self.global_theta, len, d, device);
        let local_rope = rotary(self.local_theta, len, d, device);
        Stack {
            embedded,
            layers: self.layers.len(),
            layer: Box::new(move |i, x| {
                let l = &self.layers[i];
                match l.local {
                    false => self.layer(l, x, &global, &global_rope, train),
                    true => self.layer(l, x, &local, &local_rope, train),
                }
            }),
        }
    }

    fn finish(&self, last: Tensor) -> Tensor {
        self.final_norm.forward(&last)
    }

    fn classify(&self, hidden: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let head = self
            .head
            .as_ref()
            .expect("classify runs on a cross-encoder");
        let pooled = match head.mean {
            false => hidden.select(1, 0),
            true => {
                let m = mask.to_kind(hidden.kind()).unsqueeze(-1);
                (hidden * &m).sum_dim_intlist(1, false, None) / m.sum_dim_intlist(1, false, None)
            }
        };
        let x = head
            .norm
            .forward(&head.dense.forward(&pooled).gelu(head.act))
            .dropout(head.dropout, train);
        head.classifier.forward(&x).squeeze_dim(1)
    }

    fn max_tokens(&self) -> usize {
        self.max_positions.max(1) as usize
    }
}
