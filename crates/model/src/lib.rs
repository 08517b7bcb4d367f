//! The compute backend of finerank: rerankers on libtorch (encoders, and decoder LLM rerankers),
//! one module per family.
//!
//! A [`Model`] is loaded from a Hugging Face checkpoint directory (`config.json`,
//! `model.safetensors`, `tokenizer.json`) as a cross-encoder or a bi-encoder, runs inference on
//! already-tokenized inputs, exposes its tensors for training, and saves itself back in the same
//! layout so that transformers and sentence-transformers load the result. Nothing above this
//! crate sees a tensor except the training loop.
mod attention;
mod base_dtype;
mod checkpoint;
mod config;
mod family;
mod int8;
mod lora;
mod precision;
mod sentence;

use std::borrow::Borrow;
use std::path::{Path, PathBuf};

use finerank_text::Encoded;
use tch::nn;
use tch::{Device, Kind as DType, Tensor};

pub use base_dtype::BaseDtype;
use config::Config;
pub use config::{Family, Kind};
use family::Network;
pub use lora::{Lora, ADAPTER_CONFIG};
pub use precision::Precision;
use sentence::Modules;
pub use sentence::{module_folders, Role};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ModelError {
        ModelError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Where the tensors live. `Auto` picks CUDA when libtorch sees a GPU; `Cuda(n)` is the nth
/// GPU libtorch sees (one training worker per GPU: `--device cuda:1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<Device, ModelError> {
        let device = match self {
            DeviceChoice::Auto => Device::cuda_if_available(),
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda(n) if n < tch::Cuda::device_count().max(0) as usize => {
                Device::Cuda(n)
            }
            DeviceChoice::Cuda(n) => {
                return Err(ModelError::Invalid(format!(
                    "--device cuda:{n}: libtorch sees {} CUDA device(s); use --device cpu, or \
                     a GPU it sees (cuda:0 is the first)",
                    tch::Cuda::device_count()
                )))
            }
        };
        if device.is_cuda() {
            attention::avoid_cudnn_kernel();
        }
        Ok(device)
    }
}

/// libtorch's intra-op thread count (0 leaves libtorch's default). Threads that have not run
/// libtorch work yet take it up; see [`set_threads_here`] for one thread's own count.
pub fn set_threads(n: usize) {
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
}

/// The intra-op thread count of libtorch work that the calling thread starts, whatever other
/// threads use: libtorch parallelizes with OpenMP, whose thread count belongs to each thread.
/// libtorch sets a thread's count from the process-wide one at its first parallel operation,
/// so this makes that happen first and then overrides it.
pub fn set_threads_here(n: usize) {
    let _ = tch::get_num_threads();
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
}

/// The intra-op thread count of libtorch work the calling thread starts.
pub fn threads_here() -> usize {
    tch::get_num_threads() as usize
}

/// libtorch has one random generator per device for the whole process. Runs `f` with it seeded
/// with `seed` and no other `seeded` call in between, so that the numbers `f` draws (dropout
/// masks, a fresh head's weights) depend on `seed` alone, whatever other threads run: two
/// fine-tunes side by side each repeat the run they would make alone. Loading a checkpoint
/// draws nothing (its tensors start as zeros and are read over), so serving never disturbs a
/// generator a run holds.
pub fn seeded<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic while holding it leaves no state behind worth refusing: the next caller reseeds.
    let _held = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    f()
}

pub struct Model {
    vs: nn::VarStore,
    network: Box<dyn Network>,
    /// A bi-encoder's pooling, projections and prompts.
    modules: Option<Modules>,
    config: Config,
    kind: Kind,
    source: PathBuf,
    window: usize,
    bf16: bool,
    /// The adapted projections' frozen weights are held in bf16 (see [`BaseDtype`]).
    base_bf16: bool,
    /// Under `Precision::Int8`, the projections quantized to int8, made once and kept with the model.
    int8: Option<int8::Weights>,
    /// Tensors the checkpoint had that this model does not use (a bi-encoder's pooler, buffers);
    /// written back on save so nothing the user had is lost.
    extras: Vec<(String, Tensor)>,
    /// The checkpoint's floating-point dtype, which saving keeps: training runs in fp32, but a
    /// model shipped in fp16 or bf16 comes back in the same dtype and size.
    dtype: DType,
}

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub device: DeviceChoice,
    /// Build as this kind instead of the checkpoint's own (e.g. a cross-encoder from a bi-encoder
    /// base: the new classification head starts from a fresh initialisation).
    pub kind: Option<Kind>,
    pub precision: Precision,
    /// Adds fresh LoRA adapters to the encoder's projections and leaves only them and a
    /// cross-encoder's head trainable.
    pub lora: Option<Lora>,
    /// Freezes the embeddings and the first this many encoder layers; the layers above and the
    /// head train in full. With `lora`, the base is frozen whole anyway.
    pub frozen_layers: usize,
    /// With LoRA: how the frozen weights of the adapted projections are held.
    pub base_dtype: BaseDtype,
}

