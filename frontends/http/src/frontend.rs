//! The trait every API family implements.

use std::sync::Arc;

use axum::Router;
use axum::response::Response;
use futures::future::BoxFuture;
use kiln_engine_api::EngineHandle;
use serde_json::Value;

use crate::config::HttpConfig;
use crate::dialect::Dialect;

/// Handles a JSON body already parsed by the router.
pub type SharedHandler = Arc<dyn Fn(Value) -> BoxFuture<'static, Response> + Send + Sync>;

/// A `POST` route that several frontends serve with different bodies
/// (`/tokenize`: vLLM's `{prompt|messages}` vs TGI's `{inputs}`). The router
/// parses the body once and hands it to the first route whose `claims` says yes.
#[derive(Clone)]
pub struct SharedRoute {
    /// The path (`/tokenize`).
    pub path: &'static str,
    /// Dialect of the errors raised before a handler is chosen.
    pub dialect: Dialect,
    /// Whether this route understands a body (e.g. it has an `inputs` key).
    pub claims: fn(&Value) -> bool,
    /// Answers a claimed body.
    pub handler: SharedHandler,
}

impl std::fmt::Debug for SharedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRoute")
            .field("path", &self.path)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// One API family (OpenAI, TGI, Ollama, metrics) served over HTTP.
///
/// Routes of different frontends may share a path only with different
/// methods (`GET /` is Ollama's, `POST /` TGI's); a path served by several
/// with the same method goes through [`Frontend::shared_routes`].
pub trait Frontend: Send + Sync {
    /// Short name used to select it at start-up (`openai`, `tgi`, `ollama`, `metrics`).
    fn name(&self) -> &'static str;

    /// The error dialect of its routes (`None` for non-API frontends such as metrics).
    fn dialect(&self) -> Option<Dialect> {
        None
    }

    /// Paths of its routes that need no API key under `--api-key` (a page
    /// that asks for the key itself, say). `/health` and `/metrics` are
    /// always open.
    fn public_paths(&self) -> &'static [&'static str] {
        &[]
    }

    /// The frontend's own routes. Called once, inside a Tokio runtime.
    fn routes(&self, handle: EngineHandle, config: &HttpConfig) -> Router;

    /// Routes shared with other frontends and dispatched on the body.
    fn shared_routes(&self, handle: EngineHandle, config: &HttpConfig) -> Vec<SharedRoute> {
        let _ = (handle, config);
        Vec::new()
    }
}
