//! Layers applied to every route: request ids with a tracing span, and API-key auth.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::config::IdSource;
use crate::dialect::Dialect;
use crate::error::ApiError;

/// The request's id (`x-request-id` as sent, or generated), in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Header carrying the request id both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Paths open without an API key.
pub const OPEN_PATHS: [&str; 2] = ["/health", "/metrics"];

/// An id a client sent, if usable: 1 to 128 visible ASCII characters.
pub fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_string())
}

/// Gives every request an id, runs it inside a `request` span and echoes the id.
pub async fn request_context(
    State(ids): State<Arc<dyn IdSource>>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = client_request_id(req.headers()).unwrap_or_else(|| ids.next_id());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let start = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
            "response headers sent"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// The bearer token of an `Authorization` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Constant-time comparison of a presented key with the configured one.
pub fn key_matches(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// What the auth layer needs.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// The expected key.
    pub key: Arc<str>,
    /// Dialects served, for the shape of 401s.
    pub dialects: Arc<[Dialect]>,
    /// Frontends' paths that need no key, besides [`OPEN_PATHS`].
    pub public: Arc<[&'static str]>,
}

/// Requires `Authorization: Bearer <key>` everywhere but [`OPEN_PATHS`] and
/// the frontends' public paths.
pub async fn require_api_key(State(auth): State<AuthState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path) || auth.public.contains(&path) {
        return next.run(req).await;
    }
    match bearer_token(req.headers()) {
        Some(token) if key_matches(token, &auth.key) => next.run(req).await,
        _ => {
            let dialect = Dialect::for_request_among(req.method(), path, &auth.dialects);
            unauthorized(dialect).into_response()
        }
    }
}

/// HTTP 401 in a dialect's shape.
pub fn unauthorized(dialect: Dialect) -> ApiError {
    let message = match dialect {
        Dialect::Ollama => "unauthorized: send `Authorization: Bearer <api key>`",
        _ => "Unauthorized: a valid API key is required (`Authorization: Bearer <api key>`)",
    };
    ApiError::new(dialect, StatusCode::UNAUTHORIZED, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            bearer_token(&headers("authorization", "Bearer abc")),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers("authorization", "bearer  abc ")),
            Some("abc")
        );
        assert_eq!(bearer_token(&headers("authorization", "Basic abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(key_matches("k1", "k1"));
        assert!(!key_matches("k1", "k2"));
        assert!(!key_matches("k", "k1"));
        assert!(!key_matches("", "k1"));
    }

    #[test]
    fn request_ids_are_validated() {
        assert_eq!(
            client_request_id(&headers("x-request-id", "abc-1")),
            Some("abc-1".into())
        );
        assert_eq!(client_request_id(&headers("x-request-id", "a b")), None);
        assert_eq!(
            client_request_id(&headers("x-request-id", &"x".repeat(200))),
            None
        );
    }
}
