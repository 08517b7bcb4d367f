//! Reranking: Cohere's `/v1/rerank` and `/v2/rerank`, and text-embeddings-inference's `/rerank`.
//! The three differ only in their wire shapes; all go through the same checks and the batcher.
use axum::extract::State;
use axum::Json;
use finerank_engine::{rank, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::batcher::{DocLimit, RerankJob, Scored};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiJson};
use crate::jobs::JobStatus;
use crate::AppState;

/// Cohere's defaults: at most 10 windows a document in v1, 4096 tokens in v2.
const V1_DEFAULT_CHUNKS: usize = 10;
const V2_DEFAULT_TOKENS: usize = 4096;
/// Cohere bills a search unit per query and 100 documents.
const DOCS_PER_SEARCH_UNIT: usize = 100;

#[derive(Deserialize, ToSchema)]
pub struct RerankV1Request {
    /// The default model's name, one of its aliases (Cohere's model names among them), or a ready
    /// fine-tuned model's `<id>-ft`. Omitted: the default model.
    model: Option<String>,
    query: String,
    /// Strings, or objects of strings: an object is ranked by its `text` field, or by the fields
    /// named in `rank_fields`, in that order.
    #[schema(value_type = Vec<Object>)]
    documents: Vec<Value>,
    /// Return only the best N (default: all).
    top_n: Option<i64>,
    rank_fields: Option<Vec<String>>,
    /// Return each document (as sent) with its result.
    return_documents: Option<bool>,
    /// Score at most this many windows of a long document (default 10); it scores as its best.
    max_chunks_per_doc: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
pub struct RerankV2Request {
    model: Option<String>,
    query: String,
    documents: Vec<String>,
    top_n: Option<i64>,
    /// Score about the first N tokens of each document (default 4096), in whole model windows.
    max_tokens_per_doc: Option<i64>,
    return_documents: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct RerankResponse {
    id: String,
    /// Best first.
    results: Vec<RerankResult>,
    meta: Meta,
}

#[derive(Serialize, ToSchema)]
pub struct RerankResult {
    /// The document's position in the request.
    index: usize,
    /// In [0, 1]; higher is more relevant.
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    document: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Meta {
    api_version: ApiVersion,
    billed_units: BilledUnits,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiVersion {
    version: String,
}

#[derive(Serialize, ToSchema)]
pub struct BilledUnits {
    search_units: usize,
}

#[derive(Deserialize, ToSchema)]
pub struct TeiRerankRequest {
    query: String,
    texts: Vec<String>,
    /// Scores before the model's final squashing (a cross-encoder's logits, a bi-encoder's
    /// cosine) instead of [0, 1].
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

impl RerankV1Request {
    /// The texts to score, `top_n` and the windows scored per document.
    fn checked(&self) -> Result<(Vec<String>, Option<usize>, usize), ApiError> {
        let top_n = positive("top_n", self.top_n)?;
        let chunks =
            positive("max_chunks_per_doc", self.max_chunks_per_doc)?.unwrap_or(V1_DEFAULT_CHUNKS);
        let texts = self
            .documents
            .iter()
            .enumerate()
            .map(|(i, d)| document_text(i, d, self.rank_fields.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((texts, top_n, chunks))
    }
}

impl RerankV2Request {
    /// `top_n` and the tokens scored per document.
    fn checked(&self) -> Result<(Option<usize>, usize), ApiError> {
        let top_n = positive("top_n", self.top_n)?;
        let tokens =
            positive("max_tokens_per_doc", self.max_tokens_per_doc)?.unwrap_or(V2_DEFAULT_TOKENS);
        Ok((top_n, tokens))
    }
}

impl TeiRerankRequest {
    fn limit(&self) -> Result<DocLimit, ApiError> {
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

/// Decodes a rerank request body as the endpoint at `path` (`/v1/rerank`, `/v2/rerank` or TEI's
/// `/rerank`) does, with every check its handler makes before queueing, and returns the texts it
/// would score and its `top_n`. Public so tests can feed the decoder any bytes without a model.
pub fn decode_rerank_request(
    path: &str,
    body: &[u8],
) -> Result<(Vec<String>, Option<usize>), ApiError> {
    match path {
        "/v1/rerank" => {
            let (texts, top_n, _) = parse_json::<RerankV1Request>(body)?.checked()?;
            Ok((texts, top_n))
        }
        "/v2/rerank" => {
            let req: RerankV2Request = parse_json(body)?;
            let (top_n, _) = req.checked()?;
            Ok((req.documents, top_n))
        }
        "/rerank" => {
            let req: TeiRerankRequest = parse_json(body)?;
            req.limit()?;
            Ok((req.texts, None))
        }
        other => Err(ApiError::not_found(format!(
            "{other} is not a rerank endpoint"
        ))),
    }
}

/// Checks shared by every endpoint, then a place in the queue.
async fn score(
    state: &AppState,
    model: Option<&str>,
    query: &str,
    documents: Vec<String>,
    limit: DocLimit,
) -> Result<Scored, ApiError> {
    if query.trim().is_empty() {
        return Err(ApiError::bad_request(
            "query is empty; give the text to rank the documents against",
        ));
    }
    if documents.is_empty() {
        return Err(ApiError::bad_request(
            "documents is empty; give at least one document to rank",
        ));
    }
    let max = state.config.max_documents;
    if documents.len() > max {
        return Err(ApiError::bad_request(format!(
            "too many documents: {} (at most {max} a request); split them over several requests",
            documents.len()
        )));
    }
    let model = state
        .catalog
        .canonical(model.unwrap_or_default())
        .map_err(|e| ApiError::not_found(e.0))?;
    let job = RerankJob {
        model: model.clone(),
        query: query.to_string(),
        documents,
        limit,
    };
    match state.batcher.score(job).await {
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
            Err(not_ready(state, &model).await.unwrap_or(e))
        }
        other => other,
    }
}

/// A fine-tuned id that is not servable yet says where its job is.
async fn not_ready(state: &AppState, model: &str) -> Option<ApiError> {
    let id = model.strip_suffix("-ft")?.to_string();
    let row = state.db(move |s| s.model(&id)).await.ok()??;
    let status = row.status;
    (status != JobStatus::Ready).then(|| {
        let detail = match (status, &row.failure_reason) {
            (JobStatus::Failed, Some(reason)) => format!("its fine-tune failed: {reason}"),
            _ => format!("it answers once STATUS_READY (now {})", status.as_str()),
        };
        ApiError::not_found(format!("model {model:?} is not ready: {detail}"))
    })
}

fn positive(field: &str, value: Option<i64>) -> Result<Option<usize>, ApiError> {
    match value {
        Some(n) if n < 1 => Err(ApiError::bad_request(format!(
            "{field} must be at least 1, got {n}"
        ))),
        other => Ok(other.map(|n| n as usize)),
    }
}

fn warnings(scored: &Scored) -> Vec<String> {
    match scored.query_truncated {
        true => vec!["the query is longer than the model reads and was cut; its score reflects only its start".into()],
        false => Vec::new(),
    }
}

fn response(
    version: &str,
    scored: &Scored,
    top_n: Option<usize>,
    document: impl Fn(usize) -> Option<Value>,
) -> RerankResponse {
    let results = rank(&scored.scores, top_n)
        .into_iter()
        .map(|r| RerankResult {
            index: r.index,
            relevance_score: r.relevance_score,
            document: document(r.index),
        })
        .collect();
    RerankResponse {
        id: uuid::Uuid::new_v4().to_string(),
        results,
        meta: Meta {
            api_version: ApiVersion {
                version: version.into(),
            },
            billed_units: BilledUnits {
                search_units: scored.scores.len().div_ceil(DOCS_PER_SEARCH_UNIT),
            },
            warnings: warnings(scored),
        },
    }
}

/// The text of one v1 document: a string, an object's `text`, or its `rank_fields` as
/// `field: value` lines.
fn document_text(
    i: usize,
    doc: &Value,
    rank_fields: Option<&[String]>,
) -> Result<String, ApiError> {
    let field_text = |obj: &Map<String, Value>, field: &str| match obj.get(field) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(ApiError::bad_request(format!(
            "documents[{i}].{field} must be a string"
        ))),
    };
    match (doc, rank_fields) {
        (Value::String(s), _) => Ok(s.clone()),
        (Value::Object(obj), Some(fields)) => {
            let mut lines = Vec::new();
            for field in fields {
                if let Some(text) = field_text(obj, field)? {
                    lines.push(format!("{field}: {text}"));
                }
            }
            if lines.is_empty() {
                return Err(ApiError::bad_request(format!("documents[{i}] has none of the rank_fields {fields:?}")));
            }
            Ok(lines.join("\n"))
        }
        (Value::Object(obj), None) => field_text(obj, "text")?.ok_or_else(|| {
            ApiError::bad_request(format!(
                "documents[{i}] is an object without a \"text\" field; add one, or name the fields to rank by in rank_fields"
            ))
        }),
        (other, _) => Err(ApiError::unprocessable(format!(
            "invalid request body: documents[{i}]: expected a string or an object of strings, found {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "an array",
            }
        ))),
    }
}

/// Rerank documents for a query (Cohere API v1).
#[utoipa::path(post, path = "/v1/rerank", tag = "rerank", request_body = RerankV1Request,
    responses((status = 200, body = RerankResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn v1(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RerankV1Request>,
) -> Result<Json<RerankResponse>, ApiError> {
    let (texts, top_n, chunks) = req.checked()?;
    let scored = score(
        &state,
        req.model.as_deref(),
        &req.query,
        texts,
        DocLimit::Chunks(chunks),
    )
    .await?;
    let return_documents = req.return_documents.unwrap_or(false);
    // Documents come back as sent: objects whole, strings as Cohere's `{"text": ...}`.
    let out = response("1", &scored, top_n, |i| {
        return_documents.then(|| match &req.documents[i] {
            Value::String(s) => serde_json::json!({ "text": s }),
            other => other.clone(),
        })
    });
    Ok(Json(out))
}

/// Rerank documents for a query (Cohere API v2).
#[utoipa::path(post, path = "/v2/rerank", tag = "rerank", request_body = RerankV2Request,
    responses((status = 200, body = RerankResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn v2(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RerankV2Request>,
) -> Result<Json<RerankResponse>, ApiError> {
    let (top_n, tokens) = req.checked()?;
    let kept = req
        .return_documents
        .unwrap_or(false)
        .then(|| req.documents.clone());
    let scored = score(
        &state,
        req.model.as_deref(),
        &req.query,
        req.documents,
        DocLimit::Tokens(tokens),
    )
    .await?;
    let out = response("2", &scored, top_n, |i| {
        kept.as_ref().map(|d| serde_json::json!({ "text": d[i] }))
    });
    Ok(Json(out))
}

/// Squashed scores back to the model's own scale (inverting the engine's sigmoid for
/// cross-encoders and its (cosine + 1) / 2 for bi-encoders).
fn raw_score(score: f32, kind: Kind) -> f32 {
    match kind {
        Kind::CrossEncoder => {
            let p = score.clamp(f32::EPSILON, 1.0 - f32::EPSILON);
            (p / (1.0 - p)).ln()
        }
        Kind::BiEncoder => 2.0 * score - 1.0,
    }
}

/// Rerank texts for a query with the default model (text-embeddings-inference's API).
#[utoipa::path(post, path = "/rerank", tag = "rerank", request_body = TeiRerankRequest,
    responses((status = 200, body = Vec<TeiRank>), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn tei(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TeiRerankRequest>,
) -> Result<Json<Vec<TeiRank>>, ApiError> {
    let limit = req.limit()?;
    let kept = req.return_text.then(|| req.texts.clone());
    let scored = score(&state, None, &req.query, req.texts, limit).await?;
    let ranks = rank(&scored.scores, None)
        .into_iter()
        .map(|r| TeiRank {
            index: r.index,
            score: if req.raw_scores {
                raw_score(r.relevance_score, scored.kind)
            } else {
                r.relevance_score
            },
            text: kept.as_ref().map(|t| t[r.index].clone()),
        })
        .collect();
    Ok(Json(ranks))
}
