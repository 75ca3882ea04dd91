//! # kiln-frontend-tgi
//!
//! Kiln's Hugging Face TGI-compatible API: `POST /generate`, `POST
//! /generate_stream` (SSE, no `[DONE]`), the compatibility route `POST /`
//! (a JSON array, or SSE with `stream: true`), `GET /info`, and TGI's form of
//! `POST /tokenize` (`{inputs}`; the route is shared with vLLM's form).
//! TGI's OpenAI-compatible chat route is served by the OpenAI frontend.
//!
//! TGI's validation semantics are kept (HTTP 422 `validation`): `top_p` must
//! be in (0, 1), `temperature` > 0, `max_new_tokens` > 0, no `best_of` or
//! `decoder_input_details` when streaming. `truncate` is the one opt-in
//! prompt truncation (keep the last N tokens); nothing is ever truncated
//! silently. Finish reasons are `length`, `eos_token` and `stop_sequence`.
//!
//! Depends on `kiln-http`, `kiln-engine-api` and `kiln-protocol` only.
//!
//! ```
//! use kiln_frontend_tgi::validate::{plan, PlanContext, Route};
//! let body = serde_json::from_str(r#"{"inputs":"hi","parameters":{"top_p":1.0}}"#).unwrap();
//! let ctx = PlanContext { route: Route::Generate, max_input_tokens: 100, fallback_seed: 0 };
//! assert_eq!(plan(&body, ctx).unwrap_err().status, 422);
//! ```

pub mod embed;
pub mod grammar;
pub mod request;
pub mod response;
pub mod routes;
pub mod tokenize;
pub mod validate;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use kiln_engine_api::EngineHandle;
use kiln_http::{Dialect, Frontend, HttpConfig, SharedRoute};

/// Selected by `--frontend tgi` (on by default); errors on its routes use
/// TGI's error dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct TgiFrontend;

impl Frontend for TgiFrontend {
    fn name(&self) -> &'static str {
        "tgi"
    }

    fn dialect(&self) -> Option<Dialect> {
        Some(Dialect::Tgi)
    }

    fn routes(&self, handle: EngineHandle, config: &HttpConfig) -> Router {
        let state = Arc::new(routes::AppState::new(handle, config.clone()));
        Router::new()
            .route("/generate", post(routes::generate))
            .route("/generate_stream", post(routes::generate_stream))
            .route("/", post(routes::compat))
            .route("/info", get(routes::info))
            .route("/embed", post(embed::embed))
            .with_state(state)
    }

    fn shared_routes(&self, handle: EngineHandle, _config: &HttpConfig) -> Vec<SharedRoute> {
        vec![SharedRoute {
            path: "/tokenize",
            dialect: Dialect::Tgi,
            claims: tokenize::claims,
            handler: Arc::new(move |body| Box::pin(tokenize::tokenize_value(handle.clone(), body))),
        }]
    }
}
