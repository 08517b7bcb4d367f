//! What `finerank serve` can be told, by flag or environment variable. With none, it serves the
//! default model on localhost and keeps its data beside the CLI's models.
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use finerank_engine::{DeviceChoice, Precision, Registry, DEFAULT_MODEL};

use crate::store::Database;

#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on; 0.0.0.0 listens on every interface.
    #[arg(long, env = "FINERANK_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0 takes a free one (the startup line says which).
    #[arg(long, env = "FINERANK_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Datasets, jobs (finerank.db) and fine-tuned models. Default: the CLI's model home
    /// ($FINERANK_HOME, else $XDG_DATA_HOME/finerank, else ~/.local/share/finerank).
    #[arg(long, env = "FINERANK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep fine-tuned models and uploaded datasets in a store that several servers share:
    /// s3://bucket[/prefix] (credentials, region, and AWS_ENDPOINT for an S3-compatible server
    /// other than AWS, from the AWS_* variables) or file:///path (a shared volume). The data
    /// directory then caches them. Default: they live in the data directory alone.
    #[arg(long = "store", env = "FINERANK_STORE_URL", value_name = "URL")]
    pub store: Option<String>,
    /// Where datasets and jobs are recorded, when not in finerank.db (SQLite) in the data
    /// directory: a postgres://USER:PASSWORD@HOST:PORT/DATABASE URL. Uploads and models are kept by
    /// --store.
    #[arg(
        long,
        env = "FINERANK_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// The model answering requests that name none: the embedded default's name, a fine-tuned
    /// <uuid>-ft id, a checkpoint directory or a Hugging Face model id (org/name[@revision], from
    /// the Hugging Face cache or downloaded into it at startup). It is served under its last path
    /// component.
    #[arg(long, env = "FINERANK_MODEL", default_value = DEFAULT_MODEL)]
    pub default_model: String,
    /// Another name for a model (repeatable), e.g. --alias legal=<uuid>-ft.
    #[arg(long = "alias", value_name = "NAME=MODEL", value_parser = parse_alias)]
    pub aliases: Vec<(String, String)>,
    /// The arithmetic of one model (repeatable, or comma-separated in the variable), over the
    /// global --precision: e.g. --model-precision <uuid>-ft=int8 serves that model in int8 and
    /// every other as --precision says. MODEL is a served name, an alias or an id.
    #[arg(
        long = "model-precision",
        value_name = "MODEL=PRECISION",
        value_parser = parse_model_precision,
        env = "FINERANK_MODEL_PRECISION",
        value_delimiter = ','
    )]
    pub model_precisions: Vec<(String, Precision)>,
    /// Answer unknown names with 404 instead of serving Cohere's rerank model names
    /// (rerank-v3.5, rerank-english-v3.0, ...) with the default model.
    #[arg(long, env = "FINERANK_NO_COHERE_ALIASES")]
    pub no_cohere_aliases: bool,
    /// Bearer keys with full access (repeatable; comma-separated in the environment). With any
    /// key set, every endpoint but /health, /health/ready, /docs and /openapi.json answers 401
    /// without one.
    #[arg(
        long = "api-key",
        env = "FINERANK_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Read-only bearer keys, for applications that only serve (repeatable; comma-separated in
    /// the environment): they rerank, list and get, and answer 403 for uploads, deletes and
    /// fine-tunes.
    #[arg(
        long = "api-key-read-only",
        env = "FINERANK_READ_ONLY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_only_api_keys: Vec<String>,
    /// Requests a second that each key may make (with no keys set, all callers share one
    /// allowance); past it the server answers 429 with Retry-After. Off when not set.
    #[arg(long, env = "FINERANK_RATE_LIMIT", value_name = "PER_SECOND")]
    pub rate_limit: Option<f64>,
    /// Requests a key may make at once before --rate-limit spaces them out (default: the rate,
    /// rounded up).
    #[arg(long, env = "FINERANK_RATE_LIMIT_BURST", requires = "rate_limit")]
    pub rate_limit_burst: Option<u32>,
    /// How long a client has to send a request's headers, and an idle kept-alive connection to
    /// send its next one, before the connection is closed: slow clients cannot hold sockets.
    #[arg(long, env = "FINERANK_HEADER_READ_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Largest JSON request body.
    #[arg(long, env = "FINERANK_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Largest dataset upload (training and evaluation files together).
    #[arg(long, env = "FINERANK_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_upload_bytes: usize,
    /// Most documents in one rerank request.
    #[arg(long, env = "FINERANK_MAX_DOCUMENTS", default_value_t = 10_000)]
    pub max_documents: usize,
    /// Rerank requests waiting for the model; past this the server answers 429 at once.
    #[arg(long, env = "FINERANK_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,
    /// Most requests scored together in one pass over the model; 1 turns cross-request
    /// batching off.
    #[arg(long, env = "FINERANK_MAX_BATCH_REQUESTS", default_value_t = 32)]
    pub max_batch_requests: usize,
    /// Token budget of requests scored together (estimated from their length).
    #[arg(long, env = "FINERANK_MAX_BATCH_TOKENS", default_value_t = 65_536)]
    pub max_batch_tokens: usize,
    /// Models kept loaded at once, the default model included.
    #[arg(long, env = "FINERANK_MODEL_CACHE", default_value_t = 4)]
    pub model_cache: usize,
    /// How often the server looks for models that other servers sharing its database and store
    /// deleted, and stops serving them: the longest a deleted model may still answer here.
    #[arg(long, env = "FINERANK_MODEL_SYNC_INTERVAL", default_value = "2s",
          value_parser = humantime::parse_duration)]
    pub model_sync_interval: Duration,
    /// Fine-tuning jobs this process runs at once; 0 serves without training (a serving
    /// replica, with `finerank worker` processes training on a shared --database).
    #[arg(long, env = "FINERANK_TRAINING_WORKERS", default_value_t = 1)]
    pub training_workers: usize,
    /// How long a worker's claim on a job lasts without a heartbeat (it renews it every third
    /// of this). A job whose worker died goes back to the queue once its lease expires, to
    /// resume on another worker.
    #[arg(long, env = "FINERANK_JOB_LEASE", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub job_lease: Duration,
    /// libtorch threads that score requests (0: the global --threads, else one per core).
    #[arg(long, env = "FINERANK_SERVING_THREADS", default_value_t = 0)]
    pub serving_threads: usize,
    /// libtorch threads of each fine-tune, and of the mining and retrieval evaluation of
    /// datasets with a corpus (0: half the cores, at least one).
    #[arg(long, env = "FINERANK_TRAINING_THREADS", default_value_t = 0)]
    pub training_threads: usize,
    /// Scheduling niceness of that background work, 0 (as requests) to 19 (lowest): where
    /// the serving and training threads add up to more than the cores, requests come first.
    #[arg(long, env = "FINERANK_TRAINING_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub training_nice: i32,
    /// Stop every fine-tune after N optimizer steps (quick trials and tests).
    #[arg(long, env = "FINERANK_MAX_TRAIN_STEPS")]
    pub max_train_steps: Option<usize>,
    /// Tokens per training input (default: finerank-train's, 384).
    #[arg(long, env = "FINERANK_TRAIN_MAX_LENGTH")]
    pub train_max_length: Option<usize>,
    /// Unique training queries a dataset needs (Cohere: 256).
    #[arg(long, env = "FINERANK_MIN_TRAIN_QUERIES", default_value_t = 256)]
    pub min_train_queries: usize,
    /// Unique evaluation queries an eval_data file needs (Cohere: 64).
    #[arg(long, env = "FINERANK_MIN_EVAL_QUERIES", default_value_t = 64)]
    pub min_eval_queries: usize,
    /// Where models run; set from the CLI's global --device.
    #[arg(skip)]
    pub device: DeviceChoice,
    /// Their arithmetic unless --model-precision says otherwise; set from the CLI's global
    /// --precision. Fine-tunes train in it, or as `auto` when it is int8.
    #[arg(skip)]
    pub precision: Precision,
}

