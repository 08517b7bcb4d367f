//! LoRA (low-rank adapters) as PEFT implements it, on every family's encoder projections.
//!
//! An adapted projection computes `W x + b + (alpha / r) · B A dropout(x)`, with `W` and `b`
//! frozen and `A` [r, in], `B` [out, r] trained. The adapters live in the model's VarStore under
//! the names PEFT saves them under (less its `base_model.model.` prefix): `<module>.lora_A.weight`
//! and `<module>.lora_B.weight`, `<module>` being the projection's own path, so that an adapter
//! export is a filter of the store and a PEFT adapter loads by the same names.
use std::path::{Path, PathBuf};

use tch::nn;
use tch::Tensor;

use crate::config::{Config, Kind};
use crate::ModelError;

/// The file PEFT reads an adapter's settings from; its presence makes a directory an adapter.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The file of an adapter's tensors.
pub(crate) const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What PEFT puts before a module's path in the keys of `adapter_model.safetensors`.
pub(crate) const PEFT_PREFIX: &str = "base_model.model.";

/// Which projections get adapters, and their shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora {
    /// `r`: the adapters' inner dimension.
    pub rank: i64,
    /// The update is scaled by `alpha / rank`, PEFT's default scaling.
    pub alpha: f64,
    /// Dropout on an adapter's input while training.
    pub dropout: f64,
    /// Projections to adapt, matched as PEFT matches `target_modules`: a projection whose path
    /// is a name or ends with `.name`. Empty: every attention and feed-forward projection.
    pub targets: Vec<String>,
}

impl Lora {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether the projection at `path` gets an adapter.
    fn adapts(&self, path: &str) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|t| matches(path, t))
    }
}

/// PEFT's rule for a `target_modules` entry.
pub(crate) fn matches(path: &str, target: &str) -> bool {
    path == target
        || path
            .strip_suffix(target)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether a VarStore tensor is an adapter's.
pub(crate) fn is_adapter(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

/// The projection an adapter tensor `<module>.lora_A.weight` belongs to, if `name` is an `A`.
pub(crate) fn adapted_module(name: &str) -> Option<&str> {
    name.strip_suffix(".lora_A.weight")
}

/// An encoder's linear projection, with an adapter when the model is built with LoRA for it.
pub(crate) struct Projection {
    base: nn::Linear,
    adapter: Option<Adapter>,
}

struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f64,
}

impl Projection {
    /// A linear layer at `p` as `nn::linear` builds it, plus an adapter (all zeros, for the
    /// model to initialise or read over) when `cfg.lora` targets `p`.
    pub(crate) fn new(
        p: nn::Path,
        inputs: i64,
        outputs: i64,
        init: nn::LinearConfig,
        cfg: &Config,
    ) -> Projection {
        let path = p.components().collect::<Vec<_>>().join(".");
        let adapter = cfg.lora.as_ref().filter(|l| l.adapts(&path)).map(|l| {
            let zeros = nn::Init::Const(0.0);
            Adapter {
                a: (&p / "lora_A").var("weight", &[l.rank, inputs], zeros),
                b: (&p / "lora_B").var("weight", &[outputs, l.rank], zeros),
                scale: l.scale(),
                dropout: l.dropout,
            }
        });
        Projection {
            base: nn::linear(p, inputs, outputs, init),
            adapter,
        }
    }
}

impl Projection {
    /// `train` turns the adapter's dropout on.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = crate::int8::linear(&self.base, x);
        match &self.adapter {
            None => y,
            Some(ad) => {
                let low = x.dropout(ad.dropout, train).matmul(&ad.a.tr());
                y + low.matmul(&ad.b.tr()) * ad.scale
            }
        }
    }

    /// Projections of the same `x`, such as a layer's query, key and value: in int8 as one
    /// product, `x` quantized once (see `int8::linears`); otherwise each on its own.
    pub(crate) fn forward_all<const N: usize>(
        projections: [&Projection; N],
        x: &Tensor,
        train: bool,
    ) -> [Tensor; N] {
        if projections.iter().all(|p| p.adapter.is_none()) {
            let bases: Vec<&nn::Linear> = projections.iter().map(|p| &p.base).collect();
            if let Some(ys) = crate::int8::linears(&bases, x) {
                return ys.try_into().expect("one output a projection");
            }
        }
        projections.map(|p| p.forward_t(x, train))
    }
}

