//! # kiln-frontend-ollama
//!
//! Kiln's Ollama-compatible API: `POST /api/generate` and `POST /api/chat`
//! (NDJSON streaming by default, one object with `"stream": false`; the final
//! object carries `done_reason` and durations in nanoseconds), `GET
//! /api/tags`, `POST /api/show`, `GET /api/ps`, `GET /api/version`, and
//! `GET`/`HEAD /` ("Ollama is running"; `POST /` belongs to TGI). Model
//! management (`/api/pull`, `/api/copy`, `/api/delete`) works on Kiln's
//! model cache; [`manage`] says what it means with one served model.
//!
//! `options` are type-checked as Ollama does (`option "x" must be of type
//! ...`) and range-checked under their Ollama names; `num_predict` ≤ 0
//! generates up to the context; `num_ctx` is accepted but never truncates a
//! prompt, and a prompt (plus `num_predict`) beyond the context is a 400
//! naming both numbers. Bodies must be JSON objects (any `Content-Type`), and
//! message roles one of `system`, `user`, `assistant`, `tool`. Unknown models
//! are a 404 `model 'x' not found`; served names answer with or without
//! `:latest`. `tools` reach the chat template and the calls the model
//! writes come back as `message.tool_calls` ([`tools`]). Embeddings, images
//! and thinking are rejected with a clear 400.
//!
//! Depends on `kiln-http`, `kiln-engine-api` and `kiln-protocol` only.
//!
//! ```
//! use kiln_frontend_ollama::convert::tagged;
//! assert_eq!(tagged("smollm2"), "smollm2:latest");
//! ```

pub mod convert;
pub mod embed;
pub mod format;
pub mod manage;
pub mod models;
pub mod options;
pub mod request;
pub mod response;
pub mod routes;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};
use kiln_engine_api::EngineHandle;
use kiln_http::{Dialect, Frontend, HttpConfig};

/// Selected by `--frontend ollama` (on by default); errors on its routes use
/// Ollama's error dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct OllamaFrontend;

impl Frontend for OllamaFrontend {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn dialect(&self) -> Option<Dialect> {
        Some(Dialect::Ollama)
    }

    fn routes(&self, handle: EngineHandle, config: &HttpConfig) -> Router {
        let state = Arc::new(routes::AppState::new(handle, config.clone()));
        Router::new()
            .route("/", get(routes::root))
            .route("/api/generate", post(routes::generate))
            .route("/api/chat", post(routes::chat))
            .route("/api/tags", get(routes::tags))
            .route("/api/show", post(routes::show))
            .route("/api/ps", get(routes::ps))
            .route("/api/version", get(routes::version))
            .route("/api/embed", post(embed::embed))
            .route("/api/embeddings", post(embed::embeddings))
            .route("/api/pull", post(manage::pull))
            .route("/api/push", post(routes::management))
            .route("/api/create", post(routes::management))
            .route("/api/copy", post(manage::copy))
            .route("/api/delete", delete(manage::delete))
            .with_state(state)
    }
}
