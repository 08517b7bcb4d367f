//! Operations: liveness, Prometheus metrics, and JSON answers for unknown routes and methods.
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Liveness: the server answers (no key needed).
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // The job tables are counted at scrape time, so the gauges are never stale.
    let (models, datasets) = state
        .db(|s| Ok((s.models_by_status()?, s.datasets_by_status()?)))
        .await?;
    let m = &state.metrics;
    m.finetuned_models.reset();
    for (status, n) in models {
        m.finetuned_models
            .with_label_values(&[&status])
            .set(n as i64);
    }
    m.datasets.reset();
    for (status, n) in datasets {
        m.datasets.with_label_values(&[&status]).set(n as i64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    ))
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {method} {}; GET /docs lists the API",
        uri.path()
    ))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
