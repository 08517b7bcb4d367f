//! `finerank serve`: the engine behind an HTTP API that code written for Cohere uses unchanged
//! (only `base_url` changes): rerank (`/v1/rerank`, `/v2/rerank`), datasets and rerank
//! fine-tuning, plus text-embeddings-inference's `/rerank`, health, Prometheus metrics, an
//! OpenAPI document, and a web dashboard at `/` over the same API.
//!
//! Laid out like text-embeddings-inference: the router (`routes`, thin axum handlers) feeds the
//! core (`batcher`: a bounded queue and one inference thread that batches concurrent requests
//! together) which calls the backend (`finerank-engine`). Datasets and fine-tuning jobs live in
//! SQLite or PostgreSQL (`store`) and run on background workers (`validator`, `jobs`), so that a restart loses
//! nothing: every dataset, job, event and model is there again, and a job the restart interrupted
//! says so. A dataset may bring its document collection (`parts`, `collection`): the validator
//! mines hard negatives from it (`mining`), and a fine-tune on it is evaluated as search uses a
//! reranker (`retrieval`). Fine-tunes also run in `finerank worker` processes (`worker`) that
//! share the database, under leases (`jobs`). A server holds its data directory alone (`lock`);
//! workers on its machine may share it. Requests are
//! admitted by key, scope and rate limit (`auth`, `limits`), on connections that must send their
//! headers in time (`connections`).
//!
//! Any number of servers may share one PostgreSQL database and one file store: a model published
//! by one is served by all, and one deleted through any stops answering on all within
//! `--model-sync-interval` (`model_sync`). `/health` says the process answers, `/health/ready`
//! that it can serve.
mod auth;
mod batcher;
mod catalog;
mod collection;
mod config;
mod connections;
mod dashboard;
mod error;
mod extract;
mod jobs;
mod limits;
mod lock;
mod metrics;
mod mining;
mod model_sync;
mod openapi;
mod parts;
mod retrieval;
mod routes;
mod store;
mod threads;
mod uploads;
mod validator;
mod wake;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{middleware, Router};
use finerank_engine::{FileStore, Registry};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use error::ApiError;
pub use jobs::{LEASE_NOTE, RESTART_NOTE};
pub use routes::rerank::decode_rerank_request;
pub use worker::work;

use batcher::Batcher;
use catalog::Catalog;
use jobs::{Crew, Jobs};
use limits::RateLimits;
use lock::DataDirLock;
use metrics::Metrics;
use model_sync::ModelSync;
use store::Store;
use uploads::Uploads;
use validator::Validator;

/// Everything the handlers share. Cloning is cheap.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    uploads: Arc<Uploads>,
    batcher: Batcher,
    jobs: Jobs,
    validator: Validator,
    model_sync: ModelSync,
    metrics: Metrics,
    keys: auth::Keys,
    limits: RateLimits,
    lock: DataDirLock,
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Opens the data directory (refusing one that another server holds), settles what a
    /// previous run left unfinished, loads the default model and starts the workers.
    pub fn start(config: Config) -> anyhow::Result<AppState> {
        config.check().map_err(anyhow::Error::msg)?;
        let data_dir = config.data_dir();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let lock = DataDirLock::acquire(&data_dir)?;
        check_writable(&data_dir)?;
        let files = config.store.as_deref().map(FileStore::open).transpose()?;
        let mut registry = Registry::open(&data_dir)?;
        if let Some(files) = &files {
            registry = registry.with_store(files.clone());
        }
        let database = config.database().map_err(anyhow::Error::msg)?;
        let store = store::open(&database)?;
        let uploads = Arc::new(Uploads::open(
            data_dir.join("uploads"),
            &store.dataset_ids()?,
            files,
        )?);
        let catalog = Arc::new(Catalog::new(&config, registry)?);
        let metrics = Metrics::new();
        let batcher = Batcher::start(catalog.clone(), &config, metrics.clone())?;
        let crew = Crew {
            store: store.clone(),
            catalog: catalog.clone(),
            batcher: Some(batcher.clone()),
            uploads: uploads.clone(),
            // The data directory's lock makes a SQLite database this process's alone.
            sole: matches!(database, store::Database::Sqlite(_)),
            role: "serve",
        };
        let jobs = Jobs::start(crew, &config)?;
        let validator = Validator::start(store.clone(), catalog.clone(), uploads.clone(), &config)?;
        let model_sync = ModelSync::start(
            store.clone(),
            catalog.clone(),
            batcher.clone(),
            config.model_sync_interval,
        )?;
        let keys = auth::Keys::new(&config.api_keys, &config.read_only_api_keys);
        let limits = RateLimits::new(&config);
        Ok(AppState(Arc::new(Inner {
            config,
            store,
            catalog,
            uploads,
            batcher,
            jobs,
            validator,
            model_sync,
            metrics,
            keys,
            limits,
            lock,
        })))
    }

    /// Stops the workers, each after the work in hand: a fine-tune in training stops at its next
    /// step and goes back to the queue (it resumes from its last validation on the next worker),
    /// a validation finishes, and rerank requests still queued are answered with an error. Then the data directory is free for another
    /// server.
    pub fn shutdown(&self) {
        self.model_sync.shutdown();
        self.validator.shutdown();
        self.jobs.shutdown();
        self.batcher.shutdown();
        self.lock.release();
    }

    /// Runs a store call off the async threads: both backends block.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> store::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        blocking(move || f(&*store).map_err(ApiError::from)).await
    }
}

