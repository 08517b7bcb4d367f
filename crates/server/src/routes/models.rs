//! `GET /v1/models`: what `model` may name, in Cohere's shape. The default model and its aliases
//! come first, then every model in the registry, whether the server or the CLI trained it.
use axum::extract::State;
use axum::Json;
use finerank_engine::ModelRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Paging;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::AppState;

const RERANK: &str = "rerank";

#[derive(Serialize, ToSchema)]
pub struct ModelInfo {
    /// What to pass as `model`.
    name: String,
    endpoints: Vec<String>,
    default_endpoints: Vec<String>,
    finetuned: bool,
    is_deprecated: bool,
    /// For an alias, the model that answers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    alias_of: Option<String>,
    /// For a fine-tuned model: its name and the model it was trained from.
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ListModelsResponse {
    models: Vec<ModelInfo>,
    /// Empty when there are no more.
    next_page_token: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    page_size: Option<i64>,
    page_token: Option<String>,
    /// Only models serving this endpoint (all of them serve `rerank`).
    endpoint: Option<String>,
    /// Only the default model.
    default_only: Option<bool>,
}

impl ModelInfo {
    fn new(name: &str, is_default: bool) -> ModelInfo {
        ModelInfo {
            name: name.to_string(),
            endpoints: vec![RERANK.into()],
            default_endpoints: if is_default {
                vec![RERANK.into()]
            } else {
                Vec::new()
            },
            finetuned: false,
            is_deprecated: false,
            alias_of: None,
            display_name: None,
            base_model: None,
            created_at: None,
        }
    }

    fn finetuned(record: ModelRecord) -> ModelInfo {
        ModelInfo {
            finetuned: true,
            display_name: Some(record.name),
            base_model: Some(record.base_model),
            created_at: Some(record.created_at),
            ..ModelInfo::new(&record.id, false)
        }
    }
}

/// Every model, in listing order.
async fn all(state: &AppState) -> Result<Vec<ModelInfo>, ApiError> {
    let catalog = &state.catalog;
    let default = catalog.default_name();
    let mut models = vec![ModelInfo::new(default, true)];
    models.extend(catalog.aliases().iter().map(|(alias, target)| ModelInfo {
        alias_of: Some(target.clone()),
        ..ModelInfo::new(alias, false)
    }));
    let registry = catalog.registry().clone();
    let records = crate::blocking(move || registry.list().map_err(ApiError::from)).await?;
    models.extend(records.into_iter().map(ModelInfo::finetuned));
    Ok(models)
}

/// Models that `/v1/rerank` answers to.
#[utoipa::path(get, path = "/v1/models", tag = "models", params(ListParams),
    responses((status = 200, body = ListModelsResponse), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<ListModelsResponse>, ApiError> {
    let page = Paging::new(p.page_size, p.page_token.as_deref())?;
    let mut models = match p.endpoint.as_deref() {
        None | Some(RERANK) => all(&state).await?,
        Some(_) => Vec::new(),
    };
    if p.default_only.unwrap_or(false) {
        models.retain(|m| !m.default_endpoints.is_empty());
    }
    let total = models.len();
    let models = models
        .into_iter()
        .skip(page.offset)
        .take(page.size)
        .collect();
    Ok(Json(ListModelsResponse {
        models,
        next_page_token: page.next(total),
    }))
}

/// One model by name.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "models", params(("model" = String, Path)),
    responses((status = 200, body = ModelInfo), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ModelInfo>, ApiError> {
    all(&state)
        .await?
        .into_iter()
        .find(|m| m.name == name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no model named {name:?}; GET /v1/models lists them"
            ))
        })
}
