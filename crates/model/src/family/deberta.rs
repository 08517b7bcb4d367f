//! DeBERTa-v2 and DeBERTa-v3: disentangled attention, in which each query also scores the
//! relative position of each key (content to position, "c2p") and each key the relative position
//! of each query ("p2c"), over log-bucketed distances whose embeddings all layers share. A port
//! of transformers' `modeling_deberta_v2.py`; weight names match its checkpoints.
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Device, Kind as DType, Tensor};

use super::blocks::{PostNorm, TokenTypes};
use super::{defaults, exact_gelu, unsupported, LayerNorm, Network, Stack, EMBEDDING, ZEROS};
use crate::config::Config;
use crate::lora::Projection;
use crate::ModelError;

/// The keys of a DeBERTa-v2 `config.json` beyond the sizes every family has, with
/// transformers' defaults (those of `DebertaV2Config`, or of the `getattr` that reads them).
#[derive(Deserialize)]
struct Keys {
    #[serde(default)]
    type_vocab_size: i64,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "defaults::gelu")]
    hidden_act: String,
    #[serde(default = "defaults::dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "defaults::dropout")]
    attention_probs_dropout_prob: f64,
    #[serde(default)]
    embedding_size: Option<i64>,
    #[serde(default)]
    attention_head_size: Option<i64>,
    #[serde(default = "defaults::yes")]
    position_biased_input: bool,
    #[serde(default)]
    relative_attention: bool,
    #[serde(default = "unset")]
    max_relative_positions: i64,
    #[serde(default = "unset")]
    position_buckets: i64,
    #[serde(default)]
    pos_att_type: Option<PosAttType>,
    #[serde(default)]
    norm_rel_ebd: Option<String>,
    #[serde(default)]
    share_att_key: bool,
    #[serde(default)]
    conv_kernel_size: i64,
    #[serde(default)]
    pooler_hidden_size: Option<i64>,
    #[serde(default = "defaults::gelu")]
    pooler_hidden_act: String,
    #[serde(default)]
    pooler_dropout: f64,
    #[serde(default)]
    cls_dropout: Option<f64>,
}

/// Older checkpoints write `"p2c|c2p"`, which transformers lower-cases and splits; a list it
/// takes as written.
#[derive(Deserialize)]
#[serde(untagged)]
enum PosAttType {
    Joined(String),
    List(Vec<String>),
}

impl PosAttType {
    fn has(&self, kind: &str) -> bool {
        match self {
            PosAttType::Joined(s) => s.to_lowercase().split('|').any(|t| t.trim() == kind),
            PosAttType::List(l) => l.iter().any(|t| t == kind),
        }
    }
}

fn eps() -> f64 {
    1e-7
}
fn unset() -> i64 {
    -1
}

pub(super) struct Deberta {
    heads: i64,
    max_positions: i64,
    hidden_dropout: f64,
    attention_dropout: f64,
    pooler_dropout: f64,
    cls_dropout: f64,
    word: nn::Embedding,
    position: Option<nn::Embedding>,
    token_type: TokenTypes,
    embed_proj: Option<nn::Linear>,
    norm: LayerNorm,
    relative: Option<Relative>,
    c2p: bool,
    p2c: bool,
    /// sqrt(head size × (1 + the number of position terms)): every score term is divided by it.
    scale: f64,
    layers: Vec<Layer>,
    head: Option<Head>,
}

/// The relative-position scheme, shared by all layers.
struct Relative {
    /// [2 × span, hidden]
    embeddings: Tensor,
    norm: Option<LayerNorm>,
    /// Distances index `embeddings` clamped to [-span, span): the bucket count, or without
    /// buckets the largest distance.
    span: i64,
    buckets: i64,
    max_distance: i64,
}

struct Layer {
    query: Projection,
    key: Projection,
    value: Projection,
    /// Projections of the relative embeddings of their own, without `share_att_key`.
    pos_key: Option<Projection>,
    pos_query: Option<Projection>,
    rest: PostNorm,
}

/// DebertaV2ForSequenceClassification's ContextPooler (dense + GELU over the first token) and
/// classifier.
struct Head {
    pooler: nn::Linear,
    classifier: nn::Linear,
}

/// Per encode: what every layer's attention reads besides its input.
struct Context {
    /// [batch, 1, len, len]: both the query and the key are real tokens.
    attend: Tensor,
    positions: Option<Positions>,
}

