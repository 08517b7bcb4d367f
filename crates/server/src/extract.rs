//! Extractors whose every failure is an [`ApiError`] with a message a client can act on.
//!
//! JSON bodies are read whatever `Content-Type` says (Cohere's SDK and curl users do not always
//! send `application/json`): a body that is not JSON is a 400, a body of the wrong shape a 422
//! naming the field (`documents[3]: invalid type: ...`), one over the limit a 413.
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::{unreadable_body, ApiError};
use crate::AppState;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| unreadable_body(r.status(), r.body_text(), limit, "--max-body-bytes"))?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON object",
            ))
        }
        // serde would take an array for a struct's fields in order; no client means that.
        Some(b'[') => {
            return Err(ApiError::unprocessable(
                "invalid request body: expected a JSON object, found an array",
            ))
        }
        Some(_) => {}
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data if path == "." => {
                ApiError::unprocessable(format!("invalid request body: {inner}"))
            }
            Category::Data => {
                ApiError::unprocessable(format!("invalid request body: {path}: {inner}"))
            }
            _ => ApiError::bad_request(format!("malformed JSON body: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(value)
}

#[derive(FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