fn parse_alias(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, model)) if !name.trim().is_empty() && !model.trim().is_empty() => {
            Ok((name.trim().to_string(), model.trim().to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME=MODEL")),
    }
}

fn parse_model_precision(s: &str) -> Result<(String, Precision), String> {
    let (model, precision) =
        parse_alias(s).map_err(|_| format!("{s:?}: expected MODEL=PRECISION"))?;
    Ok((model, precision.parse()?))
}

/// Parses the flags alone, for tests and for embedding the server in another program.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

impl Config {
    pub fn from_flags<I, T>(flags: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args =
            std::iter::once(OsString::from("serve")).chain(flags.into_iter().map(Into::into));
        Ok(Flags::try_parse_from(args)?.config)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(Registry::default_home)
    }

    /// The store: `--database`, else finerank.db in the data directory.
    pub fn database(&self) -> Result<Database, String> {
        match &self.database {
            None => Ok(Database::Sqlite(self.data_dir().join("finerank.db"))),
            Some(url) => Database::postgres(url)
                .map_err(|e| format!("--database (FINERANK_DATABASE_URL): {e}")),
        }
    }

    /// libtorch threads of each background thread (`--training-threads`, defaults filled in).
    pub fn background_threads(&self) -> usize {
        match self.training_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    /// Settings that would make the server useless rather than merely slow.
    pub fn check(&self) -> Result<(), String> {
        let at_least_one = [
            ("--queue-capacity", self.queue_capacity),
            ("--max-batch-requests", self.max_batch_requests),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--model-cache", self.model_cache),
            ("--max-documents", self.max_documents),
        ];
        if let Some((flag, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if self.rate_limit.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate-limit must be a positive number of requests a second".into());
        }
        if self.rate_limit_burst == Some(0) {
            return Err("--rate-limit-burst must be at least 1".into());
        }
        self.database()?;
        if self.job_lease < Duration::from_millis(300) {
            return Err(
                "--job-lease must be at least 300ms: a worker renews it every third".into(),
            );
        }
        if self.header_read_timeout.is_zero() {
            return Err("--header-read-timeout must be longer than 0s".into());
        }
        if self.model_sync_interval < Duration::from_millis(100) {
            return Err("--model-sync-interval must be at least 100ms".into());
        }
        match self
            .read_only_api_keys
            .iter()
            .find(|k| !k.is_empty() && self.api_keys.contains(k))
        {
            Some(_) => Err("a key is given both as --api-key and --api-key-read-only; \
                            give each key one scope"
                .into()),
            None => Ok(()),
        }
    }
}
