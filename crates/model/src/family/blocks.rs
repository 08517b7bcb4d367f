//! Pieces several families share, written once.
use tch::nn::{self, Module};
use tch::Tensor;

use super::{LayerNorm, EMBEDDING, ZEROS};
use crate::config::Config;
use crate::lora::Projection;

/// [batch, len, hidden] → [batch, heads, len, hidden / heads].
pub(super) fn split_heads(t: &Tensor, heads: i64) -> Tensor {
    let (b, n, h) = t.size3().expect("hidden states are [batch, len, hidden]");
    t.view([b, n, heads, h / heads]).transpose(1, 2)
}

/// Softmax attention of `q` over `k` and `v` ([batch, heads, len, head_dim]) with `mask` (bool:
/// which keys each query may see; or float: added to the scores), back to [batch, len, hidden].
pub(super) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, dropout: f64) -> Tensor {
    let (b, heads, n, d) = q
        .size4()
        .expect("queries are [batch, heads, len, head_dim]");
    Tensor::scaled_dot_product_attention(q, k, v, Some(mask), dropout, false, None, false)
        .transpose(1, 2)
        .contiguous()
        .view([b, n, heads * d])
}

/// The rotary tables `(cos, sin)` for positions `0..len`, [len, head_dim] each, from the
/// frequencies `inv_freq` ([head_dim / 2]), in fp32 as transformers computes them.
pub(super) fn rotary_tables(inv_freq: &Tensor, len: i64) -> (Tensor, Tensor) {
    let positions = Tensor::arange(len, (tch::Kind::Float, inv_freq.device())).unsqueeze(1);
    let freqs = positions * inv_freq.unsqueeze(0);
    let angles = Tensor::cat(&[&freqs, &freqs], 1);
    (angles.cos(), angles.sin())
}

/// The rotary tables for positions `0..len` with transformers' default frequencies at base
/// `theta`, `1 / theta^(2j / head_dim)`.
pub(super) fn rotary(theta: f64, len: i64, head_dim: i64, device: tch::Device) -> (Tensor, Tensor) {
    let exponents =
        Tensor::arange_start_step(0, head_dim, 2, (tch::Kind::Float, device)) / head_dim as f64;
    rotary_tables(&Tensor::pow_scalar(theta, &exponents).reciprocal(), len)
}

/// Rotary positions in the rotate-half form: `x cos + [-x2, x1] sin` over the last dimension's
/// halves.
pub(super) fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size().last().expect("a head has a size") / 2;
    let turned = Tensor::cat(&[-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
    x * cos + turned * sin
}

/// What a BERT-style post-norm layer does after self-attention: the attention's output
/// projection, dropout, residual and LayerNorm, then the feed-forward block (exact GELU) with
/// its own. BERT, DeBERTa and MPNet differ only in the attention before it and the names.
pub(super) struct PostNorm {
    attn_out: Projection,
    attn_norm: LayerNorm,
    intermediate: Projection,
    out: Projection,
    out_norm: LayerNorm,
}

impl PostNorm {
    /// The attention output and its norm at `attn_out` and `attn_norm`; the feed-forward block
    /// under `layer` as `intermediate.dense` and `output.{dense,LayerNorm}`.
    pub(super) fn new(
        attn_out: nn::Path,
        attn_norm: nn::Path,
        layer: &nn::Path,
        cfg: &Config,
        eps: f64,
    ) -> PostNorm {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        PostNorm {
            attn_out: Projection::new(attn_out, h, h, ZEROS, cfg),
            attn_norm: LayerNorm::new(attn_norm, h, eps, true),
            intermediate: Projection::new(layer / "intermediate" / "dense", h, i, ZEROS, cfg),
            out: Projection::new(layer / "output" / "dense", i, h, ZEROS, cfg),
            out_norm: LayerNorm::new(layer / "output" / "LayerNorm", h, eps, true),
        }
    }

    /// The layer's output from its input `x` and its attention's `context`.
    pub(super) fn forward(
        &self,
        context: &Tensor,
        x: &Tensor,
        dropout: f64,
        train: bool,
    ) -> Tensor {
        let x = self.attn_norm.forward(
            &(self
                .attn_out
                .forward_t(context, train)
                .dropout(dropout, train)
                + x),
        );
        let y = self.intermediate.forward_t(&x, train).gelu("none");
        self.out_norm
            .forward(&(self.out.forward_t(&y, train).dropout(dropout, train) + x))
    }
}

/// A BERT-style layer: multi-head self-attention through separate query, key and value
/// projections, then [`PostNorm`]. BERT and MPNet differ only in the names and in the mask,
/// to which MPNet adds its relative position bias.
pub(super) struct SelfAttentionLayer {
    query: Projection,
    key: Projection,
    value: Projection,
    rest: PostNorm,
}

/// Where a family keeps a [`SelfAttentionLayer`]'s tensors under the layer's `attention` path:
/// each a sequence of path segments.
pub(super) struct AttentionNames {
    pub query: &'static [&'static str],
    pub key: &'static [&'static str],
    pub value: &'static [&'static str],
    pub output: &'static [&'static str],
    pub norm: &'static [&'static str],
}

