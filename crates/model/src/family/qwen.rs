//! The Qwen decoders as LLM rerankers, one implementation for both generations: Qwen3
//! (Qwen/Qwen3-Reranker-*) and Qwen2 (mixedbread-ai/mxbai-rerank-*-v2). The score of a prompted
//! (query, document) pair is the logit of the "relevant" answer token less that of the
//! "irrelevant" one at the last token ("yes"/"no" for Qwen3-Reranker, "1"/"0" for mxbai), so
//! that its sigmoid is the first's probability over the two, as the model cards, vLLM and
//! sentence-transformers compute it. Pre-norm layers with RMSNorm, grouped-query causal attention
//! with rotary positions, a SwiGLU MLP; the generations differ only as [`Variant`] says. Weight
//! names are the `*ForCausalLM`'s (`model.layers.N.self_attn.q_proj`, `lm_head`), so a saved
//! model is the checkpoint transformers loads.
use std::path::Path;

use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Kind as DType, Tensor};

use super::blocks::{apply_rotary, attention, rotary, split_heads};
use super::{unsupported, Network, Stack, EMBEDDING, ZEROS};
use crate::config::{Config, Kind};
use crate::lora::Projection;
use crate::ModelError;

/// The keys of a `Qwen2Config` or `Qwen3Config` beyond the sizes every family has, with their
/// defaults (the same in both).
#[derive(Deserialize)]
struct Keys {
    #[serde(default)]
    num_key_value_heads: Option<i64>,
    /// Qwen3 sets it apart from hidden_size / heads (0.6B: 128 against 64); Qwen2 reads it too
    /// when given.
    #[serde(default)]
    head_dim: Option<i64>,
    #[serde(default = "silu")]
    hidden_act: String,
    #[serde(default = "eps")]
    rms_norm_eps: f64,
    /// Where transformers 5 keeps the rotary base; Hub configs written before it give
    /// `rope_theta` and `rope_scaling` at the top level instead.
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    attention_dropout: f64,
    #[serde(default)]
    use_sliding_window: bool,
    /// The span a sliding layer attends over, in effect only under `use_sliding_window`.
    #[serde(default)]
    sliding_window: Option<i64>,
    /// Without `layer_types`, layers from this index on slide (when windows are in use).
    #[serde(default = "window_layers")]
    max_window_layers: i64,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    tie_word_embeddings: bool,
}

#[derive(Deserialize)]
struct RopeParameters {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
}

fn silu() -> String {
    "silu".into()
}
fn eps() -> f64 {
    1e-6
}
fn window_layers() -> i64 {
    28
}

/// The rotary base when the config names none, in both configs.
const THETA: f64 = 10_000.0;

/// The `config.json` key that says which reranker a checkpoint is, where its `architectures`
/// cannot: an mxbai-rerank-v2 checkpoint is a plain `Qwen2ForCausalLM`, like every Qwen2 language
/// model, which would load and score nothing meaningful (vLLM, likewise, needs it told).
/// transformers keeps an unknown key through `save_pretrained`, and finerank's save keeps it.
const RERANKER_KEY: &str = "reranker";

/// What sets one Qwen generation's reranker apart from the other's.
pub(super) struct Variant {
    /// Qwen2's q, k and v projections have a bias; Qwen3's have none.
    qkv_bias: bool,
    /// Qwen3 RMS-norms each query and key head before the rotation; Qwen2 does not.
    qk_norm: bool,
    /// The tokens whose logits make the score, [relevant, irrelevant], as the model card looks
    /// them up in the vocabulary.
    answers: [&'static str; 2],
    /// The [`RERANKER_KEY`] value a checkpoint must carry, where the family's plain language
    /// models are not rerankers; and the checkpoint this names, for the error.
    marker: Option<(&'static str, &'static str)>,
}

/// Qwen/Qwen3-Reranker-*: any `Qwen3ForCausalLM` is read as one (the model card's scheme).
pub(super) const QWEN3: Variant = Variant {
    qkv_bias: false,
    qk_norm: true,
    answers: ["yes", "no"],
    marker: None,
};

/// mixedbread-ai/mxbai-rerank-{base,large}-v2, scored as the mxbai-rerank package's
/// `MxbaiRerankV2` does: "1" less "0".
pub(super) const QWEN2: Variant = Variant {
    qkv_bias: true,
    qk_norm: false,
    answers: ["1", "0"],
    marker: Some((
        "mxbai-rerank-v2",
        "mixedbread-ai/mxbai-rerank-base-v2 or mxbai-rerank-large-v2",
    )),
};

/// RMSNorm as transformers computes it: the mean square in fp32, the weight applied after the
/// cast back to the input's dtype.
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, size: i64, eps: f64) -> RmsNorm {
        RmsNorm {
            weight: p.var("weight", &[size], nn::Init::Const(1.0)),
            eps,
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let x = xs.to_kind(DType::Float);
        let scale = (x.square().mean_dim(-1, true, DType::Float) + self.eps).rsqrt();
        &self.weight * (x * scale).to_kind(xs.kind())
    }
}

