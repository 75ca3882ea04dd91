//! # kiln-http
//!
//! The plumbing Kiln's HTTP API families share: one axum server on one port
//! composed of [`Frontend`]s (OpenAI, TGI, Ollama, metrics), with
//! - JSON bodies read under a size limit with the dialect's content-type rule
//!   and error shapes ([`body`], [`ApiError`], [`Dialect`]);
//! - streaming writers: SSE with exact `data: <json>\n\n` framing and NDJSON
//!   without blank lines, one chunk per event, `X-Accel-Buffering: no`
//!   ([`stream`]); the body owns the engine's `RequestStream`, so a client
//!   that disconnects aborts its request;
//! - API-key auth (constant-time compare; `/health` and `/metrics` stay open),
//!   request ids in a tracing span, JSON 404/405 answers, a bound on waiting
//!   requests (HTTP 429 with `Retry-After`), `/health`, graceful shutdown;
//! - the model cache as frontends see it ([`ModelStore`], implemented by the
//!   `kiln` binary over `kiln-hub`);
//! - tool calling both chat dialects share ([`tool_calls`]): parsers for the
//!   formats models write calls in and the schemas that force calls;
//! - `testing::ScriptedEngine` (feature `testing`), a deterministic engine
//!   double for frontend tests; never in a release binary.
//!
//! Depends only on `kiln-engine-api` and `kiln-protocol` among Kiln's crates:
//! never on the engine, models or backends.
//!
//! ```
//! use kiln_http::{Dialect, ApiError};
//! use axum::http::StatusCode;
//! let e = ApiError::new(Dialect::Ollama, StatusCode::NOT_FOUND, "model 'x' not found");
//! assert_eq!(e.body(), serde_json::json!({"error": "model 'x' not found"}));
//! ```

pub mod admission;
pub mod body;
pub mod chat;
pub mod collect;
mod config;
mod dialect;
pub mod embed;
mod error;
mod frontend;
pub mod middleware;
pub mod model_store;
mod router;
mod server;
mod state;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod tool_calls;

pub use admission::submit;
pub use body::{ApiJson, OllamaDialect, OpenAiDialect, TgiDialect};
pub use collect::{Collected, SequenceOutput, Timings, collect, rank_by_likelihood};
pub use config::{
    Clock, DEFAULT_BODY_LIMIT_BYTES, FixedClock, HttpConfig, IdSource, RandomIds, SequentialIds,
    ServeConfig, SystemClock,
};
pub use dialect::{ContentTypeRule, Dialect};
pub use error::ApiError;
pub use frontend::{Frontend, SharedHandler, SharedRoute};
pub use middleware::RequestId;
pub use model_store::{ModelStore, PullEvent, PullReporter, StoreError, StoredModel};
pub use router::{BuildError, build_router};
pub use server::{BoundServer, ServeError, serve, shutdown_signal};
pub use state::DialectState;
pub use stream::{EventEncoder, Flow, Frame, Framing, stream_response};
