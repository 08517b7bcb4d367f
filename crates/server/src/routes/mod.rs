//! The HTTP routes, one module per part of the API, registered with their OpenAPI descriptions
//! so that the document at `/openapi.json` is generated from the handlers themselves.
pub mod datasets;
pub mod finetune;
pub mod hyperparameters;
pub mod models;
pub mod ops;
pub mod rerank;
pub mod tei;

use axum::extract::DefaultBodyLimit;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::store::Order;
use crate::AppState;

/// Names are shown, never used as paths; the bound keeps them readable.
const MAX_NAME_CHARS: usize = 256;
/// Cohere's page size when none (or 0) is given, and ours at most.
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

pub fn router(upload_limit: usize) -> OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    // Uploads may be far larger than JSON bodies.
    let (schemas, paths, upload) = routes!(datasets::list, datasets::create);
    let upload = upload.layer(DefaultBodyLimit::max(upload_limit));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(rerank::v1))
        .routes(routes!(rerank::v2))
        .routes(routes!(tei::rerank))
        .routes(routes!(tei::info))
        .routes((schemas, paths, upload))
        .routes(routes!(datasets::usage))
        .routes(routes!(datasets::get, datasets::delete))
        .routes(routes!(finetune::create, finetune::list))
        .routes(routes!(finetune::get, finetune::update, finetune::delete))
        .routes(routes!(finetune::retry))
        .routes(routes!(finetune::cancel))
        .routes(routes!(finetune::events))
        .routes(routes!(finetune::step_metrics))
        .routes(routes!(finetune::losses))
        .routes(routes!(hyperparameters::get))
        .routes(routes!(models::list))
        .routes(routes!(models::get))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Results per page (default 50, at most 1000).
    page_size: Option<i64>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderedPageParams {
    /// Results per page (default 50, at most 1000).
    page_size: Option<i64>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
    /// `created_at` (oldest first) or `created_at desc` (newest first).
    order_by: Option<String>,
}

/// A page of a list. The token is the offset of the next page; it is opaque to clients.
#[derive(Clone, Copy)]
pub struct Paging {
    pub offset: usize,
    pub size: usize,
}

impl Paging {
    pub fn new(page_size: Option<i64>, page_token: Option<&str>) -> Result<Paging, ApiError> {
        let size = match page_size {
            None | Some(0) => DEFAULT_PAGE_SIZE,
            Some(n) if n < 0 => {
                return Err(ApiError::bad_request(format!(
                    "page_size must be positive, got {n}"
                )))
            }
            Some(n) => (n as usize).min(MAX_PAGE_SIZE),
        };
        let offset = match page_token.map(str::trim).filter(|t| !t.is_empty()) {
            None => 0,
            Some(token) => token.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "page_token {token:?} is not a token this server gave out"
                ))
            })?,
        };
        Ok(Paging { offset, size })
    }

    /// The token of the page after this one; empty when this is the last.
    pub fn next(&self, total: usize) -> String {
        // The offset comes from the client's token, so it may be anywhere up to usize::MAX.
        let next = self.offset.saturating_add(self.size);
        if next < total {
            next.to_string()
        } else {
            String::new()
        }
    }
}

pub fn parse_order(order_by: Option<&str>, default: Order) -> Result<Order, ApiError> {
    match order_by.map(|o| o.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(default),
        Some("created_at") | Some("created_at asc") => Ok(Order::Oldest),
        Some("created_at desc") => Ok(Order::Newest),
        Some(other) => Err(ApiError::bad_request(format!(
            "order_by {other:?} is not supported: use \"created_at\" or \"created_at desc\""
        ))),
    }
}

/// A user-given name, trimmed; `field` says where it came from.
pub fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{field} is empty; give a name"
        )));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_string())
}
