//! Reranking: Cohere's `/v1/rerank` and `/v2/rerank`, and text-embeddings-inference's `/rerank`
//! (`tei`). They differ only in their wire shapes; all go through the same checks and the batcher.
use axum::extract::State;
use axum::Json;
use finerank_engine::rank_by_raw;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::batcher::{DocLimit, RerankJob, Scored};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiJson};
use crate::jobs::JobStatus;
use crate::AppState;

use super::tei::{self, TeiRerankRequest};

/// Every rerank endpoint: POSTs that change nothing, so a read-only key may call them.
pub const RERANK_PATHS: [&str; 3] = ["/v1/rerank", "/v2/rerank", tei::PATH];

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
    /// What an LLM reranker (Qwen3, mxbai-rerank-v2) judges the documents by, in place of its
    /// own instruction (the one it was fine-tuned with, else its model card's). A model that
    /// takes no instruction answers 400.
    instruction: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RerankV2Request {
    model: Option<String>,
    query: String,
    /// Strings. Objects are taken too, as LiteLLM sends them and as v1 takes them: ranked by
    /// their `text` field, or by the fields named in `rank_fields`.
    #[schema(value_type = Vec<Object>)]
    documents: Vec<Value>,
    top_n: Option<i64>,
    rank_fields: Option<Vec<String>>,
    /// Score about the first N tokens of each document (default 4096), in whole model windows.
    max_tokens_per_doc: Option<i64>,
    return_documents: Option<bool>,
    /// What an LLM reranker (Qwen3, mxbai-rerank-v2) judges the documents by, in place of its
    /// own instruction (the one it was fine-tuned with, else its model card's). A model that
    /// takes no instruction answers 400.
    instruction: Option<String>,
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

impl RerankV1Request {
    /// The texts to score, `top_n` and the windows scored per document.
    fn checked(&self) -> Result<(Vec<String>, Option<usize>, usize), ApiError> {
        let top_n = positive("top_n", self.top_n)?;
        let chunks =
            positive("max_chunks_per_doc", self.max_chunks_per_doc)?.unwrap_or(V1_DEFAULT_CHUNKS);
        let texts = texts(&self.documents, self.rank_fields.as_deref())?;
        Ok((texts, top_n, chunks))
    }
}

impl RerankV2Request {
    /// The texts to score, `top_n` and the tokens scored per document.
    fn checked(&self) -> Result<(Vec<String>, Option<usize>, usize), ApiError> {
        let top_n = positive("top_n", self.top_n)?;
        let tokens =
            positive("max_tokens_per_doc", self.max_tokens_per_doc)?.unwrap_or(V2_DEFAULT_TOKENS);
        let texts = texts(&self.documents, self.rank_fields.as_deref())?;
        Ok((texts, top_n, tokens))
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
            let (texts, top_n, _) = parse_json::<RerankV2Request>(body)?.checked()?;
            Ok((texts, top_n))
        }
        tei::PATH => {
            let req: TeiRerankRequest = parse_json(body)?;
            req.limit()?;
            Ok((req.texts, None))
        }
        other => Err(ApiError::not_found(format!(
            "{other} is not a rerank endpoint"
        ))),
    }
}

/// A request's scores, and what Cohere's `meta.warnings` says about them.
pub(super) struct Answer {
    pub scored: Scored,
    pub warnings: Vec<String>,
}

/// Checks shared by every endpoint, then a place in the queue.
pub(super) async fn score(
    state: &AppState,
    model: Option<&str>,
    query: &str,
    documents: Vec<String>,
    limit: DocLimit,
    instruction: Option<String>,
) -> Result<Answer, ApiError> {
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
    let requested = model.unwrap_or_default();
    let model = state
        .catalog
        .canonical(requested)
        .map_err(|e| ApiError::not_found(e.0))?;
    let job = RerankJob {
        model: model.clone(),
        query: query.to_string(),
        documents,
        limit,
        instruction,
    };
    let scored = match state.batcher.score(job).await {
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
            return Err(not_ready(state, &model).await.unwrap_or(e))
        }
        other => other?,
    };
    let truncated = scored.query_truncated.then(|| {
        "the query is longer than the model reads and was cut; its score reflects only its start"
            .to_string()
    });
    let warnings = state
        .catalog
        .substitution(requested)
        .into_iter()
        .chain(truncated)
        .collect();
    Ok(Answer { scored, warnings })
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

/// Cohere's answer: the best `top_n` with their documents, as sent, when `documents` is given.
fn response(
    version: &str,
    answer: Answer,
    top_n: Option<usize>,
    documents: Option<&[Value]>,
) -> RerankResponse {
    let scored = &answer.scored;
    let results = rank_by_raw(&scored.raw_scores, &scored.scores, top_n)
        .into_iter()
        .map(|r| RerankResult {
            index: r.index,
            relevance_score: r.relevance_score,
            document: documents.map(|d| returned(&d[r.index])),
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
            warnings: answer.warnings,
        },
    }
}

/// A document as it comes back: objects whole, strings as Cohere's `{"text": ...}`.
fn returned(document: &Value) -> Value {
    match document {
        Value::String(s) => serde_json::json!({ "text": s }),
        other => other.clone(),
    }
}

/// The texts to score of Cohere documents.
fn texts(documents: &[Value], rank_fields: Option<&[String]>) -> Result<Vec<String>, ApiError> {
    documents
        .iter()
        .enumerate()
        .map(|(i, d)| document_text(i, d, rank_fields))
        .collect()
}

/// The text of one document: a string, an object's `text`, or its `rank_fields` as
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
    let limit = DocLimit::Chunks(chunks);
    let instruction = req.instruction.clone();
    let answer = score(
        &state,
        req.model.as_deref(),
        &req.query,
        texts,
        limit,
        instruction,
    )
    .await?;
    let documents = req
        .return_documents
        .unwrap_or(false)
        .then_some(&req.documents[..]);
    Ok(Json(response("1", answer, top_n, documents)))
}

/// Rerank documents for a query (Cohere API v2).
#[utoipa::path(post, path = "/v2/rerank", tag = "rerank", request_body = RerankV2Request,
    responses((status = 200, body = RerankResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn v2(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RerankV2Request>,
) -> Result<Json<RerankResponse>, ApiError> {
    let (texts, top_n, tokens) = req.checked()?;
    let limit = DocLimit::Tokens(tokens);
    let instruction = req.instruction.clone();
    let answer = score(
        &state,
        req.model.as_deref(),
        &req.query,
        texts,
        limit,
        instruction,
    )
    .await?;
    let documents = req
        .return_documents
        .unwrap_or(false)
        .then_some(&req.documents[..]);
    Ok(Json(response("2", answer, top_n, documents)))
}
