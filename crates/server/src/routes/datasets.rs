//! Cohere's datasets API, for the one type fine-tuning uses: `reranker-finetune-input`. Uploads are
//! validated in the background; clients poll `GET /v1/datasets/{id}` until `validation_status` is
//! `validated` or `failed` (the SDK's `co.wait` does this).
//!
//! A finerank extension: an upload may bring the document collection its passages come from (a
//! BEIR corpus), or a whole BEIR collection in place of Cohere rows, and ask for hard negatives to
//! be mined from it, as `finerank mine` does.
use axum::extract::{Multipart, State};
use axum::Json;
use finerank_retrieve::{FirstStage, MineOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::check_name;
use crate::error::{unreadable_body, ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::parts::Part;
use crate::store::{DatasetDeletion, DatasetFilter, DatasetRow, NewDataset};
use crate::validator::{DatasetMetrics, ValidationStatus};
use crate::AppState;

pub const RERANK_DATASET_TYPE: &str = "reranker-finetune-input";

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// A name to know the dataset by.
    name: Option<String>,
    /// Must be `reranker-finetune-input`.
    r#type: Option<String>,
    /// Mine hard negatives from `corpus` for every query, as `finerank mine` does, scored by the
    /// server's default model; training then reads the mined rows, and the review describes
    /// them. Rows keep their own negatives first. Without `eval_data`, a tenth of the queries is
    /// held out for evaluation. Needs `corpus`; a BEIR collection needs it set.
    mine_negatives: Option<bool>,
    /// With `mine_negatives`: negatives per query, 1 to 50 (default 7), as `finerank mine
    /// --negatives`.
    negatives: Option<usize>,
    /// With `mine_negatives`: where candidates come from, as `finerank mine --first-stage`:
    /// `dense` (the default: the model's embeddings of the whole corpus; a cross-encoder has none
    /// and rescores BM25's candidates), `bm25`, or `hybrid` (both, fused by reciprocal rank).
    #[param(value_type = Option<String>)]
    first_stage: Option<String>,
}

/// The multipart body of an upload: Cohere rows as `data`, or a BEIR collection as `corpus`,
/// `queries` and `qrels`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the body for the OpenAPI document; the handler streams it.
pub struct DatasetUpload {
    /// Training data, JSONL: one `{"query", "relevant_passages", "hard_negatives"}` per line
    /// (`hard_negatives` optional). Required unless a BEIR collection comes instead.
    #[schema(value_type = Option<String>, format = Binary)]
    data: Option<Vec<u8>>,
    /// Evaluation data in the same format (optional; without it a tenth of the training queries
    /// is held out).
    #[schema(value_type = Option<String>, format = Binary)]
    eval_data: Option<Vec<u8>>,
    /// The document collection, BEIR's corpus.jsonl: one `{"_id", "title", "text"}` per line.
    /// Relevant passages are found in it by their text. Negatives are mined from it when
    /// `mine_negatives=true`, and after training the model is evaluated retrieval-style over it
    /// (with rows, that takes `eval_data` or mining).
    #[schema(value_type = Option<String>, format = Binary)]
    corpus: Option<Vec<u8>>,
    /// With `corpus` and `qrels`, in place of `data`: BEIR's queries.jsonl, one `{"_id", "text"}`
    /// per line.
    #[schema(value_type = Option<String>, format = Binary)]
    queries: Option<Vec<u8>>,
    /// With `corpus` and `queries`: the relevance judgements, BEIR's qrels TSV
    /// (`query-id<TAB>corpus-id<TAB>score`, header optional) or TREC's four columns.
    #[schema(value_type = Option<String>, format = Binary)]
    qrels: Option<Vec<u8>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    #[serde(rename = "datasetType")]
    #[param(rename = "datasetType")]
    dataset_type: Option<String>,
    #[serde(rename = "validationStatus")]
    #[param(rename = "validationStatus", value_type = Option<ValidationStatus>)]
    validation_status: Option<String>,
    /// Only datasets created before this time (RFC 3339, UTC).
    before: Option<String>,
    /// Only datasets created after this time (RFC 3339, UTC).
    after: Option<String>,
    limit: Option<f64>,
    offset: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateResponse {
    id: String,
}

#[derive(Serialize, ToSchema)]
pub struct Dataset {
    id: String,
    name: String,
    created_at: String,
    updated_at: String,
    dataset_type: String,
    validation_status: ValidationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation_error: Option<String>,
    validation_warnings: Vec<String>,
    dataset_parts: Vec<DatasetPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<DatasetMetrics>,
    /// The mining the upload asked for: `first_stage`, `negatives`, and the rest of `finerank
    /// mine`'s settings at their defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    mining: Option<MineOptions>,
    /// The full review: each file's statistics (queries, passages per query, token lengths and
    /// their histogram, truncation, samples), every problem found, with its line and fix, and
    /// `max_len`, the window in tokens that the lengths were measured against. For a mined
    /// dataset it reviews the mined rows training reads, and `mining` reports the mining: the
    /// first stage and the scorer, queries, `negatives` kept, candidates looked at and dropped
    /// (`dropped_positive`: judged relevant; `dropped_absolute_margin`,
    /// `dropped_relative_margin`: likely false negatives), `queries_short` of negatives, and
    /// `seconds`. Only `GET /v1/datasets/{id}` gives it: lists leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    review: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetPart {
    /// `<dataset id>-<multipart field>`.
    id: String,
    /// The uploaded file's name.
    name: String,
    index: usize,
    size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_rows: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct GetResponse {
    dataset: Dataset,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetsListResponse {
    datasets: Vec<Dataset>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageResponse {
    /// Bytes of every uploaded file.
    organization_usage: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Empty {}

impl From<DatasetRow> for Dataset {
    fn from(d: DatasetRow) -> Dataset {
        // The rows counted are those training reads, the uploaded files' own unless mined.
        let counts = d
            .metrics
            .as_ref()
            .filter(|_| d.mining.is_none())
            .map(|m| &m.finetune_dataset_metrics);
        let parts = d
            .parts
            .iter()
            .enumerate()
            .map(|(index, (part, file))| DatasetPart {
                id: format!("{}-{}", d.id, part.field()),
                name: file.filename.clone(),
                index,
                size_bytes: file.size_bytes,
                num_rows: counts.and_then(|c| match part {
                    Part::Data => Some(c.train_examples),
                    Part::Eval => Some(c.eval_examples),
                    _ => None,
                }),
            })
            .collect();
        Dataset {
            id: d.id,
            name: d.name,
            created_at: d.created_at,
            updated_at: d.updated_at,
            dataset_type: d.dataset_type,
            validation_status: d.validation_status,
            validation_error: d.validation_error,
            validation_warnings: d.validation_warnings,
            dataset_parts: parts,
            metrics: d.metrics,
            mining: d.mining,
            review: d.review,
        }
    }
}

impl Dataset {
    /// A list's entry: all but the review, which is long (sample rows and every problem) and is
    /// one `GET /v1/datasets/{id}` away.
    fn summary(row: DatasetRow) -> Dataset {
        Dataset {
            review: None,
            ..Dataset::from(row)
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no dataset with id {id:?}"))
}

/// The mining an upload asks for, from its query parameters.
fn mining(p: &CreateParams) -> Result<Option<MineOptions>, ApiError> {
    if !p.mine_negatives.unwrap_or(false) {
        if p.negatives.is_some() || p.first_stage.is_some() {
            return Err(ApiError::bad_request(
                "`negatives` and `first_stage` say how to mine negatives: add mine_negatives=true, \
                 or leave them out",
            ));
        }
        return Ok(None);
    }
    let defaults = MineOptions::default();
    let negatives = p.negatives.unwrap_or(defaults.negatives);
    if !(1..=defaults.range_max).contains(&negatives) {
        return Err(ApiError::bad_request(format!(
            "negatives must be 1 to {max} (mining looks at the best {max} candidates), got \
             {negatives}",
            max = defaults.range_max
        )));
    }
    let first_stage = match p.first_stage.as_deref() {
        Some(s) => s
            .parse::<FirstStage>()
            .map_err(|e| ApiError::bad_request(format!("first_stage: {e}")))?,
        None => defaults.first_stage,
    };
    Ok(Some(MineOptions {
        first_stage,
        negatives,
        ..defaults
    }))
}

/// Upload a dataset: Cohere rows as `data` (`eval_data` optional, and `corpus`, the collection
/// the passages come from, to mine negatives from and to evaluate retrieval on), or a BEIR
/// collection as `corpus`, `queries` and `qrels` with `mine_negatives=true`.
#[utoipa::path(post, path = "/v1/datasets", tag = "datasets", params(CreateParams),
    request_body(content = DatasetUpload, content_type = "multipart/form-data"),
    responses((status = 200, body = CreateResponse), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CreateParams>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<CreateResponse>, ApiError> {
    let mining = mining(&params)?;
    let name = params
        .name
        .ok_or_else(|| ApiError::bad_request("the query parameter `name` is required"))?;
    let name = check_name("the query parameter `name`", &name)?;
    match params.r#type.as_deref() {
        Some(RERANK_DATASET_TYPE) => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dataset type {other:?} is not supported: finerank takes `{RERANK_DATASET_TYPE}`"
            )))
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "the query parameter `type` is required (`{RERANK_DATASET_TYPE}`)"
            )))
        }
    }
    let limit = state.config.max_upload_bytes;
    let multipart = multipart.map_err(|r| {
        unreadable_body(
            r.status(),
            format!("{} (send multipart/form-data)", r.body_text()),
            limit,
            "--max-upload-bytes",
        )
    })?;
    let staged = state.uploads.receive(multipart, limit).await?;
    staged.parts.check(mining.is_some())?;
    let id = uuid::Uuid::new_v4().to_string();
    let dataset = NewDataset {
        id: id.clone(),
        name,
        dataset_type: RERANK_DATASET_TYPE.into(),
        parts: staged.parts.clone(),
        mining,
    };
    let app = state.clone();
    crate::blocking(move || {
        let recorded = app
            .uploads
            .commit(&staged, &dataset.id)
            .map_err(ApiError::from)
            .and_then(|()| app.store.insert_dataset(&dataset).map_err(ApiError::from));
        // A refused upload leaves nothing, not even files the rename had already moved.
        if recorded.is_err() {
            let _ = app.uploads.remove(&dataset.id);
        }
        recorded
    })
    .await?;
    state.validator.wake();
    Ok(Json(CreateResponse { id }))
}

/// A dataset, with its validation status, problems and statistics.
#[utoipa::path(get, path = "/v1/datasets/{id}", tag = "datasets", params(("id" = String, Path)),
    responses((status = 200, body = GetResponse), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<GetResponse>, ApiError> {
    let key = id.clone();
    let row = state
        .db(move |s| s.dataset(&key))
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(GetResponse {
        dataset: row.into(),
    }))
}

/// A time filter, normalized to the stored format so that text comparison is time comparison.
fn time_filter(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let utc = value.trim().replace("+00:00", "Z");
    let time = humantime::parse_rfc3339_weak(&utc).map_err(|e| {
        ApiError::bad_request(format!(
            "{name}: {value:?} is not an RFC 3339 time in UTC ({e})"
        ))
    })?;
    Ok(Some(humantime::format_rfc3339_millis(time).to_string()))
}

fn count(name: &str, value: Option<f64>) -> Result<Option<usize>, ApiError> {
    match value {
        Some(v) if v < 0.0 || v.fract() != 0.0 => Err(ApiError::bad_request(format!(
            "{name} must be a whole number of at least 0, got {v}"
        ))),
        other => Ok(other.map(|v| v as usize)),
    }
}

/// Datasets, newest first, without their reviews.
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", params(ListParams),
    responses((status = 200, body = DatasetsListResponse), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<DatasetsListResponse>, ApiError> {
    let validation_status = match p.validation_status.as_deref() {
        None => None,
        Some(s) => Some(ValidationStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "validationStatus {s:?} is not one of queued, processing, validated, failed"
            ))
        })?),
    };
    let filter = DatasetFilter {
        dataset_type: p.dataset_type,
        validation_status,
        before: time_filter("before", p.before)?,
        after: time_filter("after", p.after)?,
        limit: count("limit", p.limit)?,
        offset: count("offset", p.offset)?.unwrap_or(0),
    };
    let rows = state.db(move |s| s.datasets(&filter)).await?;
    Ok(Json(DatasetsListResponse {
        datasets: rows.into_iter().map(Dataset::summary).collect(),
    }))
}

