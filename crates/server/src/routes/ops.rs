//! Operations: liveness, readiness, Prometheus metrics, and JSON answers for unknown routes and
//! methods.
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

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `not ready` with the reason.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Readiness: 200 once the default model is loaded and the database and the file store (or,
/// without one, the data directory) answer; 503 with the reason otherwise, and from the moment
/// a shutdown begins. For a load balancer's or Kubernetes' readiness probe (no key needed);
/// `/health` is liveness.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let checked = crate::blocking(move || Ok(unready(&state))).await;
    let reasons = checked.unwrap_or_else(|e| vec![e.message]);
    match reasons.is_empty() {
        true => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                reason: None,
            }),
        ),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "not ready",
                reason: Some(reasons.join("; ")),
            }),
        ),
    }
}

/// Why the server cannot serve now; empty when it can.
fn unready(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    let default = state.catalog.default_name();
    if !state.batcher.is_open() {
        reasons.push("the server is shutting down".to_string());
    } else if !state.batcher.loaded().iter().any(|m| m == default) {
        reasons.push(format!("the default model {default} is not loaded"));
    }
    if let Err(e) = state.store.models_by_status() {
        reasons.push(format!("the database does not answer: {e}"));
    }
    if let Err(e) = state.catalog.registry().check() {
        reasons.push(format!("the model store does not answer: {e}"));
    }
    reasons
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
