//! The transformer encoder shared by BERT and XLM-RoBERTa, with weight names that match
//! Hugging Face's so checkpoints load and save without a conversion table.
use tch::nn::{self, Module};
use tch::{Kind as DType, Tensor};

use crate::config::{Config, Family};

pub(crate) struct Encoder {
    family: Family,
    pad_id: i64,
    heads: i64,
    hidden_dropout: f64,
    attention_dropout: f64,
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    /// One-row token-type tables (XLM-R) take no segment ids: the tokenizer's may say 1.
    single_segment: bool,
    norm: nn::LayerNorm,
    layers: Vec<Layer>,
}

struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    out: nn::Linear,
    out_norm: nn::LayerNorm,
}

/// Every encoder tensor is read from the checkpoint over its initial value, so it starts as
/// zeros: a random initialisation would only cost time and draw from libtorch's generator,
/// which a fine-tune in another thread may hold (see `crate::seeded`).
pub(crate) const LINEAR: nn::LinearConfig = nn::LinearConfig {
    ws_init: nn::Init::Const(0.0),
    bs_init: Some(nn::Init::Const(0.0)),
    bias: true,
};
const EMBEDDING: nn::EmbeddingConfig = nn::EmbeddingConfig {
    sparse: false,
    scale_grad_by_freq: false,
    ws_init: nn::Init::Const(0.0),
    padding_idx: -1,
};

fn layer_norm(p: nn::Path, cfg: &Config) -> nn::LayerNorm {
    let c = nn::LayerNormConfig {
        eps: cfg.layer_norm_eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![cfg.hidden_size], c)
}

impl Layer {
    fn new(p: nn::Path, cfg: &Config) -> Layer {
        let h = cfg.hidden_size;
        let lin = LINEAR;
        let attn = &p / "attention";
        Layer {
            query: nn::linear(&attn / "self" / "query", h, h, lin),
            key: nn::linear(&attn / "self" / "key", h, h, lin),
            value: nn::linear(&attn / "self" / "value", h, h, lin),
            attn_out: nn::linear(&attn / "output" / "dense", h, h, lin),
            attn_norm: layer_norm(&attn / "output" / "LayerNorm", cfg),
            intermediate: nn::linear(&p / "intermediate" / "dense", h, cfg.intermediate_size, lin),
            out: nn::linear(&p / "output" / "dense", cfg.intermediate_size, h, lin),
            out_norm: layer_norm(&p / "output" / "LayerNorm", cfg),
        }
    }
}

impl Encoder {
    pub(crate) fn new(p: nn::Path, cfg: &Config, family: Family) -> Encoder {
        let h = cfg.hidden_size;
        let emb = &p / "embeddings";
        let e = EMBEDDING;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(&p / "encoder" / "layer" / i, cfg))
            .collect();
        Encoder {
            family,
            pad_id: cfg.pad_token_id,
            heads: cfg.num_attention_heads,
            hidden_dropout: cfg.hidden_dropout_prob,
            attention_dropout: cfg.attention_probs_dropout_prob,
            word: nn::embedding(&emb / "word_embeddings", cfg.vocab_size, h, e),
            position: nn::embedding(
                &emb / "position_embeddings",
                cfg.max_position_embeddings,
                h,
                e,
            ),
            token_type: nn::embedding(&emb / "token_type_embeddings", cfg.type_vocab_size, h, e),
            single_segment: cfg.type_vocab_size == 1,
            norm: layer_norm(&emb / "LayerNorm", cfg),
            layers,
        }
    }

    /// `ids`, `type_ids`: [batch, len] int64; `mask`: [batch, len] bool, true on real tokens.
    /// Returns the last hidden states, [batch, len, hidden].
    pub(crate) fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Tensor {
        let (_, len) = ids.size2().expect("ids are [batch, len]");
        let positions = match self.family {
            Family::Bert => Tensor::arange(len, (DType::Int64, ids.device())).unsqueeze(0),
            // RoBERTa numbers real tokens from pad_id + 1 and gives padding the pad position.
            Family::XlmRoberta => {
                let m = mask.to_kind(DType::Int64);
                m.cumsum(1, DType::Int64) * &m + self.pad_id
            }
        };
        let segments = if self.single_segment {
            type_ids.zeros_like()
        } else {
            type_ids.shallow_clone()
        };
        let x = self.word.forward(ids)
            + self.position.forward(&positions)
            + self.token_type.forward(&segments);
        let mut x = self.norm.forward(&x).dropout(self.hidden_dropout, train);
        // [batch, 1, 1, len]: every query position may attend to every real key.
        let attend = mask.unsqueeze(1).unsqueeze(1);
        for layer in &self.layers {
            x = self.layer(layer, &x, &attend, train);
        }
        x
    }

    fn layer(&self, l: &Layer, x: &Tensor, attend: &Tensor, train: bool) -> Tensor {
        let (b, n, h) = x.size3().expect("hidden states are [batch, len, hidden]");
        let split = |t: Tensor| t.view([b, n, self.heads, h / self.heads]).transpose(1, 2);
        let q = split(l.query.forward(x));
        let k = split(l.key.forward(x));
        let v = split(l.value.forward(x));
        let dropout = if train { self.attention_dropout } else { 0.0 };
        let ctx = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(attend),
            dropout,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .contiguous()
        .view([b, n, h]);
        let x = l
            .attn_norm
            .forward(&(l.attn_out.forward(&ctx).dropout(self.hidden_dropout, train) + x));
        let y = l.intermediate.forward(&x).gelu("none");
        l.out_norm
            .forward(&(l.out.forward(&y).dropout(self.hidden_dropout, train) + x))
    }
}