/// Delete a dataset and its files. Refused (409) while a queued or running fine-tune uses it.
#[utoipa::path(delete, path = "/v1/datasets/{id}", tag = "datasets", params(("id" = String, Path)),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Empty>, ApiError> {
    let key = id.clone();
    let app = state.clone();
    crate::blocking(move || match app.store.delete_dataset(&key).map_err(ApiError::from)? {
        DatasetDeletion::Deleted => {
            // The row is gone, so no one can reach the files; if removing them fails, the next
            // start removes them as orphans.
            if let Err(e) = app.uploads.remove(&key) {
                tracing::warn!(id = %key, "could not remove a deleted dataset's files: {e}");
            }
            Ok(())
        }
        DatasetDeletion::Missing => Err(not_found(&key)),
        DatasetDeletion::InUse { model_id, status } => Err(ApiError::conflict(format!(
            "dataset {key:?} is in use by fine-tuned model {model_id} ({}); delete that model or wait for it to finish",
            status.as_str()
        ))),
    })
    .await?;
    Ok(Json(Empty {}))
}

/// Bytes used by uploaded datasets.
#[utoipa::path(get, path = "/v1/datasets/usage", tag = "datasets", responses((status = 200, body = UsageResponse)))]
pub async fn usage(State(state): State<AppState>) -> Result<Json<UsageResponse>, ApiError> {
    let organization_usage = state.db(|s| s.dataset_usage()).await?;
    Ok(Json(UsageResponse { organization_usage }))
}
