//! What a fine-tune's hyperparameters will be, for a form to show before the job is created: each
//! one's default for a base model and a dataset, its allowed range, and what it does. A finerank
//! extension: Cohere documents these only in prose.
use axum::extract::State;
use axum::Json;
use finerank_engine::Kind;
use finerank_train::{Hyperparameters, HYPERPARAMETERS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::finetune::{existing_model, validated_dataset};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// The validated dataset to train on: the defaults depend on its size.
    dataset_id: String,
    /// The model to start from (default: the default model): the defaults depend on its kind.
    base_model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HyperparameterInfo {
    /// The field of `settings.hyperparameters`.
    name: &'static str,
    description: &'static str,
    /// What the job uses when the field is left out.
    default: f64,
    /// The least value allowed; itself refused when `exclusive_minimum`.
    minimum: f64,
    exclusive_minimum: bool,
    /// The largest value allowed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    maximum: Option<f64>,
    /// Whole numbers only.
    integer: bool,
}

#[derive(Serialize, ToSchema)]
pub struct HyperparametersResponse {
    /// The base model's name, as `settings.base_model.name` resolves it.
    base_model: String,
    /// `bi-encoder` or `cross-encoder`.
    #[schema(value_type = String)]
    kind: Kind,
    /// Rows the run trains on: the training file's, less the tenth held out for validation when
    /// the dataset has no evaluation file.
    train_rows: usize,
    hyperparameters: Vec<HyperparameterInfo>,
}

/// The kind a base model trains as: the default model's as it loaded, a fine-tuned model's as it
/// was recorded.
async fn kind_of(state: &AppState, canonical: &str) -> Result<Kind, ApiError> {
    if canonical == state.catalog.default_name() {
        return Ok(state.batcher.default_kind());
    }
    let registry = state.catalog.registry().clone();
    let id = canonical.to_string();
    let record = crate::blocking(move || registry.get(&id).map_err(ApiError::from)).await?;
    record.map(|(r, _)| r.kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "base_model: no fine-tuned model {canonical:?} is ready"
        ))
    })
}

/// The hyperparameters of a fine-tune of `base_model` on `dataset_id`: defaults, ranges and
/// descriptions.
#[utoipa::path(get, path = "/v1/finetuning/hyperparameters", tag = "finetuning", params(Params),
    responses((status = 200, body = HyperparametersResponse), (status = 400, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Json<HyperparametersResponse>, ApiError> {
    let base_model = existing_model(&state, p.base_model.as_deref(), "base_model").await?;
    let kind = kind_of(&state, &base_model).await?;
    let dataset = validated_dataset(&state, &p.dataset_id, "dataset_id").await?;
    let rows = dataset
        .metrics
        .as_ref()
        .map_or(0, |m| m.finetune_dataset_metrics.train_examples);
    // As finerank-train's run_job holds out validation rows when there is no validation file.
    let (_, valid) = state.uploads.training_files(&dataset)?;
    let train_rows = match valid {
        Some(_) => rows,
        None => rows.saturating_sub((rows / 10).max(1)),
    };
    let defaults = Hyperparameters::defaults(kind, train_rows);
    Ok(Json(HyperparametersResponse {
        base_model,
        kind,
        train_rows,
        hyperparameters: HYPERPARAMETERS
            .iter()
            .map(|s| HyperparameterInfo {
                name: s.name,
                description: s.description,
                default: (s.value)(&defaults),
                minimum: s.minimum,
                exclusive_minimum: s.exclusive_minimum,
                maximum: s.maximum,
                integer: s.integer,
            })
            .collect(),
    }))
}