/// PEFT's initialisation of a fresh `A`: `kaiming_uniform_(a=sqrt(5))`, which is uniform in
/// ±1/sqrt(in). `B` stays zero, so a fresh adapter leaves the model's outputs as they were.
/// The draws go in name order, so that the same seed gives the same adapters.
pub(crate) fn init_fresh(vs: &nn::VarStore) {
    let mut fresh: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| adapted_module(name).is_some())
        .collect();
    fresh.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut a) in fresh {
            let bound = 1.0 / (a.size()[1] as f64).sqrt();
            let _ = a.uniform_(-bound, bound);
        }
    });
}

/// What finerank reads of a PEFT `adapter_config.json`, and writes into one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct AdapterConfig {
    pub base_model_name_or_path: String,
    pub peft_type: String,
    /// `SEQ_CLS` for a cross-encoder, `FEATURE_EXTRACTION` for a bi-encoder, `CAUSAL_LM` for an
    /// LLM reranker (it scores with the language model's own output).
    pub task_type: String,
    pub r: i64,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    /// PEFT also takes a string here, a regex over module paths; finerank writes and reads lists.
    pub target_modules: Vec<String>,
    /// The head's modules, trained whole and saved beside the adapters.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default = "no_bias")]
    pub bias: String,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

fn no_bias() -> String {
    "none".into()
}

const SEQ_CLS: &str = "SEQ_CLS";
const FEATURE_EXTRACTION: &str = "FEATURE_EXTRACTION";
const CAUSAL_LM: &str = "CAUSAL_LM";

impl AdapterConfig {
    /// `decoder`: the model is an LLM reranker, whose adapters PEFT loads over a causal LM.
    pub(crate) fn new(
        base: &Path,
        kind: Kind,
        decoder: bool,
        lora: &Lora,
        targets: Vec<String>,
        head: Vec<String>,
    ) -> AdapterConfig {
        AdapterConfig {
            base_model_name_or_path: base.display().to_string(),
            peft_type: "LORA".into(),
            task_type: match (kind, decoder) {
                (_, true) => CAUSAL_LM,
                (Kind::CrossEncoder, false) => SEQ_CLS,
                (Kind::BiEncoder, false) => FEATURE_EXTRACTION,
            }
            .into(),
            r: lora.rank,
            lora_alpha: lora.alpha,
            lora_dropout: lora.dropout,
            target_modules: targets,
            modules_to_save: (kind == Kind::CrossEncoder && !head.is_empty()).then_some(head),
            bias: no_bias(),
            use_rslora: false,
            use_dora: false,
            fan_in_fan_out: false,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
        }
    }

    /// The adapter directory `dir`'s settings; refuses the PEFT options finerank does not
    /// implement, which would make it score differently from PEFT.
    pub(crate) fn read(dir: &Path) -> Result<AdapterConfig, ModelError> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let cfg: AdapterConfig = serde_json::from_str(&text)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        let refuse = |what: &str| {
            Err(ModelError::Invalid(format!(
                "{}: {what} is not supported: finerank reads plain LoRA adapters (peft_type \
                 LORA, bias \"none\", no rslora, DoRA, fan_in_fan_out or per-module ranks)",
                path.display()
            )))
        };
        if cfg.peft_type != "LORA" {
            return refuse(&format!("peft_type {:?}", cfg.peft_type));
        }
        if cfg.bias != "none" {
            return refuse(&format!("bias {:?}", cfg.bias));
        }
        if cfg.use_rslora || cfg.use_dora || cfg.fan_in_fan_out {
            return refuse("use_rslora, use_dora or fan_in_fan_out");
        }
        if !cfg.rank_pattern.is_empty() || !cfg.alpha_pattern.is_empty() {
            return refuse("rank_pattern or alpha_pattern");
        }
        cfg.kind()?;
        Ok(cfg)
    }

    pub(crate) fn kind(&self) -> Result<Kind, ModelError> {
        match self.task_type.as_str() {
            SEQ_CLS | CAUSAL_LM => Ok(Kind::CrossEncoder),
            FEATURE_EXTRACTION => Ok(Kind::BiEncoder),
            other => Err(ModelError::Invalid(format!(
                "{ADAPTER_CONFIG}: task_type {other:?}; finerank reads {SEQ_CLS} (a \
                 cross-encoder), {FEATURE_EXTRACTION} (a bi-encoder) and {CAUSAL_LM} (an LLM \
                 reranker)"
            ))),
        }
    }

    pub(crate) fn lora(&self) -> Lora {
        Lora {
            rank: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            targets: self.target_modules.clone(),
        }
    }

    /// The base checkpoint's directory: `base_model_name_or_path`, relative to the adapter's
    /// own directory when it is not absolute.
    pub(crate) fn base_dir(&self, dir: &Path) -> Result<PathBuf, ModelError> {
        let base = dir.join(&self.base_model_name_or_path);
        match base.join("config.json").is_file() {
            true => Ok(base),
            false => Err(ModelError::Invalid(format!(
                "{}: base_model_name_or_path {:?} is not a checkpoint directory here; finerank \
                 loads an adapter over a local base (set it to the base's path)",
                dir.join(ADAPTER_CONFIG).display(),
                self.base_model_name_or_path
            ))),
        }
    }
}