struct Positions {
    /// The normed relative embeddings, [2 × span, hidden].
    embeddings: Tensor,
    /// For each (query, key) pair, [len, len], the row of `embeddings` each term reads.
    c2p: Tensor,
    p2c: Tensor,
}

impl Keys {
    fn check(&self, cfg: &Config) -> Result<(), ModelError> {
        exact_gelu(cfg, "hidden_act", &self.hidden_act)?;
        exact_gelu(cfg, "pooler_hidden_act", &self.pooler_hidden_act)?;
        if self.conv_kernel_size > 0 {
            return Err(unsupported(
                cfg,
                "conv_kernel_size",
                self.conv_kernel_size,
                "DeBERTa without the convolution beside the first layer (conv_kernel_size 0, as \
                 in DeBERTa-v3) only",
            ));
        }
        let head_size = cfg.hidden_size / cfg.num_attention_heads;
        if let Some(size) = self.attention_head_size.filter(|&s| s != head_size) {
            return Err(unsupported(
                cfg,
                "attention_head_size",
                size,
                "hidden_size / num_attention_heads only",
            ));
        }
        if let Some(size) = self.pooler_hidden_size.filter(|&s| s != cfg.hidden_size) {
            return Err(unsupported(
                cfg,
                "pooler_hidden_size",
                size,
                "a pooler of hidden_size only",
            ));
        }
        Ok(())
    }
}

impl Layer {
    fn new(p: nn::Path, cfg: &Config, keys: &Keys, c2p: bool, p2c: bool) -> Layer {
        let h = cfg.hidden_size;
        let eps = keys.layer_norm_eps;
        let attn = &p / "attention";
        let own = keys.relative_attention && !keys.share_att_key;
        Layer {
            query: Projection::new(&attn / "self" / "query_proj", h, h, ZEROS, cfg),
            key: Projection::new(&attn / "self" / "key_proj", h, h, ZEROS, cfg),
            value: Projection::new(&attn / "self" / "value_proj", h, h, ZEROS, cfg),
            pos_key: (own && c2p)
                .then(|| Projection::new(&attn / "self" / "pos_key_proj", h, h, ZEROS, cfg)),
            pos_query: (own && p2c)
                .then(|| Projection::new(&attn / "self" / "pos_query_proj", h, h, ZEROS, cfg)),
            rest: PostNorm::new(
                &attn / "output" / "dense",
                &attn / "output" / "LayerNorm",
                &p,
                cfg,
                eps,
            ),
        }
    }
}

