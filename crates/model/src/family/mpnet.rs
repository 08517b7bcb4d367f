//! MPNet: RoBERTa-style absolute positions plus a T5-style relative position bias shared by all
//! layers, post-norm layers, exact GELU, no token types. Weight names match Hugging Face's, so
//! checkpoints load and save without a table.
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Device, Kind as DType, Tensor};

use super::blocks::{AttentionNames, DenseTanhHead, SelfAttentionLayer};
use super::{defaults, exact_gelu, unsupported, LayerNorm, Network, Stack, EMBEDDING};
use crate::config::Config;
use crate::ModelError;

/// transformers fixes MPNet's padding index at 1 whatever `pad_token_id` says: token id 1 gets
/// this position and the others count up from the next one.
const PADDING_IDX: i64 = 1;

/// transformers' `compute_position_bias` buckets into 32 whatever
/// `relative_attention_num_buckets` says; the key only sizes the table.
const BUCKETS: i64 = 32;

/// Relative distances from here on share the last bucket of their direction.
const MAX_DISTANCE: i64 = 128;

/// The keys of an MPNet `config.json` beyond the sizes every family has.
#[derive(Deserialize)]
struct Keys {
    #[serde(default = "defaults::eps_1e12")]
    layer_norm_eps: f64,
    #[serde(default = "defaults::gelu")]
    hidden_act: String,
    #[serde(default = "defaults::dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "defaults::dropout")]
    attention_probs_dropout_prob: f64,
    #[serde(default = "buckets")]
    relative_attention_num_buckets: i64,
}

fn buckets() -> i64 {
    BUCKETS
}

pub(super) struct MpNet {
    max_positions: i64,
    heads: i64,
    hidden_dropout: f64,
    attention_dropout: f64,
    word: nn::Embedding,
    position: nn::Embedding,
    norm: LayerNorm,
    /// [buckets, heads]: one bias per head and relative-distance bucket, added in every layer.
    relative_bias: nn::Embedding,
    layers: Vec<SelfAttentionLayer>,
    /// MPNetClassificationHead.
    head: Option<DenseTanhHead>,
}

const NAMES: AttentionNames = AttentionNames {
    query: &["attn", "q"],
    key: &["attn", "k"],
    value: &["attn", "v"],
    output: &["attn", "o"],
    norm: &["LayerNorm"],
};

impl MpNet {
    pub(super) fn new(
        root: &nn::Path,
        p: nn::Path,
        cfg: &Config,
        head: Option<nn::LinearConfig>,
    ) -> Result<MpNet, ModelError> {
        let keys: Keys = cfg.family_keys()?;
        // Other values of these keys change the arithmetic: the model would load and score wrong.
        exact_gelu(cfg, "hidden_act", &keys.hidden_act)?;
        // A smaller table has no row for some of the 32 buckets transformers looks up.
        if keys.relative_attention_num_buckets < BUCKETS {
            return Err(unsupported(
                cfg,
                "relative_attention_num_buckets",
                keys.relative_attention_num_buckets,
                "32 or more (transformers' MPNet always uses 32 buckets)",
            ));
        }
        let h = cfg.hidden_size;
        let emb = &p / "embeddings";
        let eps = keys.layer_norm_eps;
        let head = head.map(|init| DenseTanhHead::new(root, h, init));
        Ok(MpNet {
            max_positions: cfg.max_position_embeddings,
            heads: cfg.num_attention_heads,
            hidden_dropout: keys.hidden_dropout_prob,
            attention_dropout: keys.attention_probs_dropout_prob,
            word: nn::embedding(&emb / "word_embeddings", cfg.vocab_size, h, EMBEDDING),
            position: nn::embedding(
                &emb / "position_embeddings",
                cfg.max_position_embeddings,
                h,
                EMBEDDING,
            ),
            norm: LayerNorm::new(&emb / "LayerNorm", h, eps, true),
            relative_bias: nn::embedding(
                &p / "encoder" / "relative_attention_bias",
                keys.relative_attention_num_buckets,
                cfg.num_attention_heads,
                EMBEDDING,
            ),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| SelfAttentionLayer::new(&p / "encoder" / "layer" / i, &NAMES, cfg, eps))
                .collect(),
            head,
        })
    }
}

/// [len, len] bucket of each (query, key) pair: transformers' `relative_position_bucket`, op for
/// op, since its float log decides bucket edges (distances 16, 32, 64) that other arithmetic
/// could round to the neighbouring bucket.
fn relative_buckets(len: i64, device: Device) -> Tensor {
    let pos = Tensor::arange(len, (DType::Int64, device));
    // Query minus key: transformers negates key minus query.
    let n = pos.unsqueeze(1) - pos.unsqueeze(0);
    let half = BUCKETS / 2;
    let exact = half / 2;
    let direction = n.lt(0).to_kind(DType::Int64) * half;
    let n = n.abs();
    let large = ((n.to_kind(DType::Float) / exact as f64).log()
        / (MAX_DISTANCE as f64 / exact as f64).ln()
        * (half - exact) as f64)
        .to_kind(DType::Int64)
        + exact;
    let large = large.clamp_max(half - 1);
    direction + n.where_self(&n.lt(exact), &large)
}

impl Network for MpNet {
    fn stack<'a>(
        &'a self,
        ids: &Tensor,
        _type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Stack<'a> {
        let (_, len) = ids.size2().expect("ids are [batch, len]");
        // As transformers numbers them from the ids: a token with the padding id, real or not,
        // takes the padding position and the count skips it.
        let counted = mask.logical_and(&ids.ne(PADDING_IDX)).to_kind(DType::Int64);
        let positions = counted.cumsum(1, DType::Int64) * &counted + PADDING_IDX;
        let x = self.word.forward(ids) + self.position.forward(&positions);
        let embedded = self.norm.forward(&x).dropout(self.hidden_dropout, train);
        // One float mask carries both the relative bias and the padding, which attention adds
        // to the scores: [1, heads, len, len] + [batch, 1, 1, len].
        let bias = self
            .relative_bias
            .forward(&relative_buckets(len, ids.device()))
            .permute([2, 0, 1])
            .unsqueeze(0);
        let padding = mask
            .logical_not()
            .unsqueeze(1)
            .unsqueeze(1)
            .to_kind(DType::Float)
            * f64::from(f32::MIN);
        let attend = bias + padding;
        let dropout = (self.attention_dropout, self.hidden_dropout);
        Stack {
            embedded,
            layers: self.layers.len(),
            layer: Box::new(move |i, x| {
                self.layers[i].forward(x, &attend, self.heads, dropout, train)
            }),
        }
    }

    fn classify(&self, hidden: &Tensor, _mask: &Tensor, train: bool) -> Tensor {
        let head = self
            .head
            .as_ref()
            .expect("classify runs on a cross-encoder");
        head.forward(hidden, self.hidden_dropout, train)
    }

    /// Positions count from `PADDING_IDX + 1`, so the window is two shorter than the table.
    fn max_tokens(&self) -> usize {
        (self.max_positions - PADDING_IDX - 1).max(1) as usize
    }
}
