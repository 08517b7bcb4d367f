//! The OpenAPI document, generated from the handlers' annotations, and a self-contained page at
//! `/docs` that renders it (no external assets: the server may run offline).
use axum::body::Bytes;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "finerank",
        description = "Cohere-compatible rerank and rerank fine-tuning, self-hosted. Point a Cohere \
                       client's base_url here. TEI's /rerank is served too."
    ),
    modifiers(&BearerKeys),
    tags(
        (name = "rerank", description = "Rank documents for a query"),
        (name = "datasets", description = "Training data for fine-tuning"),
        (name = "finetuning", description = "Fine-tuned rerank models and their jobs"),
        (name = "models", description = "Models the server answers to"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

/// Documents the optional bearer keys.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

const DOCS_PAGE: &str = include_str!("docs.html");

/// `/openapi.json` and `/docs`.
pub fn router(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    let json = Bytes::from(spec.to_pretty_json().expect("the document serializes"));
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .route("/docs", get(|| async { Html(DOCS_PAGE).into_response() }))
}