impl Deberta {
    pub(super) fn new(
        root: &nn::Path,
        p: nn::Path,
        cfg: &Config,
        head: Option<nn::LinearConfig>,
    ) -> Result<Deberta, ModelError> {
        let keys: Keys = cfg.family_keys()?;
        keys.check(cfg)?;
        let h = cfg.hidden_size;
        let eps = keys.layer_norm_eps;
        let (c2p, p2c) = match &keys.pos_att_type {
            Some(t) => (t.has("c2p"), t.has("p2c")),
            None => (false, false),
        };
        let emb = &p / "embeddings";
        let e = keys.embedding_size.unwrap_or(h);
        let table = |name: &str, rows: i64| nn::embedding(&emb / name, rows, e, EMBEDDING);
        let word = nn::embedding(
            &emb / "word_embeddings",
            cfg.vocab_size,
            e,
            // transformers gives the pad token's row no gradient.
            nn::EmbeddingConfig {
                padding_idx: cfg.pad_token_id,
                ..EMBEDDING
            },
        );
        let relative = keys.relative_attention.then(|| {
            let max_distance = match keys.max_relative_positions {
                n if n < 1 => cfg.max_position_embeddings,
                n => n,
            };
            let span = match keys.position_buckets {
                b if b > 0 => b,
                _ => max_distance,
            };
            let encoder = &p / "encoder";
            let norm_rel = keys
                .norm_rel_ebd
                .as_deref()
                .unwrap_or("none")
                .to_lowercase();
            Relative {
                embeddings: (&encoder / "rel_embeddings").var(
                    "weight",
                    &[2 * span, h],
                    nn::Init::Const(0.0),
                ),
                norm: norm_rel
                    .split('|')
                    .any(|t| t.trim() == "layer_norm")
                    .then(|| LayerNorm::new(&encoder / "LayerNorm", h, eps, true)),
                span,
                buckets: keys.position_buckets,
                max_distance,
            }
        });
        let head = head.map(|init| Head {
            pooler: nn::linear(root / "pooler" / "dense", h, h, init),
            classifier: nn::linear(root / "classifier", h, 1, init),
        });
        let terms = 1 + c2p as i64 + p2c as i64;
        Ok(Deberta {
            heads: cfg.num_attention_heads,
            max_positions: cfg.max_position_embeddings,
            hidden_dropout: keys.hidden_dropout_prob,
            attention_dropout: keys.attention_probs_dropout_prob,
            pooler_dropout: keys.pooler_dropout,
            cls_dropout: keys.cls_dropout.unwrap_or(keys.hidden_dropout_prob),
            word,
            position: keys
                .position_biased_input
                .then(|| table("position_embeddings", cfg.max_position_embeddings)),
            token_type: TokenTypes::new(&emb / "token_type_embeddings", keys.type_vocab_size, e),
            embed_proj: (e != h).then(|| {
                nn::linear(
                    &emb / "embed_proj",
                    e,
                    h,
                    nn::LinearConfig {
                        bias: false,
                        ..ZEROS
                    },
                )
            }),
            norm: LayerNorm::new(&emb / "LayerNorm", h, eps, true),
            // transformers computes it in fp32.
            scale: (((h / cfg.num_attention_heads) * terms) as f32).sqrt() as f64,
            c2p,
            p2c,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(&p / "encoder" / "layer" / i, cfg, &keys, c2p, p2c))
                .collect(),
            relative,
            head,
        })
    }

    fn context(&self, mask: &Tensor, len: i64) -> Context {
        let m = mask.unsqueeze(1);
        let attend = m.unsqueeze(2).logical_and(&m.unsqueeze(3));
        let positions = self.relative.as_ref().map(|r| {
            let ids = Tensor::arange(len, (DType::Int64, mask.device()));
            // query position minus key position
            let mut distance = ids.unsqueeze(1) - ids.unsqueeze(0);
            if r.buckets > 0 && r.max_distance > 0 {
                distance = log_buckets(&distance, r.buckets, r.max_distance);
            }
            let index = |d: Tensor| (d + r.span).clamp(0, 2 * r.span - 1);
            let embeddings = match &r.norm {
                Some(norm) => norm.forward(&r.embeddings),
                None => r.embeddings.shallow_clone(),
            };
            Positions {
                embeddings,
                c2p: index(distance.shallow_clone()),
                p2c: index(-distance),
            }
        });
        Context { attend, positions }
    }

    /// [.., rows, hidden] to [.., heads, rows, head size].
    fn split(&self, t: Tensor) -> Tensor {
        let size = t.size();
        let (rows, h) = (size[size.len() - 2], size[size.len() - 1]);
        t.view([-1, rows, self.heads, h / self.heads])
            .transpose(1, 2)
    }

    /// The relative-position terms of the scores, [batch, heads, len, len], already scaled.
    fn position_scores(
        &self,
        l: &Layer,
        q: &Tensor,
        k: &Tensor,
        ctx: &Context,
        train: bool,
    ) -> Option<Tensor> {
        let positions = ctx.positions.as_ref()?;
        // Each layer drops out the shared embeddings anew.
        let rel = positions
            .embeddings
            .dropout(self.hidden_dropout, train)
            .unsqueeze(0);
        let pick = |scores: Tensor, index: &Tensor| {
            let mut size = q.size();
            size[3] = size[2];
            scores.gather(-1, &index.expand(size, false), false)
        };
        let c2p = self.c2p.then(|| {
            let pos_key = self.split(l.pos_key.as_ref().unwrap_or(&l.key).forward_t(&rel, train));
            pick(q.matmul(&pos_key.transpose(-1, -2)), &positions.c2p) / self.scale
        });
        let p2c = self.p2c.then(|| {
            let pos_query = self.split(
                l.pos_query
                    .as_ref()
                    .unwrap_or(&l.query)
                    .forward_t(&rel, train),
            );
            // Scored from each key's side, then turned to the query's.
            pick(k.matmul(&pos_query.transpose(-1, -2)), &positions.p2c).transpose(-1, -2)
                / self.scale
        });
        match (c2p, p2c) {
            (Some(c2p), Some(p2c)) => Some(c2p + p2c),
            (c2p, p2c) => c2p.or(p2c),
        }
    }

    fn attention(&self, l: &Layer, x: &Tensor, ctx: &Context, train: bool) -> Tensor {
        let (b, n, h) = x.size3().expect("hidden states are [batch, len, hidden]");
        let q = self.split(l.query.forward_t(x, train));
        let k = self.split(l.key.forward_t(x, train));
        let v = self.split(l.value.forward_t(x, train));
        let scores = q.matmul(&(k.transpose(-1, -2) / self.scale));
        let scores = match self.position_scores(l, &q, &k, ctx, train) {
            Some(bias) => scores + bias,
            None => scores,
        };
        // Masked in fp32: under bf16 autocast the scores are bf16, to which fp32's lowest value
        // rounds as -inf, and a fully masked row (a padding query) would give NaN instead of
        // transformers' uniform average.
        let probs = scores
            .to_kind(DType::Float)
            .masked_fill(&ctx.attend.logical_not(), f32::MIN as f64)
            .softmax(-1, DType::Float)
            .dropout(self.attention_dropout, train);
        probs
            .matmul(&v)
            .transpose(1, 2)
            .contiguous()
            .view([b, n, h])
    }

    fn layer(&self, l: &Layer, x: &Tensor, ctx: &Context, train: bool) -> Tensor {
        let a = self.attention(l, x, ctx, train);
        l.rest.forward(&a, x, self.hidden_dropout, train)
    }
}

