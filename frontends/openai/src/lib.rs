//! # kiln-frontend-openai
//!
//! Kiln's OpenAI-compatible API in vLLM's dialect: `POST /v1/completions`,
//! `POST /v1/chat/completions` (JSON or SSE with `stream_options`), `POST
//! /v1/responses` (the Responses API over the chat machinery, see
//! [`responses`]), `GET
//! /v1/models`, `POST /tokenize` (shared with TGI's, chosen by body keys),
//! `POST /detokenize`, `GET /version`, `GET /v1/server_info`.
//!
//! Handlers are thin: a pure plan ([`convert`]) turns the body into a
//! `GenerateRequest`, the engine runs it, and pure builders ([`completion`],
//! [`chat`]) turn its events into JSON or SSE chunks. Chat responses always
//! carry the extras TGI's clients need (`system_fingerprint`, `logprobs`,
//! `usage`, the role in every delta). Structured outputs
//! (`response_format`, `structured_outputs`, `guided_*`) are read by
//! [`structured`]. Tool calling ([`tools`]): `required` and named
//! `tool_choice` constrain the output to calls whose arguments follow the
//! tool's schema; `auto` parses calls out of free text with the server's
//! tool-call parser. Unsupported features (`suffix`, beam search) are
//! rejected with a 400 that names the field, never ignored.
//!
//! Depends on `kiln-http`, `kiln-engine-api` and `kiln-protocol` only.
//!
//! ```
//! use kiln_frontend_openai::convert::parse_stop;
//! assert_eq!(parse_stop(Some(&serde_json::json!("###"))).unwrap(), vec!["###"]);
//! ```

pub mod chat;
pub mod completion;
pub mod convert;
pub mod embeddings;
pub mod models;
pub mod request;
pub mod responses;
pub mod routes;
pub mod structured;
pub mod tokenize;
pub mod tools;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use kiln_engine_api::EngineHandle;
use kiln_http::{Dialect, Frontend, HttpConfig, SharedRoute};

/// The OpenAI-compatible API (`/v1/*` plus vLLM's `/tokenize` and
/// `/detokenize`), mounted with `--frontend openai`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiFrontend;

impl Frontend for OpenAiFrontend {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn dialect(&self) -> Option<Dialect> {
        Some(Dialect::OpenAi)
    }

    fn routes(&self, handle: EngineHandle, config: &HttpConfig) -> Router {
        let state = Arc::new(routes::AppState::new(handle, config.clone()));
        Router::new()
            .route("/v1/completions", post(routes::completions))
            .route("/v1/chat/completions", post(routes::chat_completions))
            .route("/v1/responses", post(responses::create))
            .route("/v1/embeddings", post(embeddings::embeddings))
            .route("/v1/models", get(models::list))
            .route("/version", get(models::version))
            .route("/v1/server_info", get(models::info))
            .route("/detokenize", post(tokenize::detokenize))
            .with_state(state)
    }

    fn shared_routes(&self, handle: EngineHandle, _config: &HttpConfig) -> Vec<SharedRoute> {
        vec![SharedRoute {
            path: "/tokenize",
            dialect: Dialect::OpenAi,
            claims: tokenize::claims,
            handler: Arc::new(move |body| Box::pin(tokenize::tokenize_value(handle.clone(), body))),
        }]
    }
}