/// A data directory that cannot take a write (a read-only mount, a full disk) stops the start
/// with that cause, where SQLite would say "unable to open database file" or "disk I/O error".
/// The probe is the size of the shared-memory index SQLite creates beside the database to open it.
fn check_writable(dir: &Path) -> anyhow::Result<()> {
    let probe = dir.join(".finerank-write-test");
    let written = std::fs::write(&probe, [0u8; 32 << 10]);
    let _ = std::fs::remove_file(&probe);
    written.with_context(|| not_writable(dir))
}

fn not_writable(dir: &Path) -> String {
    format!("the data directory {} is not writable", dir.display())
}

/// Runs blocking work (files, SQLite) on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: the handler panicked; see the server log",
    )
    .into_response()
}

/// An error answer to a request with a body may come before the body was read (a refused upload,
/// a wrong key), and hyper then closes the connection rather than read the rest. Saying so in the
/// answer tells a keep-alive client to open a new connection for its next request, instead of
/// sending it into one that is closing, which it would see as a reset.
async fn close_after_error_with_body(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0");
    let mut response = next.run(req).await;
    let status = response.status();
    if has_body && (status.is_client_error() || status.is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The whole HTTP API over a started state.
fn app(state: AppState) -> Router {
    let (api, spec) = routes::router(state.config.max_upload_bytes).split_for_parts();
    api.merge(openapi::router(spec))
        .merge(dashboard::router())
        .fallback(routes::ops::not_found)
        .method_not_allowed_fallback(routes::ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), auth::admit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(routes::tei::error_shape))
        .layer(middleware::from_fn(close_after_error_with_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the API of a started state on `listener` until `shutdown` completes; the open
/// connections then finish their requests. The state's workers go on: [`AppState::shutdown`]
/// stops them.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) {
    let header_read_timeout = state.config.header_read_timeout;
    connections::serve(listener, app(state), header_read_timeout, shutdown).await;
}

/// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = SocketAddr::new(config.host, config.port);
    let data_dir = config.data_dir();
    let database = config.database().map_err(anyhow::Error::msg)?;
    let state = tokio::task::spawn_blocking(move || AppState::start(config)).await??;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    eprintln!(
        "finerank serve: listening on http://{} (model {}, data in {}, metadata in {}{})",
        listener.local_addr()?,
        state.catalog.default_name(),
        data_dir.display(),
        database,
        if state.keys.enabled() {
            ", API keys required"
        } else {
            ""
        }
    );
    serve_on(listener, state.clone(), shutdown_signal()).await;
    tokio::task::spawn_blocking(move || state.shutdown()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
