//! The one error type of the API. Every failure, from a malformed body to a model that will not
//! load, becomes a status code and a body of `{"message": ...}`, as Cohere's API answers (TEI's
//! `/rerank` rewrites it into TEI's shape: `routes::tei`).
use std::io;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use finerank_engine::RegistryError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{ErrorKind, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// `flag` names the server option that sets the limit, so the operator knows what to raise.
    pub fn too_large(limit: usize, flag: &str) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than this server's limit of {limit} bytes ({flag})"
            ),
        )
    }

    /// Something on our side failed. The cause is logged; the client gets it too, since the
    /// operator and the client are usually the same person on a self-hosted server.
    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {message}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {message}"),
        )
    }

    /// The data directory cannot take a write. Not the client's fault, but not a bug either: the
    /// operator frees space or remounts, and the same request then succeeds, so the status says
    /// which (507 full, 503 read-only) and the message names the cause.
    fn storage(kind: io::ErrorKind, detail: impl std::fmt::Display) -> Option<ApiError> {
        let (status, what) = match kind {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                (StatusCode::INSUFFICIENT_STORAGE, "full")
            }
            io::ErrorKind::ReadOnlyFilesystem => (StatusCode::SERVICE_UNAVAILABLE, "read-only"),
            _ => return None,
        };
        tracing::error!("the data directory is {what}: {detail}");
        Some(ApiError::new(
            status,
            format!("the server's data directory is {what} ({detail}); nothing was saved, retry once the operator has fixed it"),
        ))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    /// The error itself rides along in the response's extensions, for a route whose clients
    /// expect another shape (TEI's `/rerank`) to rewrite it.
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message.clone(),
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// A JSON or multipart body that could not be read: over the limit, or cut off by the client
/// (a client's fault either way, so never a 5xx).
pub fn unreadable_body(status: StatusCode, detail: String, limit: usize, flag: &str) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(limit, flag),
        _ => ApiError::bad_request(format!("could not read the request body: {detail}")),
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("invalid query parameters: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request(format!("invalid path: {}", r.body_text()))
    }
}

impl From<io::Error> for ApiError {
    fn from(e: io::Error) -> ApiError {
        ApiError::storage(e.kind(), &e).unwrap_or_else(|| ApiError::internal(e))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match &e {
            RegistryError::Io { source, .. } => ApiError::storage(source.kind(), &e),
            // Another process is writing the model (a fine-tune publishing it): try again later.
            RegistryError::StagingInUse { .. } => Some(ApiError::conflict(e.to_string())),
            _ => None,
        }
        .unwrap_or_else(|| ApiError::internal(e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let kind = match e.kind() {
            ErrorKind::Full => io::ErrorKind::StorageFull,
            ErrorKind::ReadOnly => io::ErrorKind::ReadOnlyFilesystem,
            ErrorKind::Unavailable => {
                tracing::error!("{e}");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the server's database is unavailable ({e}); nothing was saved, retry shortly"),
                );
            }
            ErrorKind::Other => io::ErrorKind::Other,
        };
        ApiError::storage(kind, &e).unwrap_or_else(|| ApiError::internal(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_or_read_only_data_dir_says_so() {
        let full = ApiError::from(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(full.message.contains("data directory is full"), "{full}");
        let read_only = ApiError::from(io::Error::from(io::ErrorKind::ReadOnlyFilesystem));
        assert_eq!(read_only.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(read_only.message.contains("read-only"), "{read_only}");
        let other = ApiError::from(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
        let busy = ApiError::from(RegistryError::StagingInUse {
            path: "staging/x-ft".into(),
            owner: "42".into(),
        });
        assert_eq!(busy.status, StatusCode::CONFLICT, "{busy}");
        assert!(busy.message.contains("pid 42"), "{busy}");

        let database = |kind| ApiError::from(StoreError::new(kind, "the cause"));
        let full = database(ErrorKind::Full);
        assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(full.message.contains("database: the cause"), "{full}");
        assert_eq!(
            database(ErrorKind::ReadOnly).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let down = database(ErrorKind::Unavailable);
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(down.message.contains("database is unavailable"), "{down}");
        assert_eq!(
            database(ErrorKind::Other).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