struct Layer {
    input_norm: RmsNorm,
    q_proj: Projection,
    k_proj: Projection,
    v_proj: Projection,
    o_proj: Projection,
    /// Qwen3's per-head norms, [query, key].
    qk_norm: Option<[RmsNorm; 2]>,
    post_attention_norm: RmsNorm,
    gate_proj: Projection,
    up_proj: Projection,
    down_proj: Projection,
}

impl Layer {
    fn new(p: nn::Path, cfg: &Config, sizes: &Sizes, eps: f64, variant: &Variant) -> Layer {
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, sizes.head_dim);
        let biased = |bias| nn::LinearConfig { bias, ..ZEROS };
        let qkv = |p: nn::Path, to| Projection::new(p, h, to, biased(variant.qkv_bias), cfg);
        let linear = |p: nn::Path, from, to| Projection::new(p, from, to, biased(false), cfg);
        let attn = &p / "self_attn";
        let mlp = &p / "mlp";
        Layer {
            input_norm: RmsNorm::new(&p / "input_layernorm", h, eps),
            q_proj: qkv(&attn / "q_proj", sizes.heads * d),
            k_proj: qkv(&attn / "k_proj", sizes.kv_heads * d),
            v_proj: qkv(&attn / "v_proj", sizes.kv_heads * d),
            o_proj: linear(&attn / "o_proj", sizes.heads * d, h),
            qk_norm: variant.qk_norm.then(|| {
                [
                    RmsNorm::new(&attn / "q_norm", d, eps),
                    RmsNorm::new(&attn / "k_norm", d, eps),
                ]
            }),
            post_attention_norm: RmsNorm::new(&p / "post_attention_layernorm", h, eps),
            gate_proj: linear(&mlp / "gate_proj", h, i),
            up_proj: linear(&mlp / "up_proj", h, i),
            down_proj: linear(&mlp / "down_proj", i, h),
        }
    }
}

