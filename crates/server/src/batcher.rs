//! The inference core, between the HTTP handlers and the engine: a bounded queue of rerank
//! requests and one thread that owns every loaded model.
//!
//! libtorch models are `Send` but not `Sync`, so they live on that thread alone, in a small LRU
//! with the default model pinned. The thread takes the oldest request and, with it, later ones
//! for the same model and limits, up to `--max-batch-requests` and a token budget, and scores them
//! in one `Reranker::score` call: the engine packs all their documents into one length-sorted
//! batch plan, so concurrent small requests share forward passes. A full queue answers 429 at
//! once instead of growing memory, and a request whose client has gone leaves the queue unscored.
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use axum::http::StatusCode;
use finerank_engine::{
    adapter_base, DeviceChoice, EngineError, Group, Kind, LoadOptions, Reranker, ScoreOptions,
};
use tokio::sync::oneshot;

use crate::catalog::{Catalog, UnknownModel};
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How much of each document is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocLimit {
    /// Every window of a long document; it scores as its best window.
    All,
    /// The first N windows (Cohere v1's `max_chunks_per_doc`).
    Chunks(usize),
    /// About the first N tokens (Cohere v2's `max_tokens_per_doc`), as whole windows.
    Tokens(usize),
}

impl DocLimit {
    fn max_chunks(self, window: usize) -> Option<usize> {
        match self {
            DocLimit::All => None,
            DocLimit::Chunks(n) => Some(n.max(1)),
            DocLimit::Tokens(n) => Some(n.div_ceil(window.max(1)).max(1)),
        }
    }
}

pub struct RerankJob {
    /// A canonical name from the catalog.
    pub model: String,
    pub query: String,
    pub documents: Vec<String>,
    pub limit: DocLimit,
    /// An LLM reranker's instruction in place of its own; refused by a model that takes none.
    pub instruction: Option<String>,
}

impl RerankJob {
    /// Tokens this request will put through the model, from its length: about four bytes a
    /// token for English subwords, and the query is read again beside every document. The batch
    /// budget needs the order of magnitude, not the count a tokenizer would give.
    fn estimated_tokens(&self) -> usize {
        let query = self.query.len() / 4 + 1;
        self.documents.iter().map(|d| d.len() / 4 + 1 + query).sum()
    }
}

/// One request's scores, in document order.
pub struct Scored {
    /// Relevance scores in [0, 1]: the model's calibration of its raw scores.
    pub scores: Vec<f32>,
    /// The model's own scores: a cross-encoder's logits, a bi-encoder's cosines.
    pub raw_scores: Vec<f32>,
    pub query_truncated: bool,
}

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// What a caller hears when its reply was dropped unanswered.
fn dropped() -> ApiError {
    ApiError::internal(
        "the request was dropped: the model failed (see the server log) or the server is stopping",
    )
}

struct Pending {
    /// Identifies the entry for its handler's [`Abandon`] guard.
    id: u64,
    job: RerankJob,
    tokens: usize,
    queued_at: Instant,
    reply: Reply<Scored>,
}

enum Control {
    /// Load a model now (a fine-tune just finished), so its first request does not wait.
    Warm(String, Reply<()>),
    /// Forget a model (it was deleted).
    Evict(String),
}

#[derive(Default)]
struct Queue {
    work: VecDeque<Pending>,
    control: VecDeque<Control>,
    closed: bool,
    next_id: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
    max_requests: usize,
    max_tokens: usize,
    metrics: Metrics,
    /// The names of the loaded models, as the worker last left them: for the model sync and
    /// readiness, which must not wait for the worker.
    loaded: Mutex<Vec<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .expect("nothing panics while holding the queue lock")
    }

    /// After shutdown `c` is dropped, which answers a waiting caller with an error.
    fn control(&self, c: Control) {
        let mut queue = self.lock();
        if !queue.closed {
            queue.control.push_back(c);
            self.ready.notify_one();
        }
    }
}

/// Held by a waiting handler. If the handler is dropped first (its client went away), the
/// request leaves the queue there and then, so it is never scored and frees its place at once.
struct Abandon<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        // Not found once the worker has taken it, which is the normal case.
        if let Some(at) = queue.work.iter().position(|p| p.id == self.id) {
            queue.work.remove(at);
            self.shared.metrics.cancelled.inc();
            self.shared.metrics.queue_depth.set(queue.work.len() as i64);
        }
    }
}

/// Handle on the inference thread; clones share it.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// The default model's kind and window in tokens, known once it has loaded; hyperparameter
    /// defaults depend on the kind, and TEI's `/info` reports both.
    default_kind: Kind,
    default_window: usize,
}

