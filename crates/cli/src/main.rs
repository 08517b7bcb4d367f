//! `finerank`: the command line over the engine. Each subcommand is one step of the fine-tuning
//! flow; `demo` runs them all on the embedded default model.
mod bench;
mod calibrate;
mod demo;
mod demo_retrieval;
mod evaluate;
mod finetune;
mod mine;
mod models;
mod prepare;
mod progress;
mod rerank;
mod retrieval;
mod serve;
mod validate;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use finerank_engine::{
    resolve, DeviceChoice, LoadOptions, Precision, Registry, Reranker, DEFAULT_MODEL,
};

#[derive(Parser)]
#[command(
    name = "finerank",
    version,
    about = "Serve, fine-tune and evaluate rerankers"
)]
struct Cli {
    /// Where fine-tuned models are kept.
    #[arg(long, global = true, env = "FINERANK_HOME")]
    home: Option<PathBuf>,
    /// Where the model runs: auto, cpu, cuda, or cuda:N (the Nth GPU libtorch sees, from 0);
    /// `auto` takes a GPU when libtorch sees one.
    #[arg(long, global = true, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// The arithmetic: `auto` is bf16 autocast on a GPU and fp32 on a CPU; `int8` runs the
    /// encoder's projections in int8 on a CPU, for serving and evaluation only.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FINERANK_PRECISION",
        default_value = "auto"
    )]
    precision: PrecisionArg,
    /// libtorch threads (0 = libtorch's default, one per core).
    #[arg(long, global = true, env = "FINERANK_THREADS", default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    match s {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| format!("{s:?}: expected auto, cpu, cuda or cuda:N")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PrecisionArg {
    Auto,
    F32,
    Bf16,
    Int8,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::Auto => Precision::Auto,
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Turn raw rows (CaseHOLD or mapped columns) into train, validation and test files.
    Prepare(prepare::Args),
    /// Review training data: Cohere's rules, statistics, problems and fixes.
    Validate(validate::Args),
    /// Rank documents for a query.
    Rerank(rerank::Args),
    /// Mine hard negatives from a corpus (BEIR layout) into training and validation files.
    Mine(mine::Args),
    /// Fine-tune a model and register it as <uuid>-ft.
    Finetune(finetune::Args),
    /// Measure a model on a test set, optionally against another.
    Eval(evaluate::Args),
    /// Fit how a model's raw scores become relevance scores, on rows with known relevant passages.
    Calibrate(calibrate::Args),
    /// List, show or delete fine-tuned models.
    Models(models::Args),
    /// The whole flow on CaseHOLD: prepare, review, assess, fine-tune, evaluate (--retrieval:
    /// mine negatives from a corpus and evaluate over BM25's top 100).
    Demo(demo::Args),
    /// Rerank and training throughput on this machine.
    Bench(bench::Args),
    /// The HTTP API: Cohere-compatible rerank, datasets and fine-tuning, and TEI's /rerank.
    Serve(serve::Args),
    /// Train the fine-tunes that servers queue in a shared --database (one per GPU: --device
    /// cuda:N); takes serve's data, store, database and training flags.
    Worker(worker::Args),
}

/// `serve`'s flags that mean nothing to a worker, which answers no requests: accepted (one
/// deployment may set their FINERANK_* variables for both), but left out of `worker --help`.
const SERVING_ONLY: &[&str] = &[
    "host",
    "port",
    "api_keys",
    "read_only_api_keys",
    "rate_limit",
    "rate_limit_burst",
    "header_read_timeout",
    "max_body_bytes",
    "max_upload_bytes",
    "max_documents",
    "queue_capacity",
    "max_batch_requests",
    "max_batch_tokens",
    "model_cache",
    "serving_threads",
];

fn parse() -> Cli {
    let command = Cli::command().mut_subcommand("worker", |worker| {
        (SERVING_ONLY.iter()).fold(worker, |c, id| c.mut_arg(*id, |a| a.hide(true)))
    });
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

/// What every subcommand may need: the registry and how to load models.
pub struct Ctx {
    home: PathBuf,
    device: DeviceChoice,
    precision: Precision,
}

impl Ctx {
    pub fn registry(&self) -> anyhow::Result<Registry> {
        Ok(Registry::open(&self.home)?)
    }

    pub fn load(
        &self,
        reference: &str,
        kind: Option<finerank_engine::Kind>,
    ) -> anyhow::Result<Reranker> {
        self.load_with(reference, &self.load_options(kind))
    }

    /// How this invocation loads a model: its device and precision, as `kind`.
    pub fn load_options(&self, kind: Option<finerank_engine::Kind>) -> LoadOptions {
        LoadOptions {
            device: self.device,
            kind,
            precision: self.precision,
            ..LoadOptions::default()
        }
    }

    pub fn load_with(&self, reference: &str, opts: &LoadOptions) -> anyhow::Result<Reranker> {
        let (name, dir) = resolve(reference, &self.registry()?)?;
        Ok(Reranker::load(&name, &dir, opts)?)
    }
}

/// The `--model` argument shared by subcommands.
#[derive(clap::Args, Clone)]
pub struct ModelArg {
    /// The default model's name, a fine-tuned id (<uuid>-ft), a checkpoint directory, or a
    /// Hugging Face model id (org/name, org/name@revision): a local directory of that name
    /// first, then the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub), then a download into it from $HF_ENDPOINT (with $HF_TOKEN),
    /// unless HF_HUB_OFFLINE=1.
    #[arg(long, env = "FINERANK_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
}

/// The tokenizers crate traces every character of the text it normalizes, so at RUST_LOG=trace
/// it would copy uploaded datasets, queries and documents into the log (and write gigabytes of
/// it). It stays at `info` whatever RUST_LOG says.
const QUIET_TOKENIZER: &str = "tokenizers=info";

/// libtorch allocates each batch's tensors afresh, and glibc hands freed blocks of a few MiB and
/// more back to the kernel, so the next batch faults the same pages in again: under `perf`, page
/// faults took about 6% of CPU reranking. Keeping blocks of up to 32 MiB on the heap, and the heap
/// untrimmed, reuses them instead; `finerank bench --steps 0` then reranked 7% faster. The process
/// keeps its peak heap rather than returning it between batches.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets the allocator's parameters, and no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn".into())
        .add_directive(QUIET_TOKENIZER.parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let cli = parse();
    finerank_model::set_threads(cli.threads);
    let ctx = Ctx {
        home: cli.home.unwrap_or_else(Registry::default_home),
        device: cli.device,
        precision: cli.precision.into(),
    };
    let result = match cli.command {
        Command::Prepare(a) => prepare::run(&ctx, a),
        Command::Validate(a) => validate::run(&ctx, a),
        Command::Rerank(a) => rerank::run(&ctx, a),
        Command::Mine(a) => mine::run(&ctx, a),
        Command::Finetune(a) => finetune::run(&ctx, a),
        Command::Eval(a) => evaluate::run(&ctx, a),
        Command::Calibrate(a) => calibrate::run(&ctx, a),
        Command::Models(a) => models::run(&ctx, a),
        Command::Demo(a) => demo::run(&ctx, a),
        Command::Bench(a) => bench::run(&ctx, a),
        Command::Serve(a) => serve::run(&ctx, a),
        Command::Worker(a) => worker::run(&ctx, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
