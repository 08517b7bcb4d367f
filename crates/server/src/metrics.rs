//! Prometheus metrics: HTTP traffic, the rerank queue and its batches, and the job tables.
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::AppState;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub queue_depth: IntGauge,
    pub queue_seconds: Histogram,
    pub rejected: IntCounter,
    pub cancelled: IntCounter,
    pub batch_requests: Histogram,
    pub batch_documents: Histogram,
    pub batch_tokens: Histogram,
    pub inference_seconds: Histogram,
    pub models_loaded: IntGauge,
    pub finetuned_models: IntGaugeVec,
    pub datasets: IntGaugeVec,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram")
}

/// Powers of two from 1 to 2^(n-1): sizes span orders of magnitude.
fn sizes(n: usize) -> Vec<f64> {
    exponential_buckets(1.0, 2.0, n).expect("valid buckets")
}

/// 1 ms to about 65 s.
fn seconds() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 17).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new_custom(Some("finerank".into()), None).expect("valid prefix"),
            http_requests: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests by route, method and status",
                ),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
            http_seconds: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                    .buckets(seconds()),
                &["route", "method"],
            )
            .expect("valid metric"),
            queue_depth: IntGauge::new(
                "rerank_queue_depth",
                "Rerank requests waiting for the model",
            )
            .expect("valid metric"),
            queue_seconds: histogram(
                "rerank_queue_seconds",
                "Time a rerank request waited before scoring started",
                seconds(),
            ),
            rejected: IntCounter::new(
                "rerank_rejected_total",
                "Rerank requests refused with 429 because the queue was full",
            )
            .expect("valid metric"),
            cancelled: IntCounter::new(
                "rerank_cancelled_total",
                "Queued rerank requests dropped unscored because their client had gone",
            )
            .expect("valid metric"),
            batch_requests: histogram(
                "rerank_batch_requests",
                "Requests scored together in one pass",
                sizes(8),
            ),
            batch_documents: histogram(
                "rerank_batch_documents",
                "Documents scored in one pass",
                sizes(15),
            ),
            batch_tokens: histogram(
                "rerank_batch_tokens",
                "Tokens scored in one pass, estimated from text length (4 bytes a token)",
                sizes(22),
            ),
            inference_seconds: histogram(
                "rerank_inference_seconds",
                "Time the model took to score one pass",
                seconds(),
            ),
            models_loaded: IntGauge::new("models_loaded", "Models held in memory for reranking")
                .expect("valid metric"),
            finetuned_models: IntGaugeVec::new(
                Opts::new("finetuned_models", "Fine-tuned models (jobs) by status"),
                &["status"],
            )
            .expect("valid metric"),
            datasets: IntGaugeVec::new(
                Opts::new("datasets", "Datasets by validation status"),
                &["validation_status"],
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.http_requests.clone()),
            Box::new(m.http_seconds.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.queue_seconds.clone()),
            Box::new(m.rejected.clone()),
            Box::new(m.cancelled.clone()),
            Box::new(m.batch_requests.clone()),
            Box::new(m.batch_documents.clone()),
            Box::new(m.batch_tokens.clone()),
            Box::new(m.inference_seconds.clone()),
            Box::new(m.models_loaded.clone()),
            Box::new(m.finetuned_models.clone()),
            Box::new(m.datasets.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Counts and times every request. Routes are labelled by their pattern (`/v1/datasets/{id}`),
/// never the raw path, so ids cannot blow up the label set.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.http_seconds
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}
