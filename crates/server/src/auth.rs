//! Optional bearer keys. With keys configured, every endpoint but `/health` and the dashboard's
//! static files answers 401 without `Authorization: Bearer <key>`. Keys are compared as SHA-256
//! digests in constant time, so neither a key's content nor its length leaks through timing.
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;
use crate::AppState;

/// Reachable without a key: load balancers and orchestrators probe it.
pub const OPEN_PATHS: &[&str] = &["/health"];

pub struct Keys {
    digests: Vec<[u8; 32]>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    pub fn new(keys: &[String]) -> Keys {
        Keys {
            digests: keys
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| digest(k))
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    fn accepts(&self, token: &str) -> bool {
        matches(&self.digests, &digest(token)).into()
    }
}

/// Whether `offered` is one of `keys`, in a time that depends on neither: every key is compared
/// in full with `subtle`'s constant-time equality, whichever matches, and all are digests of the
/// same length, so a key's length does not show either.
fn matches(keys: &[[u8; 32]], offered: &[u8; 32]) -> Choice {
    keys.iter()
        .fold(Choice::from(0), |found, key| found | key.ct_eq(offered))
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.keys;
    let path = req.uri().path();
    if !keys.enabled() || OPEN_PATHS.contains(&path) || crate::dashboard::is_public(path) {
        return next.run(req).await;
    }
    let message = match bearer(&req) {
        Some(token) if keys.accepts(token) => return next.run(req).await,
        Some(_) => "invalid API key",
        None => "no API key: send the header `Authorization: Bearer <key>`",
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_is_subtles_constant_time_one() {
        // The type is the test: a `Choice` comes only from `subtle`'s constant-time operations,
        // while `==` on the digests (which stops at the first byte that differs) gives a `bool`.
        let keys = [digest("first"), digest("second-key")];
        let found: Choice = matches(&keys, &digest("second-key"));
        assert!(bool::from(found));
        let missing: Choice = matches(&keys, &digest("second-kez"));
        assert!(!bool::from(missing));
    }

    #[test]
    fn only_a_whole_configured_key_is_accepted() {
        let keys = Keys::new(&["first".into(), "second-key".into(), String::new()]);
        assert!(keys.enabled());
        assert!(keys.accepts("first") && keys.accepts("second-key"));
        for wrong in [
            "",
            "firs",
            "firstx",
            "FIRST",
            "second-ke",
            "second-key ",
            "first\0",
            "second",
        ] {
            assert!(!keys.accepts(wrong), "{wrong:?} was accepted");
        }
        assert!(
            !Keys::new(&[String::new()]).enabled(),
            "an empty key is no key"
        );
    }
}