impl Batcher {
    /// Starts the thread and loads the default model on it; fails if that model will not load.
    pub fn start(
        catalog: Arc<Catalog>,
        config: &Config,
        metrics: Metrics,
    ) -> anyhow::Result<Batcher> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            ready: Condvar::new(),
            capacity: config.queue_capacity,
            max_requests: config.max_batch_requests,
            max_tokens: config.max_batch_tokens,
            metrics,
            loaded: Mutex::default(),
        });
        let mut worker = Worker {
            shared: shared.clone(),
            catalog: catalog.clone(),
            models: Vec::new(),
            cache_size: config.model_cache,
            device: config.device,
        };
        let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("rerank".into())
            .spawn(move || {
                crate::threads::serving(&config);
                let loaded = worker
                    .model(catalog.default_name())
                    .map(|r| (r.kind(), r.window()));
                let ok = loaded.is_ok();
                let _ = loaded_tx.send(loaded);
                if ok {
                    worker.run();
                }
            })?;
        let (default_kind, default_window) = loaded_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the rerank thread died while loading the default model"))?
            .map_err(|e| anyhow::anyhow!("loading the default model: {}", e.message))?;
        Ok(Batcher {
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
            default_kind,
            default_window,
        })
    }

    pub fn default_kind(&self) -> Kind {
        self.default_kind
    }

    pub fn default_window(&self) -> usize {
        self.default_window
    }

    /// Queues a request and waits for its scores. Dropping the future (the client went away)
    /// drops the request too.
    pub async fn score(&self, job: RerankJob) -> Result<Scored, ApiError> {
        let (reply, scored) = oneshot::channel();
        let id = {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                ));
            }
            if queue.work.len() >= self.shared.capacity {
                self.shared.metrics.rejected.inc();
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "the server is busy: {} rerank requests are already waiting (--queue-capacity); retry shortly",
                        queue.work.len()
                    ),
                ));
            }
            let id = queue.next_id;
            queue.next_id += 1;
            let tokens = job.estimated_tokens();
            queue.work.push_back(Pending {
                id,
                job,
                tokens,
                queued_at: Instant::now(),
                reply,
            });
            self.shared.metrics.queue_depth.set(queue.work.len() as i64);
            id
        };
        self.shared.ready.notify_one();
        let _abandon = Abandon {
            shared: &self.shared,
            id,
        };
        scored.await.map_err(|_| dropped())?
    }

    /// Loads a model into the cache, from a non-async thread (the training worker).
    pub fn warm_blocking(&self, model: &str) -> Result<(), ApiError> {
        let (reply, done) = oneshot::channel();
        self.shared.control(Control::Warm(model.to_string(), reply));
        done.blocking_recv().map_err(|_| dropped())?
    }

    pub fn evict(&self, model: &str) {
        self.shared.control(Control::Evict(model.to_string()));
    }

    /// The models loaded now, the default among them once it has loaded.
    pub fn loaded(&self) -> Vec<String> {
        self.shared.loaded.lock().expect("loaded lock").clone()
    }

    /// Whether requests are still taken: false once shutdown began.
    pub fn is_open(&self) -> bool {
        !self.shared.lock().closed
    }

    /// Refuses new work, lets the thread finish the batch in hand, and waits for it.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
        // Dropping what is left answers its waiters with an error rather than never.
        let mut queue = self.shared.lock();
        queue.work.clear();
        queue.control.clear();
    }
}

enum Next {
    Control(Control),
    Batch(Vec<Pending>),
}

struct Worker {
    shared: Arc<Shared>,
    catalog: Arc<Catalog>,
    /// Loaded models, least recently used first.
    models: Vec<(String, Reranker)>,
    cache_size: usize,
    device: DeviceChoice,
}

impl Worker {
    fn run(&mut self) {
        while let Some(next) = self.next() {
            // A panic in libtorch (out of memory, say) fails the work in hand, not the server:
            // unwinding drops its replies, which answers the waiting handlers with an error.
            if catch_unwind(AssertUnwindSafe(|| self.handle(next))).is_err() {
                tracing::error!(
                    "the model failed; the requests in hand were answered with an error"
                );
            }
        }
    }

    fn handle(&mut self, next: Next) {
        match next {
            Next::Control(Control::Warm(model, reply)) => {
                let _ = reply.send(self.model(&model).map(|_| ()));
            }
            Next::Control(Control::Evict(model)) => {
                self.models.retain(|(name, _)| *name != model);
                self.loaded_changed();
            }
            Next::Batch(batch) => self.score(batch),
        }
    }

    /// Waits for work; `None` once the queue is closed.
    fn next(&self) -> Option<Next> {
        let shared = &self.shared;
        let mut queue = shared.lock();
        loop {
            if let Some(c) = queue.control.pop_front() {
                return Some(Next::Control(c));
            }
            if queue.closed {
                return None;
            }
            let batch = self.take_batch(&mut queue);
            shared.metrics.queue_depth.set(queue.work.len() as i64);
            if !batch.is_empty() {
                return Some(Next::Batch(batch));
            }
            queue = shared
                .ready
                .wait(queue)
                .expect("nothing panics while holding the queue lock");
        }
    }

