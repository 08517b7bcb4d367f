//! The OpenAPI document, generated from the handlers' annotations, and a self-contained page at
//! `/docs` that renders it (no external assets: the server may run offline).
use axum::body::Bytes;
use axum::http::{header, Method};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::auth::{Scope, OPEN_PATHS};
use crate::routes::tei;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "finerank",
        description = "Cohere-compatible rerank and rerank fine-tuning, self-hosted. Point a Cohere \
                       client's base_url here. TEI's /rerank and /info are served too."
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
        openapi.security = Some(vec![SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// The errors every operation can answer whatever its handler does, from the layers and
/// extractors in front of it, so that a client generated from the document expects them: 401
/// from the keys, 403 from a read-only key on anything but reading and reranking, 429 from the
/// key's rate limit, 400 from a query or path that does not parse, 400/413/422 from a body, and
/// 503/507 when a write finds the data directory read-only or full. The open paths need no key.
/// Applied to the finished document: the derive's modifiers run before the routes add their
/// paths.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, &mut item.get),
                (Method::POST, &mut item.post),
                (Method::PATCH, &mut item.patch),
                (Method::DELETE, &mut item.delete),
            ];
            // TEI's clients read TEI's error shape.
            let schema = match path.as_str() {
                tei::PATH => "TeiError",
                _ => "ErrorBody",
            };
            for (method, op) in operations {
                let Some(op) = op.as_mut() else { continue };
                if OPEN_PATHS.contains(&path.as_str()) {
                    // An empty list overrides the document's global requirement.
                    op.security = Some(Vec::new());
                    continue;
                }
                let mut errors = vec![
                    (401, "No API key, or a wrong one (when the server has keys)"),
                    (
                        429,
                        "Over the key's rate limit (--rate-limit); Retry-After says when",
                    ),
                ];
                if !Scope::ReadOnly.permits(&method, path) {
                    errors.push((403, "The API key is read-only (--api-key-read-only)"));
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    errors.push((400, "A query or path parameter is invalid"));
                }
                if op.request_body.is_some() {
                    errors.extend([
                        (400, "The body is malformed or a field is invalid"),
                        (413, "The body is larger than the server's limit"),
                        (422, "The body does not have the documented shape"),
                    ]);
                }
                let stores = op
                    .tags
                    .iter()
                    .flatten()
                    .any(|t| t == "datasets" || t == "finetuning");
                if method != Method::GET && stores {
                    errors.extend([
                        (503, "The data directory is read-only"),
                        (507, "The data directory is full"),
                    ]);
                }
                for (status, description) in errors {
                    add_error(op, schema, status, description);
                }
            }
        }
    }
}

/// Documents `status` with the error body `schema`, unless the handler already did.
fn add_error(op: &mut Operation, schema: &str, status: u16, description: &str) {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build();
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", body)
                    .build(),
            )
        });
}

const DOCS_PAGE: &str = include_str!("docs.html");

/// `/openapi.json` and `/docs`.
pub fn router(mut spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    ErrorResponses.modify(&mut spec);
    let json = Bytes::from(spec.to_pretty_json().expect("the document serializes"));
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .route("/docs", get(|| async { Html(DOCS_PAGE).into_response() }))
}