/// transformers' `make_log_bucket_position`, op for op in fp32 (a bucket boundary is a ceil, so
/// the last bit decides it): distances under half the buckets are kept, longer ones share
/// buckets logarithmically up to `max_distance`.
fn log_buckets(distance: &Tensor, buckets: i64, max_distance: i64) -> Tensor {
    let mid = buckets / 2;
    let near = distance.lt(mid).logical_and(&distance.gt(-mid));
    let abs = Tensor::scalar_tensor(mid - 1, (DType::Int64, distance.device()))
        .where_self(&near, &distance.abs());
    // transformers makes this one a CPU tensor from a Python float.
    let range = Tensor::scalar_tensor(
        (max_distance - 1) as f64 / mid as f64,
        (DType::Float, Device::Cpu),
    )
    .log();
    let log = ((&abs / mid).log() / range * (mid - 1)).ceil() + mid;
    distance
        .to_kind(DType::Float)
        .where_self(&abs.le(mid), &(log * distance.sign()))
        .to_kind(DType::Int64)
}

impl Network for Deberta {
    fn stack<'a>(
        &'a self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Stack<'a> {
        let (_, len) = ids.size2().expect("ids are [batch, len]");
        let x = self.word.forward(ids);
        let x = match &self.position {
            Some(table) => {
                let positions = Tensor::arange(len, (DType::Int64, ids.device())).unsqueeze(0);
                x + table.forward(&positions)
            }
            None => x,
        };
        let x = self.token_type.add(x, type_ids);
        let x = match &self.embed_proj {
            Some(proj) => proj.forward(&x),
            None => x,
        };
        let x = self.norm.forward(&x);
        let ctx = self.context(mask, len);
        Stack {
            embedded: (&x * mask.to_kind(x.kind()).unsqueeze(-1))
                .dropout(self.hidden_dropout, train),
            layers: self.layers.len(),
            layer: Box::new(move |i, x| self.layer(&self.layers[i], x, &ctx, train)),
        }
    }

    fn classify(&self, hidden: &Tensor, _mask: &Tensor, train: bool) -> Tensor {
        let head = self
            .head
            .as_ref()
            .expect("classify runs on a cross-encoder");
        let first = hidden.select(1, 0).dropout(self.pooler_dropout, train);
        let pooled = head
            .pooler
            .forward(&first)
            .gelu("none")
            .dropout(self.cls_dropout, train);
        head.classifier.forward(&pooled).squeeze_dim(1)
    }

    /// The position table's size: a hard limit for absolute positions; relative ones have none,
    /// but the model was trained within it.
    fn max_tokens(&self) -> usize {
        self.max_positions.max(1) as usize
    }
}
