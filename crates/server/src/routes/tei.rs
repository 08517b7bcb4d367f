//! text-embeddings-inference's API, for the clients written for it: `POST /rerank` with the
//! default model, `GET /info`, which those clients read first, and TEI's error shape,
//! `{"error", "error_type"}`, for every error `/rerank` answers.
use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use finerank_engine::{rank_by_raw, Kind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rerank::score;
use crate::batcher::DocLimit;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::AppState;

/// TEI's rerank endpoint.
pub const PATH: &str = "/rerank";

#[derive(Deserialize, ToSchema)]
pub struct TeiRerankRequest {
    pub(super) query: String,
    pub(super) texts: Vec<String>,
    /// The model's own scores (a cross-encoder's logits, a bi-encoder's cosines) instead of
    /// relevance scores in [0, 1].
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    /// Score only the first window of each text instead of its best one.
    #[serde(default)]
    truncate: bool,
    /// `Right` (the default) is the only direction supported.
    truncation_direction: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TeiRank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// How text-embeddings-inference describes itself. Fields it has no value for here are null, as
/// TEI's own are for a local model.
#[derive(Serialize, ToSchema)]
pub struct Info {
    /// The default model, which `/rerank` answers with.
    model_id: String,
    model_sha: Option<String>,
    /// Weights stay in fp32 (bf16, where enabled, is autocast).
    model_dtype: String,
    model_type: ModelType,
    /// Rerank requests that may wait for the model (--queue-capacity).
    max_concurrent_requests: usize,
    /// Tokens the model reads at once; longer texts are scored window by window.
    max_input_length: usize,
    max_batch_tokens: usize,
    max_batch_requests: Option<usize>,
    /// Texts in one request (--max-documents).
    max_client_batch_size: usize,
    /// Long texts are never refused.
    auto_truncate: bool,
    tokenization_workers: usize,
    version: String,
    sha: Option<String>,
    docker_label: Option<String>,
}

/// `{"reranker": {...}}` for a cross-encoder, `{"embedding": {...}}` for a bi-encoder (which
/// reranks by cosine here).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Reranker(ClassifierModel),
    Embedding(EmbeddingModel),
}

#[derive(Serialize, ToSchema)]
pub struct ClassifierModel {
    id2label: BTreeMap<String, String>,
    label2id: BTreeMap<String, usize>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingModel {
    pooling: String,
}

/// TEI's error body.
#[derive(Serialize, ToSchema)]
pub struct TeiError {
    error: String,
    error_type: TeiErrorType,
}

/// TEI's names for what went wrong.
#[derive(Serialize, ToSchema)]
pub enum TeiErrorType {
    /// The request was refused.
    Validation,
    /// Too many requests (the queue is full, or the key's rate limit is spent).
    Overloaded,
    /// The server cannot take requests now (it is stopping, or its data directory is read-only).
    Unhealthy,
    Backend,
}

impl From<ApiError> for TeiError {
    fn from(e: ApiError) -> TeiError {
        let error_type = match e.status {
            StatusCode::TOO_MANY_REQUESTS => TeiErrorType::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE => TeiErrorType::Unhealthy,
            s if s.is_server_error() => TeiErrorType::Backend,
            _ => TeiErrorType::Validation,
        };
        TeiError {
            error: e.message,
            error_type,
        }
    }
}

impl TeiRerankRequest {
    pub(super) fn limit(&self) -> Result<DocLimit, ApiError> {
        if let Some(direction) = self
            .truncation_direction
            .as_deref()
            .filter(|d| !d.eq_ignore_ascii_case("right"))
        {
            return Err(ApiError::unprocessable(format!(
                "truncation_direction {direction:?} is not supported; texts are cut from the right"
            )));
        }
        // Truncating keeps the first window only.
        Ok(if self.truncate {
            DocLimit::Chunks(1)
        } else {
            DocLimit::All
        })
    }
}

/// Rerank texts for a query with the default model (text-embeddings-inference's API). Errors
/// come in TEI's shape.
#[utoipa::path(post, path = "/rerank", tag = "rerank", request_body = TeiRerankRequest,
    responses((status = 200, body = Vec<TeiRank>), (status = 400, body = TeiError), (status = 413, body = TeiError),
              (status = 422, body = TeiError), (status = 429, body = TeiError)))]
pub async fn rerank(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TeiRerankRequest>,
) -> Result<Json<Vec<TeiRank>>, ApiError> {
    let limit = req.limit()?;
    let kept = req.return_text.then(|| req.texts.clone());
    let scored = score(&state, None, &req.query, req.texts, limit, None)
        .await?
        .scored;
    let ranks = rank_by_raw(&scored.raw_scores, &scored.scores, None)
        .into_iter()
        .map(|r| TeiRank {
            index: r.index,
            score: if req.raw_scores {
                scored.raw_scores[r.index]
            } else {
                r.relevance_score
            },
            text: kept.as_ref().map(|t| t[r.index].clone()),
        })
        .collect();
    Ok(Json(ranks))
}

/// The model behind `/rerank` and the server's limits, as text-embeddings-inference describes
/// itself; TEI's clients read it before their first request.
#[utoipa::path(get, path = "/info", tag = "rerank", responses((status = 200, body = Info)))]
pub async fn info(State(state): State<AppState>) -> Json<Info> {
    let config = &state.config;
    let model_type = match state.batcher.default_kind() {
        // A one-label classifier, named as Hugging Face names a label nobody named.
        Kind::CrossEncoder => ModelType::Reranker(ClassifierModel {
            id2label: BTreeMap::from([("0".into(), "LABEL_0".into())]),
            label2id: BTreeMap::from([("LABEL_0".into(), 0)]),
        }),
        Kind::BiEncoder => ModelType::Embedding(EmbeddingModel {
            pooling: "mean".into(),
        }),
    };
    Json(Info {
        model_id: state.catalog.default_name().to_string(),
        model_sha: None,
        model_dtype: "float32".into(),
        model_type,
        max_concurrent_requests: config.queue_capacity,
        max_input_length: state.batcher.default_window(),
        max_batch_tokens: config.max_batch_tokens,
        max_batch_requests: Some(config.max_batch_requests),
        max_client_batch_size: config.max_documents,
        auto_truncate: true,
        // Texts are tokenized on the one thread that scores them.
        tokenization_workers: 1,
        version: env!("CARGO_PKG_VERSION").into(),
        sha: None,
        docker_label: None,
    })
}

/// Rewrites the errors of TEI's `/rerank`, from whichever layer refused the request (the key,
/// the rate limit, the body limit, the handler), into TEI's shape; other routes keep Cohere's.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let tei = req.uri().path() == PATH;
    let mut response = next.run(req).await;
    let Some(error) = tei
        .then(|| response.extensions_mut().remove::<ApiError>())
        .flatten()
    else {
        return response;
    };
    let body = serde_json::to_vec(&TeiError::from(error)).expect("the error serializes");
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
