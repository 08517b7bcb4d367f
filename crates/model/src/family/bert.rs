//! BERT and XLM-RoBERTa (and RoBERTa): absolute position embeddings, post-norm layers, exact
//! GELU. Weight names match Hugging Face's, so checkpoints load and save without a table.
use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Kind as DType, Tensor};

use super::blocks::{AttentionNames, DenseTanhHead, SelfAttentionLayer, TokenTypes};
use super::{defaults, exact_gelu, unsupported, LayerNorm, Network, Stack, EMBEDDING};
use crate::config::Config;
use crate::ModelError;

/// The keys of a BERT or XLM-R `config.json` beyond the sizes every family has.
#[derive(Deserialize)]
struct Keys {
    #[serde(default = "defaults::one")]
    type_vocab_size: i64,
    #[serde(default = "defaults::eps_1e12")]
    layer_norm_eps: f64,
    #[serde(default = "defaults::gelu")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default = "defaults::dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "defaults::dropout")]
    attention_probs_dropout_prob: f64,
}

pub(super) struct Bert {
    /// XLM-R numbers positions from `pad_token_id + 1`.
    roberta: bool,
    pad_id: i64,
    max_positions: i64,
    heads: i64,
    hidden_dropout: f64,
    attention_dropout: f64,
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: TokenTypes,
    norm: LayerNorm,
    layers: Vec<SelfAttentionLayer>,
    head: Option<Head>,
}

const NAMES: AttentionNames = AttentionNames {
    query: &["self", "query"],
    key: &["self", "key"],
    value: &["self", "value"],
    output: &["output", "dense"],
    norm: &["output", "LayerNorm"],
};

enum Head {
    /// BertForSequenceClassification: tanh pooler over [CLS], then a linear layer.
    Bert {
        pooler: nn::Linear,
        classifier: nn::Linear,
    },
    /// XLMRobertaForSequenceClassification.
    Roberta(DenseTanhHead),
}

impl Bert {
    pub(super) fn new(
        root: &nn::Path,
        p: nn::Path,
        cfg: &Config,
        roberta: bool,
        head: Option<nn::LinearConfig>,
    ) -> Result<Bert, ModelError> {
        let keys: Keys = cfg.family_keys()?;
        // Other values of these keys change the arithmetic: the model would load and score wrong.
        exact_gelu(cfg, "hidden_act", &keys.hidden_act)?;
        if let Some(kind) = keys
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(unsupported(
                cfg,
                "position_embedding_type",
                format!("{kind:?}"),
                "absolute position embeddings only",
            ));
        }
        let h = cfg.hidden_size;
        let emb = &p / "embeddings";
        let eps = keys.layer_norm_eps;
        let head = head.map(|init| match roberta {
            false => Head::Bert {
                pooler: nn::linear(&p / "pooler" / "dense", h, h, init),
                classifier: nn::linear(root / "classifier", h, 1, init),
            },
            true => Head::Roberta(DenseTanhHead::new(root, h, init)),
        });
        Ok(Bert {
            roberta,
            pad_id: cfg.pad_token_id,
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
            token_type: TokenTypes::new(&emb / "token_type_embeddings", keys.type_vocab_size, h),
            norm: LayerNorm::new(&emb / "LayerNorm", h, eps, true),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| SelfAttentionLayer::new(&p / "encoder" / "layer" / i, &NAMES, cfg, eps))
                .collect(),
            head,
        })
    }
}

impl Network for Bert {
    fn stack<'a>(
        &'a self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Stack<'a> {
        let (_, len) = ids.size2().expect("ids are [batch, len]");
        let positions = match self.roberta {
            false => Tensor::arange(len, (DType::Int64, ids.device())).unsqueeze(0),
            // RoBERTa numbers real tokens from pad_id + 1 and gives padding the pad position.
            true => {
                let m = mask.to_kind(DType::Int64);
                m.cumsum(1, DType::Int64) * &m + self.pad_id
            }
        };
        let x = self.word.forward(ids) + self.position.forward(&positions);
        let x = self.token_type.add(x, type_ids);
        // [batch, 1, 1, len]: every query position may attend to every real key.
        let attend = mask.unsqueeze(1).unsqueeze(1);
        let dropout = (self.attention_dropout, self.hidden_dropout);
        Stack {
            embedded: self.norm.forward(&x).dropout(self.hidden_dropout, train),
            layers: self.layers.len(),
            layer: Box::new(move |i, x| {
                self.layers[i].forward(x, &attend, self.heads, dropout, train)
            }),
        }
    }

    fn classify(&self, hidden: &Tensor, _mask: &Tensor, train: bool) -> Tensor {
        match self
            .head
            .as_ref()
            .expect("classify runs on a cross-encoder")
        {
            Head::Bert { pooler, classifier } => {
                let pooled = pooler
                    .forward(&hidden.select(1, 0))
                    .tanh()
                    .dropout(self.hidden_dropout, train);
                classifier.forward(&pooled).squeeze_dim(1)
            }
            Head::Roberta(head) => head.forward(hidden, self.hidden_dropout, train),
        }
    }

    /// XLM-R counts positions from `pad_token_id + 1`, so its window is two shorter than the table.
    fn max_tokens(&self) -> usize {
        let n = match self.roberta {
            false => self.max_positions,
            true => self.max_positions - self.pad_id - 1,
        };
        n.max(1) as usize
    }
}