struct Sizes {
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

pub(super) struct Qwen {
    sizes: Sizes,
    theta: f64,
    /// The position table's length, or a sliding layer's window when shorter: an input that fits
    /// in the window attends as with full causal attention, so windows never need applying.
    max_positions: i64,
    attention_dropout: f64,
    embed_tokens: nn::Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// `lm_head.weight`, [vocab, hidden]; absent when tied to the embeddings. Only its answer
    /// rows are ever multiplied, but the whole matrix is the checkpoint's, kept to save back.
    lm_head: Option<Tensor>,
    /// The rows of the answer tokens, [relevant, irrelevant].
    answers: Tensor,
}

/// The vocabulary ids of the answer tokens in the checkpoint's `tokenizer.json`, rows of the
/// output projection.
fn answer_ids(dir: &Path, vocab_size: i64, answers: [&str; 2]) -> Result<[i64; 2], ModelError> {
    let path = crate::tokenizer_path(dir);
    let tok = finerank_text::TextTokenizer::from_file(&path)
        .map_err(|e| ModelError::Invalid(e.to_string()))?;
    let id = |token: &str| match tok.token_id(token).map(i64::from) {
        Some(id) if id < vocab_size => Ok(id),
        found => Err(ModelError::Invalid(format!(
            "{}: token {token:?} is {}; this LLM reranker scores with the logits of the tokens \
             {:?} and {:?}, which must be rows of the vocab_size {vocab_size} output projection",
            path.display(),
            found.map_or("missing".into(), |id| format!("id {id}")),
            answers[0],
            answers[1],
        ))),
    };
    Ok([id(answers[0])?, id(answers[1])?])
}

impl Qwen {
    /// `root` holds `lm_head`, `p` the decoder (`model.`); `dir` the tokenizer that names the
    /// answer tokens.
    pub(super) fn new(
        root: &nn::Path,
        p: nn::Path,
        cfg: &Config,
        dir: &Path,
        variant: &Variant,
    ) -> Result<Qwen, ModelError> {
        let keys: Keys = cfg.family_keys()?;
        let family = cfg.family();
        if let Some((marker, checkpoints)) = variant.marker {
            let found = cfg.raw.get(RERANKER_KEY);
            if found.and_then(serde_json::Value::as_str) != Some(marker) {
                return Err(ModelError::Invalid(format!(
                    "{}: finerank reads a {} checkpoint as {checkpoints} only, which config.json \
                     says with \"{RERANKER_KEY}\": \"{marker}\" (found {}): its architectures \
                     are those of any {} language model, which has no score finerank could \
                     read. If this is one of them, add that key to its config.json (in a copy of \
                     the checkpoint: a Hugging Face cache's files are links to shared blobs)",
                    cfg.path.display(),
                    family.name(),
                    found.map_or("no such key".into(), ToString::to_string),
                    family.name(),
                )));
            }
        }
        // Other values of these keys change the arithmetic: the model would load and score wrong.
        let architecture = family.architecture(Kind::CrossEncoder);
        if !cfg.architectures.is_empty() && !cfg.architectures.iter().any(|a| a == architecture) {
            return Err(unsupported(
                cfg,
                "architectures",
                format!("{:?}", cfg.architectures),
                &format!(
                    "{architecture} (the reranker's causal LM, scored by its lm_head's {:?} and \
                     {:?} rows) only",
                    variant.answers[0], variant.answers[1]
                ),
            ));
        }
        if keys.hidden_act != "silu" {
            return Err(unsupported(
                cfg,
                "hidden_act",
                format!("{:?}", keys.hidden_act),
                "SiLU (\"silu\") only",
            ));
        }
        if keys.attention_bias {
            return Err(unsupported(
                cfg,
                "attention_bias",
                true,
                "the projections' biases as Qwen2 and Qwen3 ship them (attention_bias false) only",
            ));
        }
        let max_positions = max_positions(cfg, &keys)?;
        let theta = rope_theta(cfg, &keys)?;
        let heads = cfg.num_attention_heads;
        let kv_heads = keys.num_key_value_heads.unwrap_or(heads);
        if kv_heads <= 0 || heads % kv_heads != 0 {
            return Err(unsupported(
                cfg,
                "num_key_value_heads",
                kv_heads,
                "a divisor of num_attention_heads",
            ));
        }
        let sizes = Sizes {
            heads,
            kv_heads,
            head_dim: keys.head_dim.unwrap_or(cfg.hidden_size / heads),
        };
        let answers = answer_ids(dir, cfg.vocab_size, variant.answers)?;
        let answers = Tensor::from_slice(&answers).to_device(p.device());
        let embed_tokens = nn::embedding(
            &p / "embed_tokens",
            cfg.vocab_size,
            cfg.hidden_size,
            EMBEDDING,
        );
        // transformers ties the output projection to the embeddings only when the checkpoint has
        // no `lm_head` of its own (or an equal one): a distinct one it reads untied, as here.
        let tied =
            keys.tie_word_embeddings && !crate::checkpoint::has_tensor(dir, "lm_head.weight");
        let lm_head = (!tied).then(|| {
            (root / "lm_head").var(
                "weight",
                &[cfg.vocab_size, cfg.hidden_size],
                nn::Init::Const(0.0),
            )
        });
        let eps = keys.rms_norm_eps;
        Ok(Qwen {
            theta,
            max_positions,
            attention_dropout: keys.attention_dropout,
            embed_tokens,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(&p / "layers" / i, cfg, &sizes, eps, variant))
                .collect(),
            norm: RmsNorm::new(&p / "norm", cfg.hidden_size, eps),
            sizes,
            lm_head,
            answers,
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
        let Sizes {
            heads, kv_heads, ..
        } = self.sizes;
        let h = l.input_norm.forward(x);
        let q = split_heads(&l.q_proj.forward_t(&h, train), heads);
        let k = split_heads(&l.k_proj.forward_t(&h, train), kv_heads);
        // Qwen3 norms each head over head_dim before the rotation.
        let (q, k) = match &l.qk_norm {
            Some([q_norm, k_norm]) => (q_norm.forward(&q), k_norm.forward(&k)),
            None => (q, k),
        };
        let v = split_heads(&l.v_proj.forward_t(&h, train), kv_heads);
        // In the projections' dtype, as transformers casts them (bf16 under autocast).
        let (cos, sin) = (rope.0.to_kind(q.kind()), rope.1.to_kind(q.kind()));
        let (q, k) = (apply_rotary(&q, &cos, &sin), apply_rotary(&k, &cos, &sin));
        // Grouped-query attention: query head i reads key/value head i / (heads / kv_heads), the
        // order transformers' repeat_kv gives.
        let group = heads / kv_heads;
        let (k, v) = (
            k.repeat_interleave_self_int(group, 1, None),
            v.repeat_interleave_self_int(group, 1, None),
        );
        let dropout = if train { self.attention_dropout } else { 0.0 };
        let context = attention(&q, &k, &v, attend, dropout);
        let x = x + l.o_proj.forward_t(&context, train);
        let h = l.post_attention_norm.forward(&x);
        let gated = l.gate_proj.forward_t(&h, train).silu() * l.up_proj.forward_t(&h, train);
        x + l.down_proj.forward_t(&gated, train)
    }
}

/// The longest input: the position table, or a sliding layer's window when shorter. transformers
/// drops the window unless `use_sliding_window`; a layer then slides when `layer_types` says so,
/// or without them from `max_window_layers` on.
fn max_positions(cfg: &Config, keys: &Keys) -> Result<i64, ModelError> {
    let slides = match &keys.layer_types {
        Some(types) => {
            let known = ["full_attention", "sliding_attention"];
            if let Some(other) = types.iter().find(|t| !known.contains(&t.as_str())) {
                return Err(unsupported(
                    cfg,
                    "layer_types",
                    format!("{other:?}"),
                    "\"full_attention\" and \"sliding_attention\" layers only",
                ));
            }
            types.iter().any(|t| t == "sliding_attention")
        }
        None => cfg.num_hidden_layers > keys.max_window_layers,
    };
    match keys
        .sliding_window
        .filter(|_| keys.use_sliding_window && slides)
    {
        Some(window) if window < 1 => Err(unsupported(
            cfg,
            "sliding_window",
            window,
            "a window of at least one token",
        )),
        Some(window) => Ok(window.min(cfg.max_position_embeddings)),
        None => Ok(cfg.max_position_embeddings),
    }
}

/// The rotary base, refusing any rotary scheme but transformers' default.
fn rope_theta(cfg: &Config, keys: &Keys) -> Result<f64, ModelError> {
    if let Some(scaling) = keys.rope_scaling.as_ref().filter(|s| !s.is_null()) {
        return Err(unsupported(
            cfg,
            "rope_scaling",
            scaling,
            "the default rotary embedding (rope_scaling null) only",
        ));
    }
    let Some(params) = &keys.rope_parameters else {
        return Ok(keys.rope_theta.unwrap_or(THETA));
    };
    let kind = params.rope_type.as_deref().unwrap_or("default");
    if kind != "default" {
        return Err(unsupported(
            cfg,
            "rope_parameters.rope_type",
            format!("{kind:?}"),
            "the default rotary embedding only",
        ));
    }
    if let Some(f) = params.partial_rotary_factor.filter(|&f| f != 1.0) {
        return Err(unsupported(
            cfg,
            "rope_parameters.partial_rotary_factor",
            f,
            "rotation of the whole head (1.0) only",
        ));
    }
    Ok(params.rope_theta.or(keys.rope_theta).unwrap_or(THETA))
}

impl Network for Qwen {
    fn stack<'a>(
        &'a self,
        ids: &Tensor,
        _type_ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Stack<'a> {
        let (_, len) = ids.size2().expect("ids are [batch, len]");
        // Positions count from 0 in every row: padding sits after the real tokens, where causal
        // attention keeps it from every real token.
        let rope = rotary(self.theta, len, self.sizes.head_dim, ids.device());
        // [batch, 1, len, len]: a query sees the real keys at or before it. A padding query sees
        // the real tokens too, so no row of the softmax is empty.
        let causal = Tensor::ones([len, len], (DType::Bool, ids.device())).tril(0);
        let attend = causal
            .unsqueeze(0)
            .unsqueeze(0)
            .logical_and(&mask.unsqueeze(1).unsqueeze(1));
        Stack {
            embedded: self.embed_tokens.forward(ids),
            layers: self.layers.len(),
            layer: Box::new(move |i, x| self.layer(&self.layers[i], x, &rope, &attend, train)),
        }
    }

    /// The "yes" logit less the "no" logit at each row's last real token. The final norm is per
    /// token, so it runs on those rows alone; and two rows of the output projection give exactly
    /// the two logits the full vocabulary's would.
    fn classify(&self, hidden: &Tensor, mask: &Tensor, _train: bool) -> Tensor {
        let last = mask.sum_dim_intlist(1, false, DType::Int64) - 1;
        let width = *hidden.size().last().expect("hidden states have a size");
        let at = last.view([-1, 1, 1]).expand([-1, 1, width], false);
        let x = self
            .norm
            .forward(&hidden.gather(1, &at, false).squeeze_dim(1));
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens.ws);
        let logits = x.matmul(&head.index_select(0, &self.answers).tr());
        logits.select(1, 0) - logits.select(1, 1)
    }

    fn max_tokens(&self) -> usize {
        self.max_positions.max(1) as usize
    }
}
