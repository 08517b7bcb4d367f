//! Cohere's fine-tuning API for rerank models. Creating a model queues a job; the job's status,
//! events and training-step metrics are read here while it runs, and the finished model answers
//! `/v1/rerank` as `<id>-ft`.
use axum::extract::State;
use axum::Json;
use finerank_engine::Kind;
use finerank_train::Hyperparameters as Hyper;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::datasets::{Empty, RERANK_DATASET_TYPE};
use super::{check_name, parse_order, OrderedPageParams, PageParams, Paging};
use crate::catalog::UnknownModel;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::jobs::{FinetuneMetrics, JobStatus, Progress, Settings};
use crate::store::{DatasetRow, EventRow, ModelRow, ModelUpdate, Order, StepRow};
use crate::validator::ValidationStatus;
use crate::AppState;

const RERANK_BASE_TYPE: &str = "BASE_TYPE_RERANK";

#[derive(Deserialize, ToSchema)]
pub struct CreateRequest {
    name: String,
    settings: Settings,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateRequest {
    name: Option<String>,
    /// May change only while the model is `STATUS_QUEUED`; sending the current settings back is
    /// always fine.
    settings: Option<Settings>,
}

#[derive(Serialize, ToSchema)]
pub struct FinetunedModel {
    /// The model answers `/v1/rerank` as `<id>-ft` once `STATUS_READY`.
    id: String,
    name: String,
    settings: Settings,
    status: JobStatus,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    /// Why the job failed, when `STATUS_FAILED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    /// Steps done so far, while training.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    /// Validation metrics of the fine-tuned model and of its base, once trained.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<FinetuneMetrics>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelResponse {
    finetuned_model: FinetunedModel,
}

#[derive(Serialize, ToSchema)]
pub struct ListFinetunedModelsResponse {
    finetuned_models: Vec<FinetunedModel>,
    /// Empty when there are no more.
    next_page_token: String,
    total_size: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Event {
    status: JobStatus,
    created_at: String,
    /// Why: a failure's reason, where a requeued job will go on from, or where a resumed one
    /// went on from.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventsResponse {
    events: Vec<Event>,
    next_page_token: String,
    total_size: usize,
}

#[derive(Serialize, ToSchema)]
pub struct StepMetrics {
    created_at: String,
    step_number: usize,
    /// accuracy_at_1, accuracy_at_3, mrr_at_10 and ndcg_at_10 on the validation set, and
    /// train_loss (the mean since the previous evaluation; absent at step 0, the base model).
    metrics: std::collections::BTreeMap<String, f64>,
}

#[derive(Serialize, ToSchema)]
pub struct StepMetricsResponse {
    step_metrics: Vec<StepMetrics>,
    next_page_token: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LossParams {
    /// Only the steps after this one, so that a poller fetches what is new (default 0: all).
    after_step: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct StepLoss {
    step_number: usize,
    loss: f64,
}

#[derive(Serialize, ToSchema)]
pub struct LossesResponse {
    losses: Vec<StepLoss>,
}

impl From<ModelRow> for FinetunedModel {
    fn from(m: ModelRow) -> FinetunedModel {
        FinetunedModel {
            id: m.id,
            name: m.name,
            settings: m.settings,
            status: m.status,
            created_at: m.created_at,
            updated_at: m.updated_at,
            completed_at: m.completed_at,
            failure_reason: m.failure_reason,
            progress: m.progress.filter(|_| m.status == JobStatus::Finetuning),
            metrics: m.metrics,
        }
    }
}

impl From<EventRow> for Event {
    fn from(e: EventRow) -> Event {
        Event {
            status: e.status,
            created_at: e.created_at,
            message: e.message,
        }
    }
}

impl From<StepRow> for StepMetrics {
    fn from(s: StepRow) -> StepMetrics {
        StepMetrics {
            created_at: s.created_at,
            step_number: s.step_number,
            metrics: s.metrics,
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no fine-tuned model with id {id:?}"))
}

/// Refuses settings that could not train, before they are queued: a job should fail only for
/// reasons no one could see coming.
async fn check_settings(state: &AppState, settings: &Settings) -> Result<(), ApiError> {
    let base = &settings.base_model;
    if base.base_type != RERANK_BASE_TYPE {
        return Err(ApiError::bad_request(format!(
            "base_model.base_type {:?} is not supported: finerank fine-tunes rerank models ({RERANK_BASE_TYPE})",
            base.base_type
        )));
    }
    existing_model(state, base.name.as_deref(), "base_model.name").await?;
    if let Some(h) = &settings.hyperparameters {
        let refused = |e: String| ApiError::bad_request(format!("hyperparameters: {e}"));
        // The ranges do not depend on the defaults they override, so any kind will do here.
        let overrides = h.overrides().map_err(refused)?;
        Hyper::defaults(Kind::CrossEncoder, 0)
            .with(&overrides)
            .map_err(refused)?;
        let export = h.export.unwrap_or_default();
        export.check(&overrides).map_err(refused)?;
    }
    validated_dataset(state, &settings.dataset_id, "settings.dataset_id").await?;
    Ok(())
}

/// The canonical name of a model that can be trained from (none: the default model); `field`
/// names where the name came from.
pub async fn existing_model(
    state: &AppState,
    name: Option<&str>,
    field: &str,
) -> Result<String, ApiError> {
    let refused = |e: UnknownModel| ApiError::bad_request(format!("{field}: {}", e.0));
    let canonical = state
        .catalog
        .canonical(name.unwrap_or_default())
        .map_err(refused)?;
    let catalog = state.catalog.clone();
    let name = canonical.clone();
    crate::blocking(move || Ok(catalog.dir(&name)))
        .await?
        .map_err(refused)?;
    Ok(canonical)
}

/// A dataset a fine-tune can train on; `field` names where its id came from.
pub async fn validated_dataset(
    state: &AppState,
    id: &str,
    field: &str,
) -> Result<DatasetRow, ApiError> {
    let key = id.to_string();
    let dataset = state
        .db(move |s| s.dataset(&key))
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("{field}: no dataset with id {id:?}")))?;
    if dataset.dataset_type != RERANK_DATASET_TYPE {
        return Err(ApiError::bad_request(format!(
            "dataset {} has type {:?}; rerank fine-tuning takes {RERANK_DATASET_TYPE:?}",
            dataset.id, dataset.dataset_type
        )));
    }
    match dataset.validation_status {
        ValidationStatus::Validated => Ok(dataset),
        ValidationStatus::Failed => Err(ApiError::bad_request(format!(
            "dataset {} failed validation: {}",
            dataset.id,
            dataset.validation_error.unwrap_or_default()
        ))),
        pending => Err(ApiError::bad_request(format!(
            "dataset {} is not validated yet ({}); wait for validation_status \"validated\"",
            dataset.id,
            pending.as_str()
        ))),
    }
}

/// Queue a fine-tune of a rerank model.
#[utoipa::path(post, path = "/v1/finetuning/finetuned-models", tag = "finetuning", request_body = CreateRequest,
    responses((status = 200, body = ModelResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<Json<ModelResponse>, ApiError> {
    let name = check_name("name", &req.name)?;
    check_settings(&state, &req.settings).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let row = state
        .db(move |s| s.insert_model(&id, &name, &req.settings))
        .await?;
    state.jobs.wake();
    Ok(Json(ModelResponse {
        finetuned_model: row.into(),
    }))
}

/// Fine-tuned models, oldest first unless `order_by=created_at desc`.
#[utoipa::path(get, path = "/v1/finetuning/finetuned-models", tag = "finetuning", params(OrderedPageParams),
    responses((status = 200, body = ListFinetunedModelsResponse), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<OrderedPageParams>,
) -> Result<Json<ListFinetunedModelsResponse>, ApiError> {
    let order = parse_order(p.order_by.as_deref(), Order::Oldest)?;
    let page = Paging::new(p.page_size, p.page_token.as_deref())?;
    let rows = state
        .db(move |s| s.models(order, page.offset, page.size))
        .await?;
    Ok(Json(ListFinetunedModelsResponse {
        next_page_token: page.next(rows.total),
        total_size: rows.total,
        finetuned_models: rows.items.into_iter().map(FinetunedModel::from).collect(),
    }))
}

async fn row(state: &AppState, id: &str) -> Result<ModelRow, ApiError> {
    let key = id.to_string();
    state
        .db(move |s| s.model(&key))
        .await?
        .ok_or_else(|| not_found(id))
}

/// One fine-tuned model: settings, status, progress and metrics.
#[utoipa::path(get, path = "/v1/finetuning/finetuned-models/{id}", tag = "finetuning", params(("id" = String, Path)),
    responses((status = 200, body = ModelResponse), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ModelResponse>, ApiError> {
    Ok(Json(ModelResponse {
        finetuned_model: row(&state, &id).await?.into(),
    }))
}

/// Rename a fine-tuned model, or change its settings while it is still queued.
#[utoipa::path(patch, path = "/v1/finetuning/finetuned-models/{id}", tag = "finetuning", params(("id" = String, Path)),
    request_body = UpdateRequest,
    responses((status = 200, body = ModelResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Json<ModelResponse>, ApiError> {
    let name = req
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let current = row(&state, &id).await?;
    let settings = req.settings.filter(|s| *s != current.settings);
    if let Some(settings) = &settings {
        check_settings(&state, settings).await?;
    }
    let key = id.clone();
    match state.db(move |s| s.update_model(&key, name.as_deref(), settings.as_ref())).await? {
        ModelUpdate::Updated(row) => Ok(Json(ModelResponse { finetuned_model: (*row).into() })),
        ModelUpdate::Missing => Err(not_found(&id)),
        ModelUpdate::Locked(status) => Err(ApiError::bad_request(format!(
            "the settings of model {id} cannot change: it is {} (settings change only while STATUS_QUEUED); \
             create a new fine-tuned model instead",
            status.as_str()
        ))),
    }
}

/// Delete a fine-tuned model: a running job stops, a trained model stops answering and its
/// files go.
#[utoipa::path(delete, path = "/v1/finetuning/finetuned-models/{id}", tag = "finetuning", params(("id" = String, Path)),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Empty>, ApiError> {
    let key = id.clone();
    let status = state
        .db(move |s| s.delete_model(&key))
        .await?
        .ok_or_else(|| not_found(&id))?;
    if status == JobStatus::Finetuning {
        state.jobs.cancel(&id);
    }
    // The row went first, with a tombstone from which the next start finishes the delete if the
    // process dies before the files go. Once they have, the loaded copy goes too.
    let model = crate::jobs::model_of(&id);
    let removed = model.clone();
    let files = state.clone();
    crate::blocking(move || {
        files.catalog.registry().delete(&removed)?;
        files.jobs.forget(&id).map_err(ApiError::internal)
    })
    .await?;
    state.batcher.evict(&model);
    Ok(Json(Empty {}))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetryParams {
    /// Drop the job's saved training state and train from the beginning (default false: resume
    /// from its last validation).
    from_scratch: Option<bool>,
}

fn not_failed(id: &str, status: JobStatus) -> ApiError {
    ApiError::conflict(format!(
        "model {id} is {}; only a STATUS_FAILED or STATUS_PAUSED job can be retried",
        status.as_str()
    ))
}

/// Retry a failed or cancelled (paused) fine-tune. It goes back to the queue and resumes from its
/// last validation (the state a run saves there stays until the job is retried or deleted), or
/// trains from the beginning with `from_scratch=true`. A finerank extension.
#[utoipa::path(post, path = "/v1/finetuning/finetuned-models/{id}/retry", tag = "finetuning",
    params(("id" = String, Path), RetryParams),
    responses((status = 200, body = ModelResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<RetryParams>,
) -> Result<Json<ModelResponse>, ApiError> {
    let current = row(&state, &id).await?;
    if !matches!(current.status, JobStatus::Failed | JobStatus::Paused) {
        return Err(not_failed(&id, current.status));
    }
    // The job failed perhaps because its dataset or base model went; it could not train again.
    check_settings(&state, &current.settings).await?;
    let (jobs, key) = (state.clone(), id.clone());
    let from_scratch = p.from_scratch.unwrap_or(false);
    let requeued = crate::blocking(move || {
        jobs.jobs
            .retry(&key, from_scratch)
            .map_err(ApiError::internal)
    })
    .await?;
    let now = row(&state, &id).await?;
    if !requeued {
        return Err(not_failed(&id, now.status));
    }
    Ok(Json(ModelResponse {
        finetuned_model: now.into(),
    }))
}

/// Cancel a queued or training fine-tune: it becomes `STATUS_PAUSED` at once, and its worker stops
/// it at its next step (on another machine, at its next heartbeat). It keeps the state its last
/// validation saved, so `/retry` resumes it from there. A finerank extension.
#[utoipa::path(post, path = "/v1/finetuning/finetuned-models/{id}/cancel", tag = "finetuning",
    params(("id" = String, Path)),
    responses((status = 200, body = ModelResponse), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ModelResponse>, ApiError> {
    row(&state, &id).await?;
    let (jobs, key) = (state.clone(), id.clone());
    let paused = crate::blocking(move || jobs.jobs.pause(&key).map_err(ApiError::from)).await?;
    let now = row(&state, &id).await?;
    if !paused {
        return Err(ApiError::conflict(format!(
            "model {id} is {}; only a STATUS_QUEUED or STATUS_FINETUNING job can be cancelled",
            now.status.as_str()
        )));
    }
    Ok(Json(ModelResponse {
        finetuned_model: now.into(),
    }))
}

/// Status changes of a fine-tuned model, most recent first unless `order_by=created_at`.
#[utoipa::path(get, path = "/v1/finetuning/finetuned-models/{id}/events", tag = "finetuning",
    params(("id" = String, Path), OrderedPageParams),
    responses((status = 200, body = EventsResponse), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<OrderedPageParams>,
) -> Result<Json<EventsResponse>, ApiError> {
    let order = parse_order(p.order_by.as_deref(), Order::Newest)?;
    row(&state, &id).await?;
    let page = Paging::new(p.page_size, p.page_token.as_deref())?;
    let rows = state
        .db(move |s| s.events(&id, order, page.offset, page.size))
        .await?;
    Ok(Json(EventsResponse {
        next_page_token: page.next(rows.total),
        total_size: rows.total,
        events: rows.items.into_iter().map(Event::from).collect(),
    }))
}

/// Validation metrics at each evaluation during training, most recent step first.
#[utoipa::path(get, path = "/v1/finetuning/finetuned-models/{id}/training-step-metrics", tag = "finetuning",
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = StepMetricsResponse), (status = 404, body = ErrorBody)))]
pub async fn step_metrics(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Result<Json<StepMetricsResponse>, ApiError> {
    row(&state, &id).await?;
    let page = Paging::new(p.page_size, p.page_token.as_deref())?;
    let rows = state
        .db(move |s| s.step_metrics(&id, page.offset, page.size))
        .await?;
    Ok(Json(StepMetricsResponse {
        next_page_token: page.next(rows.total),
        step_metrics: rows.items.into_iter().map(StepMetrics::from).collect(),
    }))
}

/// The training loss of every optimizer step, in step order. A finerank extension: Cohere's
/// step metrics carry a loss only beside each evaluation, too few points for a curve.
#[utoipa::path(get, path = "/v1/finetuning/finetuned-models/{id}/training-losses", tag = "finetuning",
    params(("id" = String, Path), LossParams),
    responses((status = 200, body = LossesResponse), (status = 404, body = ErrorBody)))]
pub async fn losses(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<LossParams>,
) -> Result<Json<LossesResponse>, ApiError> {
    row(&state, &id).await?;
    let after = p.after_step.unwrap_or(0);
    let rows = state.db(move |s| s.step_losses(&id, after)).await?;
    Ok(Json(LossesResponse {
        losses: rows
            .into_iter()
            .map(|(step_number, loss)| StepLoss { step_number, loss })
            .collect(),
    }))
}
