//! Composing the chosen frontends into one router with the shared layers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router, middleware};
use kiln_engine_api::EngineHandle;
use serde_json::json;

use crate::body::{BodyLimit, read_json_value};
use crate::config::HttpConfig;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::frontend::{Frontend, SharedRoute};
use crate::middleware::{AuthState, request_context, require_api_key};

/// The dialects of the mounted frontends, in request extensions.
#[derive(Debug, Clone)]
struct EnabledDialects(Arc<[Dialect]>);

/// Why the frontends could not be composed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The same frontend was given twice.
    #[error("the frontend `{0}` is listed twice: list each API family once")]
    DuplicateFrontend(String),
    /// No frontend was given.
    #[error("no frontend to serve: enable at least one of openai, tgi, ollama, metrics")]
    NoFrontend,
}

/// One router serving every frontend, plus `/health`, the shared
/// body-dispatched routes, JSON 404/405 answers in the path's dialect, the
/// body limit, API-key auth and request ids.
pub fn build_router(
    handle: EngineHandle,
    mut config: HttpConfig,
    frontends: &[Box<dyn Frontend>],
) -> Result<Router, BuildError> {
    if frontends.is_empty() {
        return Err(BuildError::NoFrontend);
    }
    let mut names: Vec<String> = Vec::new();
    for f in frontends {
        if names.iter().any(|n| n == f.name()) {
            return Err(BuildError::DuplicateFrontend(f.name().to_string()));
        }
        names.push(f.name().to_string());
    }
    config.enabled_frontends = names;
    let dialects: Arc<[Dialect]> = frontends.iter().filter_map(|f| f.dialect()).collect();

    let mut router = Router::new();
    let mut shared: BTreeMap<&'static str, Vec<SharedRoute>> = BTreeMap::new();
    for f in frontends {
        router = router.merge(f.routes(handle.clone(), &config));
        for route in f.shared_routes(handle.clone(), &config) {
            shared.entry(route.path).or_default().push(route);
        }
    }
    for (path, routes) in shared {
        let routes = Arc::new(routes);
        router = router.route(path, post(dispatch_shared).with_state(routes));
    }
    router = router
        .route("/health", get(health).with_state(handle))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(BodyLimit(config.body_limit_bytes)))
        .layer(Extension(EnabledDialects(dialects.clone())));
    if let Some(key) = config.api_key.clone().filter(|k| !k.is_empty()) {
        let public: Vec<&'static str> = frontends
            .iter()
            .flat_map(|f| f.public_paths().iter().copied())
            .collect();
        let auth = AuthState {
            key: Arc::from(key),
            dialects,
            public: public.into(),
        };
        router = router.layer(middleware::from_fn_with_state(auth, require_api_key));
    }
    Ok(router.layer(middleware::from_fn_with_state(
        config.ids.clone(),
        request_context,
    )))
}

/// `GET /health`: 200 with an empty body, 503 once the engine stopped.
async fn health(State(handle): State<EngineHandle>) -> Response {
    if handle.is_healthy() {
        StatusCode::OK.into_response()
    } else {
        let body = json!({"error": "unhealthy", "error_type": "healthcheck"}).to_string();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/json")],
            body,
        )
            .into_response()
    }
}

async fn dispatch_shared(State(routes): State<Arc<Vec<SharedRoute>>>, req: Request) -> Response {
    let Some(first) = routes.first() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(crate::config::DEFAULT_BODY_LIMIT_BYTES, |l| l.0);
    let path = req.uri().path().to_string();
    let (parts, body): (_, Body) = req.into_parts();
    let value = match read_json_value(first.dialect, &parts.headers, body, limit).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match routes.iter().find(|r| (r.claims)(&value)) {
        Some(route) => (route.handler)(value).await,
        None => ApiError::bad_request(
            first.dialect,
            "body",
            format!(
                "{path} does not understand this body: {}",
                expected_bodies(&routes)
            ),
        )
        .into_response(),
    }
}

fn expected_bodies(routes: &[SharedRoute]) -> String {
    let names: Vec<&str> = routes.iter().map(|r| r.dialect.name()).collect();
    format!(
        "send a JSON object in the form of one of: {}",
        names.join(", ")
    )
}

fn dialect_of(method: &Method, uri: &Uri, enabled: Option<&EnabledDialects>) -> Dialect {
    let enabled: &[Dialect] = enabled.map_or(&[], |e| &e.0);
    Dialect::for_request_among(method, uri.path(), enabled)
}

async fn not_found(
    method: Method,
    uri: Uri,
    enabled: Option<Extension<EnabledDialects>>,
) -> Response {
    let dialect = dialect_of(&method, &uri, enabled.as_deref());
    ApiError::new(
        dialect,
        StatusCode::NOT_FOUND,
        format!("Not Found: no route for {method} {}", uri.path()),
    )
    .into_response()
}

async fn method_not_allowed(
    method: Method,
    uri: Uri,
    enabled: Option<Extension<EnabledDialects>>,
) -> Response {
    let dialect = dialect_of(&method, &uri, enabled.as_deref());
    ApiError::new(
        dialect,
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "Method Not Allowed: {} does not accept {method}",
            uri.path()
        ),
    )
    .into_response()
}