/// Refuses a rank below 1, and a target that names no projection of the model, listing those
/// it has.
pub(crate) fn check_targets(
    vs: &nn::VarStore,
    lora: &Lora,
    cfg: &Config,
    kind: Kind,
    dir: &Path,
) -> Result<(), ModelError> {
    if lora.rank < 1 {
        return Err(ModelError::Invalid(format!(
            "LoRA rank {} must be at least 1",
            lora.rank
        )));
    }
    let adapted = adapted_modules(vs);
    let unknown: Vec<&str> = lora
        .targets
        .iter()
        .filter(|t| !adapted.iter().any(|m| matches(m, t)))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    // Only to name them: the same network with every projection adapted, on the CPU.
    let every = Config {
        lora: Some(Lora {
            targets: Vec::new(),
            ..lora.clone()
        }),
        ..cfg.clone()
    };
    let scratch = nn::VarStore::new(tch::Device::Cpu);
    let head = crate::family::ZEROS;
    cfg.family()
        .build(&scratch.root(), &every, kind, head, dir)?;
    let mut names: Vec<String> = Vec::new();
    for module in adapted_modules(&scratch) {
        let name = within_layer(&module).to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Err(ModelError::Invalid(format!(
        "LoRA target(s) {} match no projection of this {} model; its projections are {} (a \
         target matches each projection whose path ends with it, as PEFT's target_modules do)",
        unknown.join(", "),
        cfg.family().name(),
        names.join(", ")
    )))
}

/// The paths of the projections that carry adapters, in name order.
pub(crate) fn adapted_modules(vs: &nn::VarStore) -> Vec<String> {
    let mut modules: Vec<String> = vs
        .variables()
        .keys()
        .filter_map(|n| adapted_module(n).map(str::to_string))
        .collect();
    modules.sort();
    modules
}

/// A projection's path below its layer (`attention.self.query` of
/// `bert.encoder.layer.0.attention.self.query`): the name that targets it in every layer.
fn within_layer(path: &str) -> &str {
    let parts: Vec<&str> = path.split('.').collect();
    let layer = parts
        .windows(2)
        .position(|w| matches!(w[0], "layer" | "layers") && w[1].parse::<usize>().is_ok());
    match layer {
        Some(at) => {
            let skip: usize = parts[..at + 2].iter().map(|p| p.len() + 1).sum();
            &path[skip..]
        }
        None => path,
    }
}

/// Reads `adapter_model.safetensors` of the adapter directory `dir` over the model's adapters
/// and head. Every adapter must be there; a tensor the model has no place for is refused.
pub(crate) fn load_adapter(vs: &nn::VarStore, dir: &Path) -> Result<(), ModelError> {
    let path = dir.join(ADAPTER_WEIGHTS);
    let vars = vs.variables();
    let mut read = 0;
    tch::no_grad(|| -> Result<(), ModelError> {
        for (key, src) in Tensor::read_safetensors(&path)? {
            let name = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key);
            let Some(mut var) = vars.get(name).map(Tensor::shallow_clone) else {
                return Err(ModelError::Invalid(format!(
                    "{}: tensor {key} has no place in the model adapter_config.json describes",
                    path.display()
                )));
            };
            if src.size() != var.size() {
                return Err(ModelError::Invalid(format!(
                    "{}: tensor {key} has shape {:?}, the model {:?}",
                    path.display(),
                    src.size(),
                    var.size()
                )));
            }
            var.copy_(&src.to_kind(var.kind()).to_device(var.device()));
            read += is_adapter(name) as usize;
        }
        Ok(())
    })?;
    let adapters = vars.keys().filter(|n| is_adapter(n)).count();
    match read == adapters {
        true => Ok(()),
        false => Err(ModelError::Invalid(format!(
            "{}: {read} of the {adapters} adapter tensors adapter_config.json implies",
            path.display()
        ))),
    }
}
