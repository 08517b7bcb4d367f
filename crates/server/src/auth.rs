//! Who may call what. With bearer keys configured, every endpoint but the open ones (`/health`, `/health/ready`,
//! the API's description at `/docs` and `/openapi.json`, and the dashboard's static files)
//! answers 401 without `Authorization: Bearer <key>`. A read-only key may read and rerank, and
//! gets 403 for anything that changes the server's data. Keys are compared as SHA-256 digests in
//! constant time, so neither a key's content nor its length leaks through timing. An admitted
//! request then spends from its caller's rate limit (`limits`).
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, CtOption};

use crate::error::ApiError;
use crate::routes::rerank::RERANK_PATHS;
use crate::AppState;

/// Reachable without a key: load balancers and orchestrators probe `/health` and
/// `/health/ready`, and the API's description holds no data (a browser opening `/docs` cannot
/// send a key either).
pub const OPEN_PATHS: &[&str] = &["/health", "/health/ready", "/docs", "/openapi.json"];

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Full,
    /// For an application that only serves: read anything, and rerank.
    ReadOnly,
}

impl Scope {
    /// Reranking is a POST that changes nothing, so a read-only key may do it; every other POST,
    /// PATCH or DELETE uploads, deletes or starts a fine-tune.
    pub fn permits(self, method: &Method, path: &str) -> bool {
        self == Scope::Full
            || method == Method::GET
            || method == Method::HEAD
            || (method == Method::POST && RERANK_PATHS.contains(&path))
    }
}

/// Who made an admitted request: the index of the configured key it sent, or `None` on a server
/// without keys. Rate limits are kept per caller.
pub type Caller = Option<usize>;

pub struct Keys {
    digests: Vec<[u8; 32]>,
    scopes: Vec<Scope>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    pub fn new(full: &[String], read_only: &[String]) -> Keys {
        let (digests, scopes) = [(full, Scope::Full), (read_only, Scope::ReadOnly)]
            .into_iter()
            .flat_map(|(keys, scope)| keys.iter().map(move |k| (k, scope)))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, scope)| (digest(k), scope))
            .unzip();
        Keys { digests, scopes }
    }

    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The configured key `token` is, if it is one.
    fn find(&self, token: &str) -> Option<usize> {
        Option::<u64>::from(position(&self.digests, &digest(token))).map(|i| i as usize)
    }

    /// The caller and its scope, or the 401 for a request without a valid key.
    fn identify(&self, req: &Request) -> Result<(Caller, Scope), ApiError> {
        if !self.enabled() {
            return Ok((None, Scope::Full));
        }
        let message = match bearer(req) {
            Some(token) => match self.find(token) {
                Some(i) => return Ok((Some(i), self.scopes[i])),
                None => "invalid API key",
            },
            None => "no API key: send the header `Authorization: Bearer <key>`",
        };
        Err(ApiError::new(StatusCode::UNAUTHORIZED, message))
    }
}

/// Where `offered` is in `keys`, in a time that depends on neither: every key is compared in full
/// with `subtle`'s constant-time equality, whichever matches, the position is selected without a
/// branch, and all are digests of the same length, so a key's length does not show either.
fn position(keys: &[[u8; 32]], offered: &[u8; 32]) -> CtOption<u64> {
    let (found, at) =
        keys.iter()
            .zip(0u64..)
            .fold((Choice::from(0), 0u64), |(found, at), (key, i)| {
                let hit = key.ct_eq(offered);
                (found | hit, u64::conditional_select(&at, &i, hit))
            });
    CtOption::new(at, found)
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Admits a request: a valid key when keys are configured, in a scope that permits the request,
/// within its caller's rate limit.
pub async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path) || crate::dashboard::is_public(path) {
        return next.run(req).await;
    }
    let (caller, scope) = match state.keys.identify(&req) {
        Ok(found) => found,
        Err(e) => {
            let mut response = e.into_response();
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if !scope.permits(req.method(), path) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this API key is read-only: it may rerank, list and get, but not {} {path}; \
                 use a key given with --api-key",
                req.method()
            ),
        )
        .into_response();
    }
    if let Err(limited) = state.limits.check(caller) {
        return limited.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_is_subtles_constant_time_one() {
        // The type is the test: a `CtOption` comes only from `subtle`'s constant-time operations,
        // while `==` on the digests (which stops at the first byte that differs) gives a `bool`.
        let keys = [digest("first"), digest("second-key")];
        let found: CtOption<u64> = position(&keys, &digest("second-key"));
        assert_eq!(Option::from(found), Some(1));
        let missing: CtOption<u64> = position(&keys, &digest("second-kez"));
        assert_eq!(Option::<u64>::from(missing), None);
    }

    #[test]
    fn only_a_whole_configured_key_is_accepted_in_its_scope() {
        let keys = Keys::new(&["first".into(), String::new()], &["second-key".into()]);
        assert!(keys.enabled());
        assert_eq!(
            keys.find("first").map(|i| keys.scopes[i]),
            Some(Scope::Full)
        );
        assert_eq!(
            keys.find("second-key").map(|i| keys.scopes[i]),
            Some(Scope::ReadOnly)
        );
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
            assert_eq!(keys.find(wrong), None, "{wrong:?} was accepted");
        }
        assert!(
            !Keys::new(&[String::new()], &[]).enabled(),
            "an empty key is no key"
        );
    }

    #[test]
    fn a_read_only_key_reads_and_reranks_only() {
        let read_only = Scope::ReadOnly;
        for path in RERANK_PATHS {
            assert!(read_only.permits(&Method::POST, path));
        }
        assert!(read_only.permits(&Method::GET, "/v1/datasets"));
        for (method, path) in [
            (Method::POST, "/v1/datasets"),
            (Method::DELETE, "/v1/datasets/x"),
            (Method::POST, "/v1/finetuning/finetuned-models"),
            (Method::PATCH, "/v1/finetuning/finetuned-models/x"),
            (Method::DELETE, "/v1/finetuning/finetuned-models/x"),
            (Method::PUT, "/v1/rerank"),
        ] {
            assert!(!read_only.permits(&method, path), "{method} {path}");
            assert!(Scope::Full.permits(&method, path));
        }
    }
}