impl SelfAttentionLayer {
    pub(super) fn new(layer: nn::Path, names: &AttentionNames, cfg: &Config, eps: f64) -> Self {
        let attn = &layer / "attention";
        let at = |segments: &[&str]| segments.iter().fold(attn.clone(), |p, s| &p / *s);
        let h = cfg.hidden_size;
        SelfAttentionLayer {
            query: Projection::new(at(names.query), h, h, ZEROS, cfg),
            key: Projection::new(at(names.key), h, h, ZEROS, cfg),
            value: Projection::new(at(names.value), h, h, ZEROS, cfg),
            rest: PostNorm::new(at(names.output), at(names.norm), &layer, cfg, eps),
        }
    }

    /// `dropout` is (attention probabilities, hidden states), applied only when training.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        heads: i64,
        (attention_dropout, hidden_dropout): (f64, f64),
        train: bool,
    ) -> Tensor {
        let [q, k, v] = Projection::forward_all([&self.query, &self.key, &self.value], x, train)
            .map(|t| split_heads(&t, heads));
        let dropout = if train { attention_dropout } else { 0.0 };
        let context = attention(&q, &k, &v, mask, dropout);
        self.rest.forward(&context, x, hidden_dropout, train)
    }
}

/// RoBERTa's classification head, which XLM-R and MPNet share: dropout, dense, tanh, dropout
/// and a one-logit projection over the first token.
pub(super) struct DenseTanhHead {
    dense: nn::Linear,
    out_proj: nn::Linear,
}

impl DenseTanhHead {
    /// `classifier.dense` and `classifier.out_proj` under `root`.
    pub(super) fn new(root: &nn::Path, hidden: i64, init: nn::LinearConfig) -> Self {
        DenseTanhHead {
            dense: nn::linear(root / "classifier" / "dense", hidden, hidden, init),
            out_proj: nn::linear(root / "classifier" / "out_proj", hidden, 1, init),
        }
    }

    pub(super) fn forward(&self, hidden: &Tensor, dropout: f64, train: bool) -> Tensor {
        let x = hidden.select(1, 0).dropout(dropout, train);
        let x = self.dense.forward(&x).tanh().dropout(dropout, train);
        self.out_proj.forward(&x).squeeze_dim(1)
    }
}

/// A token-type table as transformers' encoders read it: none when `type_vocab_size` is 0, and
/// a one-row table (XLM-R's and others') adds its one row whatever type ids the tokenizer's
/// template gives the second segment.
pub(super) struct TokenTypes {
    table: Option<nn::Embedding>,
    single: bool,
}

impl TokenTypes {
    /// `rows` rows of `width` at `p` (the table's own path).
    pub(super) fn new(p: nn::Path, rows: i64, width: i64) -> Self {
        TokenTypes {
            table: (rows > 0).then(|| nn::embedding(p, rows, width, EMBEDDING)),
            single: rows == 1,
        }
    }

    /// `x` plus each token's type embedding.
    pub(super) fn add(&self, x: Tensor, type_ids: &Tensor) -> Tensor {
        match &self.table {
            None => x,
            Some(table) if self.single => x + table.forward(&type_ids.zeros_like()),
            Some(table) => x + table.forward(type_ids),
        }
    }
}