impl Model {
    /// Loads a checkpoint directory, or a PEFT LoRA adapter directory (`adapter_config.json`)
    /// over the local base checkpoint it names.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model, ModelError> {
        Model::load_sharing(dir, opts, None)
    }

    /// Loads the adapter directory `dir` over `base`, a model already loaded from the checkpoint
    /// the adapter names: the new model reads `base`'s encoder weights where they are, so
    /// adapters served over one base hold one copy of it (a cross-encoder's head, which each
    /// adapter brings, is its own). A base of another kind or on another device has no
    /// tensors to share: the weights are then read from disk.
    pub fn load_adapter_over(
        dir: &Path,
        opts: &LoadOptions,
        base: &Model,
    ) -> Result<Model, ModelError> {
        Model::load_sharing(dir, opts, Some(base))
    }

    /// The base checkpoint the adapter directory `dir` names; `None` when `dir` is no adapter.
    pub fn adapter_base(dir: &Path) -> Result<Option<PathBuf>, ModelError> {
        match dir.join(ADAPTER_CONFIG).is_file() {
            true => lora::AdapterConfig::read(dir)?.base_dir(dir).map(Some),
            false => Ok(None),
        }
    }

    /// The checkpoint directory the model's weights (a LoRA adapter's base's) came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    fn load_sharing(
        dir: &Path,
        opts: &LoadOptions,
        shared: Option<&Model>,
    ) -> Result<Model, ModelError> {
        let adapter = match dir.join(ADAPTER_CONFIG).is_file() {
            true => Some(lora::AdapterConfig::read(dir)?),
            false => None,
        };
        let base = match &adapter {
            Some(a) if opts.lora.is_some() => {
                return Err(ModelError::Invalid(format!(
                    "{}: already a LoRA adapter; train new adapters on its base, {}",
                    dir.display(),
                    a.base_model_name_or_path
                )))
            }
            Some(a) => a.base_dir(dir)?,
            None => dir.to_path_buf(),
        };
        let mut config = Config::read(&base)?;
        config.lora = adapter.as_ref().map(|a| a.lora()).or(opts.lora.clone());
        let family = config.family();
        let native = config.native_kind()?;
        let kind = match (opts.kind, &adapter) {
            (Some(kind), _) => kind,
            (None, Some(a)) => a.kind()?,
            (None, None) => native,
        };
        let device = opts.device.resolve()?;
        let bf16 = opts.precision.bf16_on(device);
        let base_bf16 = opts.base_dtype.bf16_on(opts.lora.is_some(), bf16, device)?;
        if opts.precision == Precision::Int8 {
            int8_allowed(dir, opts, device)?;
        }
        let vs = nn::VarStore::new(device);
        // Only a head the checkpoint lacks starts at random; one it has is read over zeros,
        // drawing nothing (see `seeded`).
        let head = match native {
            Kind::CrossEncoder => crate::family::ZEROS,
            Kind::BiEncoder => nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            },
        };
        let network = family.build(&vs.root(), &config, kind, head, &base)?;
        if let Some(lora) = &config.lora {
            lora::check_targets(&vs, lora, &config, kind, &base)?;
        }
        let modules = match kind {
            Kind::BiEncoder => Some(Modules::read(&base, &vs.root(), config.hidden_size)?),
            Kind::CrossEncoder => None,
        };
        let loaded = match shared {
            Some(from) if adapter.is_none() || !same_dir(&from.source, &base) => {
                return Err(ModelError::Invalid(format!(
                    "{}: not an adapter over {}",
                    dir.display(),
                    from.source.display()
                )))
            }
            // Only a model of the same kind on the same device has the tensors to share.
            Some(from) if from.kind == kind && from.device() == device => {
                checkpoint::share_weights(&vs, from, kind)?
            }
            _ => checkpoint::load_weights(&vs, &base, family, kind, native)?,
        };
        if let Some(m) = &modules {
            m.load_weights(&base)?;
        }
        match &adapter {
            Some(_) => lora::load_adapter(&vs, dir)?,
            None if config.lora.is_some() => lora::init_fresh(&vs),
            None => {}
        }
        freeze(&vs, family, kind, config.lora.is_some(), opts.frozen_layers);
        if base_bf16 {
            base_dtype::to_bf16(&vs);
        }
        let window = match kind {
            Kind::BiEncoder => sentence::max_len(&base),
            Kind::CrossEncoder => None,
        }
        .unwrap_or(usize::MAX)
        .min(network.max_tokens());
        let int8 = (opts.precision == Precision::Int8).then(int8::Weights::default);
        Ok(Model {
            vs,
            network,
            modules,
            config,
            kind,
            source: base,
            window,
            bf16,
            base_bf16,
            int8,
            extras: loaded.extras,
            dtype: loaded.dtype,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn family(&self) -> Family {
        self.config.family()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Where and in what arithmetic the model runs, for logs and benchmark records.
    pub fn describe_device(&self) -> String {
        let device = match self.device() {
            Device::Cuda(i) => format!("cuda:{i} (cudnn: {})", tch::Cuda::cudnn_is_available()),
            _ => format!("cpu ({} threads)", tch::get_num_threads()),
        };
        match (self.bf16, self.base_bf16, &self.int8) {
            (true, true, _) => format!("{device}, bf16 autocast, bf16 base weights"),
            (true, false, _) => format!("{device}, bf16 autocast"),
            (false, _, Some(_)) => format!("{device}, int8 projections"),
            (false, _, None) => device,
        }
    }

    /// Most tokens one input may hold: the position table, or a bi-encoder's `max_seq_length`.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The text a bi-encoder puts before each query or document (`query: `, an instruction),
    /// as its `config_sentence_transformers.json` declares; empty for none, and for a
    /// cross-encoder.
    pub fn prompt(&self, role: Role) -> &str {
        self.modules.as_ref().map_or("", |m| m.prompt(role))
    }

    /// The longest input the position table allows, whatever `max_seq_length` says.
    pub fn max_positions(&self) -> usize {
        self.network.max_tokens()
    }

    /// Cross-encoder: one logit per input, [batch]. Bi-encoder: L2-normalised embeddings,
    /// [batch, hidden]. With `train`, dropout is on, drawing its masks in turn from the
    /// generator the caller holds: call it inside [`seeded`].
    pub fn forward_t<E: Borrow<Encoded>>(&self, inputs: &[E], train: bool) -> Tensor {
        let batch = self.batch_tensors(inputs);
        // Nothing runs twice, so one stream of masks will do, and every run before gradient
        // checkpointing existed draws the masks it drew then.
        let seeds = Seeds(None);
        let last = self.in_precision(|| {
            let stack = self.stack(&batch, train, seeds);
            (0..stack.layers).fold(stack.embedded.shallow_clone(), |x, i| {
                seeds.enter(i + 1);
                (stack.layer)(i, &x)
            })
        });
        self.head(last, &batch.2, train)
    }

    /// Gradient checkpointing: `forward_t` with `train`'s gradients, holding only each layer's
    /// input where `forward_t` holds every intermediate tensor of every layer. The layers run
    /// without a graph; the output's graph reaches back only to the last layer's output. After
    /// the loss's backward, [`Recompute::backward`] runs each layer again from its input, last
    /// to first, and backpropagates through it, so that the trainable tensors end with the
    /// gradients `forward_t`'s graph would give them. Call it inside [`seeded`], like
    /// `forward_t`, and the recompute inside the same `seeded` call.
    pub fn forward_checkpointed<E: Borrow<Encoded>>(
        &self,
        inputs: &[E],
        train: bool,
    ) -> (Tensor, Recompute<'_>) {
        let batch = self.batch_tensors(inputs);
        let seeds = Seeds::draw(train);
        let (mut layers, mut kept) = (0, Vec::new());
        let last = tch::no_grad(|| {
            self.in_precision(|| {
                let stack = self.stack(&batch, train, seeds);
                layers = stack.layers;
                (0..stack.layers).fold(stack.embedded.shallow_clone(), |x, i| {
                    seeds.enter(i + 1);
                    let out = (stack.layer)(i, &x);
                    // The first layer's input is rebuilt with its graph anyway (see `backward`).
                    if i > 0 {
                        kept.push(x);
                    }
                    out
                })
            })
        })
        .set_requires_grad(true);
        let out = self.head(last.shallow_clone(), &batch.2, train);
        let recompute = Recompute {
            model: self,
            batch,
            train,
            seeds,
            layers,
            inputs: kept,
            last,
        };
        (out, recompute)
    }

    /// The network's layers over `batch`, its embeddings drawing their dropout from `seeds`.
    fn stack(&self, (ids, type_ids, mask): &Batch, train: bool, seeds: Seeds) -> family::Stack<'_> {
        // Loading refuses int8 for training, and fine-tunes refuse it (`Precision::training`).
        assert!(
            !(train && self.int8.is_some()),
            "an int8 model cannot train: its projections have no gradients"
        );
        seeds.enter(0);
        self.network.stack(ids, type_ids, mask, train)
    }

    /// Runs `f` in the model's arithmetic: under bf16 autocast, or with int8 projections.
    fn in_precision<T>(&self, f: impl FnOnce() -> T) -> T {
        match (self.bf16, &self.int8) {
            (true, _) => precision::bf16_autocast(self.device(), f),
            (false, Some(weights)) => int8::region(weights, f),
            (false, None) => f(),
        }
    }

    /// How many projections hold int8 weights (0 unless the model runs in int8): each is
    /// quantized on its first use and kept.
    pub fn int8_projections(&self) -> usize {
        self.int8.as_ref().map_or(0, |w| w.len())
    }

    /// The output from the last layer's: the family's finish (a final norm), then a
    /// cross-encoder's head or a bi-encoder's pooling. Only the encoder runs in bf16; pooling
    /// and the head read its output in fp32.
    fn head(&self, last: Tensor, mask: &Tensor, train: bool) -> Tensor {
        let hidden = self.in_precision(|| self.network.finish(last));
        let hidden = match self.bf16 {
            true => hidden.to_kind(DType::Float),
            false => hidden,
        };
        match &self.modules {
            None => self.network.classify(&hidden, mask, train),
            Some(modules) => modules.embed(&hidden, mask),
        }
    }

    /// Inference: raw logits (cross-encoder) or one embedding per input (bi-encoder), row-major.
    pub fn infer<E: Borrow<Encoded>>(&self, inputs: &[E]) -> Vec<Vec<f32>> {
        if inputs.is_empty() {
            return Vec::new();
        }
        let out = tch::no_grad(|| self.forward_t(inputs, false))
            .to_kind(DType::Float)
            .to_device(Device::Cpu);
        let out = if out.dim() == 1 {
            out.unsqueeze(1)
        } else {
            out
        };
        Vec::<Vec<f32>>::try_from(&out).expect("float output converts to Vec<Vec<f32>>")
    }

    /// Pads to the longest input; ids past an input's length are the pad id and masked out.
    fn batch_tensors<E: Borrow<Encoded>>(&self, inputs: &[E]) -> Batch {
        let len = inputs
            .iter()
            .map(|e| e.borrow().ids.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let n = inputs.len();
        let mut ids = vec![self.config.pad_token_id; n * len];
        let mut types = vec![0i64; n * len];
        let mut mask = vec![false; n * len];
        for (row, e) in inputs.iter().enumerate() {
            let e = e.borrow();
            let at = row * len;
            ids[at..at + e.ids.len()].copy_from_slice(&e.ids);
            types[at..at + e.type_ids.len()].copy_from_slice(&e.type_ids);
            mask[at..at + e.ids.len()].fill(true);
        }
        let shape = [n as i64, len as i64];
        let dev = self.device();
        (
            Tensor::from_slice(&ids).view(shape).to_device(dev),
            Tensor::from_slice(&types).view(shape).to_device(dev),
            Tensor::from_slice(&mask).view(shape).to_device(dev),
        )
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Writes the model as a Hugging Face checkpoint directory at `dest`, atomically: everything
    /// goes to a temporary sibling that is renamed into place, so `dest` is whole or absent.
    /// `max_len` is recorded as a bi-encoder's `max_seq_length`.
    /// A model with LoRA adapters is saved merged: each adapted weight becomes
    /// `W + (alpha / r) · B A`, a plain checkpoint that needs no PEFT to load.
    pub fn save(&self, dest: &Path, max_len: Option<usize>) -> Result<(), ModelError> {
        checkpoint::save(self, dest, max_len)
    }

    /// Writes the model's LoRA adapters, and a cross-encoder's head, at `dest` as a PEFT adapter
    /// directory (`adapter_config.json`, `adapter_model.safetensors`) over the checkpoint the
    /// model was loaded from, with that checkpoint's tokenizer beside them. Atomic as `save`.
    pub fn save_adapter(&self, dest: &Path) -> Result<(), ModelError> {
        checkpoint::save_adapter(self, dest)
    }
}

/// A batch as the network reads it: ids, type ids and the mask of real tokens, [batch, len].
type Batch = (Tensor, Tensor, Tensor);

/// Where a checkpointed training pass's dropout masks come from: libtorch's generator is reseeded
/// before the embeddings and before each layer, from a base drawn from the generator the caller
/// holds (see [`seeded`]), so that a layer run again by [`Recompute`] draws the masks of its
/// first run, whatever ran in between. Seeds `base + segment` name distinct generator streams
/// (libtorch scrambles a seed into its state). Without dropout, and in a plain `forward_t`,
/// nothing is drawn or reseeded.
#[derive(Clone, Copy)]
struct Seeds(Option<u64>);

impl Seeds {
    fn draw(train: bool) -> Seeds {
        Seeds(train.then(|| {
            let base = Tensor::randint(i64::MAX, [1], (DType::Int64, Device::Cpu));
            base.int64_value(&[0]) as u64
        }))
    }

    /// Reseeds for segment `at`: 0 the embeddings, `i + 1` layer `i`.
    fn enter(self, at: usize) {
        if let Some(base) = self.0 {
            tch::manual_seed(base.wrapping_add(at as u64) as i64);
        }
    }
}

/// What [`Model::forward_checkpointed`] kept of a forward pass to compute the layers' gradients.
pub struct Recompute<'a> {
    model: &'a Model,
    batch: Batch,
    train: bool,
    seeds: Seeds,
    layers: usize,
    /// The input of each layer but the first, without a graph.
    inputs: Vec<Tensor>,
    /// The last layer's output, the leaf the loss's graph reaches back to.
    last: Tensor,
}

impl Recompute<'_> {
    /// Backpropagates the gradient the loss's backward left on the last layer's output through
    /// the layers, last to first: each is run again from its kept input, with a graph, and
    /// `(output · upstream gradient).sum()` backpropagated, which adds the layer's share to
    /// its tensors' gradients and leaves its input's as the next upstream gradient.
    ///
    /// tch's backward cannot keep a graph for a second backward, so the embeddings and what
    /// every layer reads (masks, position tables, relative position embeddings) are rebuilt for
    /// each layer: element-wise work, small beside a layer's matrix products, and whatever of
    /// it trains gets each layer's share of its gradient.
    pub fn backward(self) {
        let model = self.model;
        let mut upstream = self.last.grad();
        for i in (0..self.layers).rev() {
            // Nothing below needs a gradient: the loss's graph did not reach the layers.
            if !upstream.defined() {
                return;
            }
            let (input, out) = model.in_precision(|| {
                let stack = model.stack(&self.batch, self.train, self.seeds);
                let input = match i {
                    0 => stack.embedded,
                    _ => self.inputs[i - 1].detach().set_requires_grad(true),
                };
                self.seeds.enter(i + 1);
                let out = (stack.layer)(i, &input);
                (input, out)
            });
            if out.requires_grad() {
                (out * &upstream).sum(DType::Float).backward();
            }
            if i > 0 {
                upstream = input.grad();
            }
        }
    }
}

/// Refuses int8 where it cannot run: on a GPU, and for training (adapters or frozen layers are
/// asked for only to train).
fn int8_allowed(dir: &Path, opts: &LoadOptions, device: Device) -> Result<(), ModelError> {
    if opts.lora.is_some() || opts.frozen_layers > 0 {
        Precision::Int8.training()?;
    }
    if device.is_cuda() {
        return Err(ModelError::Invalid(format!(
            "{}: --precision int8 runs on a CPU; use --device cpu, or bf16 on the GPU",
            dir.display()
        )));
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Leaves trainable, with LoRA, only the adapters and a cross-encoder's head; without, all but
/// the embeddings and the first `frozen_layers` encoder layers. The optimizer steps what stays
/// trainable.
fn freeze(vs: &nn::VarStore, family: Family, kind: Kind, lora: bool, frozen_layers: usize) {
    for (name, var) in vs.variables() {
        let trainable = match lora {
            true => {
                lora::is_adapter(&name) || (kind == Kind::CrossEncoder && family.is_head(&name))
            }
            false => !below(&name, frozen_layers),
        };
        let _ = var.set_requires_grad(trainable);
    }
}

/// Whether tensor `name` is an embedding's or in one of the first `layers` encoder layers
/// (`…layer.N.…`, ModernBERT's `…layers.N.…`). None is when `layers` is 0.
fn below(name: &str, layers: usize) -> bool {
    if layers == 0 {
        return false;
    }
    let parts: Vec<&str> = name.split('.').collect();
    parts.contains(&"embeddings")
        || parts.windows(2).any(|w| {
            matches!(w[0], "layer" | "layers") && w[1].parse::<usize>().is_ok_and(|i| i < layers)
        })
}

/// Where the checkpoint loaded from a directory keeps its tokenizer.
pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}
