//! The web dashboard: the page at `/` and its files under `/assets/`, compiled into the binary so
//! that the server needs nothing beside it (it often runs offline). Plain HTML, CSS and ES modules
//! over the public API, with uPlot for the charts (vendored; `assets/vendor.sh` says from where).
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::AppState;

const ASSET_PREFIX: &str = "/assets/";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page runs no inline script and loads nothing from elsewhere, so even a rendering mistake
/// cannot run markup that a dataset or document smuggled in.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal => $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

static INDEX: Asset = asset!("index.html" => "text/html; charset=utf-8");

/// Everything under `/assets/`.
static ASSETS: &[Asset] = &[
    asset!("app.css" => CSS),
    asset!("favicon.svg" => "image/svg+xml"),
    asset!("js/app.js" => JS),
    asset!("js/api.js" => JS),
    asset!("js/ui.js" => JS),
    asset!("js/charts.js" => JS),
    asset!("js/models.js" => JS),
    asset!("js/model.js" => JS),
    asset!("js/create.js" => JS),
    asset!("js/playground.js" => JS),
    asset!("vendor/uPlot.iife.min.js" => JS),
    asset!("vendor/uPlot.min.css" => CSS),
];

/// The page and its files hold no data, and a browser cannot send a key when it navigates, so
/// they are served without one; the page asks for the key and sends it with each API call.
pub fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with(ASSET_PREFIX)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { respond(&INDEX) }))
        .route("/assets/{*path}", get(file))
}

async fn file(ApiPath(path): ApiPath<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.path == path)
        .map(respond)
        .ok_or_else(|| ApiError::not_found(format!("the dashboard has no file {path:?}")))
}

fn respond(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // Revalidated on each load, so a new binary's dashboard is seen at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        asset.body,
    )
        .into_response()
}