    /// The oldest request, and the later ones that can share its pass.
    fn take_batch(&self, queue: &mut Queue) -> Vec<Pending> {
        let shared = &self.shared;
        let mut batch: Vec<Pending> = Vec::new();
        let mut tokens = 0;
        let mut i = 0;
        while i < queue.work.len() && batch.len() < shared.max_requests {
            let p = &queue.work[i];
            let fits = match batch.first() {
                None => true,
                Some(first) => {
                    first.job.model == p.job.model
                        && first.job.limit == p.job.limit
                        && first.job.instruction == p.job.instruction
                        && tokens + p.tokens <= shared.max_tokens
                }
            };
            if fits {
                tokens += p.tokens;
                batch.push(queue.work.remove(i).expect("index checked"));
            } else {
                i += 1;
            }
        }
        batch
    }

    /// A loaded model, loading it (and evicting the least recently used other than the default)
    /// if needed.
    fn model(&mut self, name: &str) -> Result<&Reranker, ApiError> {
        if let Some(at) = self.models.iter().position(|(n, _)| n == name) {
            let entry = self.models.remove(at);
            self.models.push(entry);
        } else {
            let dir = self
                .catalog
                .dir(name)
                .map_err(|UnknownModel(m)| ApiError::not_found(m))?;
            let opts = LoadOptions {
                device: self.device,
                precision: self.catalog.precision(name),
                ..LoadOptions::default()
            };
            let internal =
                |e: EngineError| ApiError::internal(format!("loading model {name}: {e}"));
            // A LoRA adapter over a base already loaded shares the base's weights.
            let base = adapter_base(&dir).map_err(internal)?.and_then(|base| {
                self.models
                    .iter()
                    .map(|(_, r)| r)
                    .find(|r| r.model().source().canonicalize().is_ok_and(|s| s == base))
            });
            let reranker = match base {
                Some(base) => Reranker::load_adapter_over(name, &dir, &opts, base),
                None => Reranker::load(name, &dir, &opts),
            }
            .map_err(internal)?;
            if self.models.len() >= self.cache_size {
                let default = self.catalog.default_name();
                if let Some(at) = self.models.iter().position(|(n, _)| n != default) {
                    self.models.remove(at);
                }
            }
            self.models.push((name.to_string(), reranker));
            self.loaded_changed();
        }
        Ok(&self.models.last().expect("just pushed").1)
    }

    fn loaded_changed(&self) {
        let names: Vec<String> = self.models.iter().map(|(n, _)| n.clone()).collect();
        self.shared.metrics.models_loaded.set(names.len() as i64);
        *self.shared.loaded.lock().expect("loaded lock") = names;
    }

    fn score(&mut self, batch: Vec<Pending>) {
        let metrics = self.shared.metrics.clone();
        for p in &batch {
            metrics
                .queue_seconds
                .observe(p.queued_at.elapsed().as_secs_f64());
        }
        let first = &batch[0].job;
        let (limit, instruction) = (first.limit, first.instruction.clone());
        let reranker = match self.model(&first.model) {
            Ok(r) => r,
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        // The batch shares one instruction, so one check answers for all of it.
        if let Err(e) = reranker.check_instruction(instruction.as_deref()) {
            for p in batch {
                let _ = p.reply.send(Err(ApiError::bad_request(e.to_string())));
            }
            return;
        }
        let opts = ScoreOptions {
            max_chunks_per_doc: limit.max_chunks(reranker.window()),
            instruction,
            ..ScoreOptions::default()
        };
        let groups: Vec<Group> = batch
            .iter()
            .map(|p| Group {
                query: &p.job.query,
                documents: p.job.documents.iter().map(String::as_str).collect(),
            })
            .collect();
        metrics.batch_requests.observe(batch.len() as f64);
        metrics
            .batch_documents
            .observe(groups.iter().map(|g| g.documents.len()).sum::<usize>() as f64);
        metrics
            .batch_tokens
            .observe(batch.iter().map(|p| p.tokens).sum::<usize>() as f64);
        let started = Instant::now();
        let scores = reranker.score(&groups, &opts);
        metrics
            .inference_seconds
            .observe(started.elapsed().as_secs_f64());
        // The groups borrow the batch, which the replies take apart.
        drop(groups);
        for (p, s) in batch.into_iter().zip(scores) {
            let scored = Scored {
                scores: s.scores,
                raw_scores: s.raw_scores,
                query_truncated: s.query_truncated,
            };
            let _ = p.reply.send(Ok(scored));
        }
    }
}
