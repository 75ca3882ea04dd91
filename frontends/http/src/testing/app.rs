//! In-process request helpers over a router and a scripted engine (no sockets).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use kiln_engine_api::EngineHandle;
use tower::ServiceExt;

use super::{ScriptedConfig, ScriptedEngine};
use crate::config::{FixedClock, HttpConfig, SequentialIds};
use crate::frontend::Frontend;
use crate::router::build_router;

/// Unix time of [`golden_config`]'s clock (2023-11-14T22:13:20Z).
pub const GOLDEN_UNIX_SECONDS: u64 = 1_700_000_000;

/// HTTP settings for golden tests: a fixed clock and counting ids.
pub fn golden_config() -> HttpConfig {
    HttpConfig {
        clock: Arc::new(FixedClock(Duration::from_secs(GOLDEN_UNIX_SECONDS))),
        ids: Arc::new(SequentialIds::default()),
        ..Default::default()
    }
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A router over a scripted engine, called in process (the request
/// helpers come from [`TestClient`]).
pub struct TestApp {
    /// The engine (inspect admitted requests and aborts).
    pub engine: Arc<ScriptedEngine>,
    pub client: TestClient,
}

impl TestApp {
    /// Composes `frontends` over a new scripted engine. Call inside a Tokio runtime.
    pub fn new(engine: ScriptedConfig, http: HttpConfig, frontends: &[Box<dyn Frontend>]) -> Self {
        let engine = ScriptedEngine::new(engine);
        let client = TestClient::over(engine.handle(), http, frontends);
        TestApp { engine, client }
    }
}

impl std::ops::Deref for TestApp {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

/// The composed router over any engine, called in process.
pub struct TestClient {
    pub router: Router,
}

impl TestClient {
    /// Composes `frontends` over `handle`. Call inside a Tokio runtime.
    pub fn over(handle: EngineHandle, http: HttpConfig, frontends: &[Box<dyn Frontend>]) -> Self {
        match build_router(handle, http, frontends) {
            Ok(router) => TestClient { router },
            Err(e) => panic!("test router: {e}"),
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A request with a body and headers.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = match builder.body(body.into()) {
            Ok(r) => r,
            Err(e) => panic!("bad test request: {e}"),
        };
        self.send(request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &str) -> TestResponse {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.request(Method::GET, path, &[], Body::empty()).await
    }
}

/// An 8-dimension, mean-pooled, normalizing encoder (generation refused),
/// trained for `matryoshka_dimensions` when any are given.
pub fn encoder_spec(matryoshka_dimensions: Vec<u32>) -> kiln_protocol::EmbeddingSpec {
    kiln_protocol::EmbeddingSpec {
        dimensions: 8,
        pooling: kiln_protocol::Pooling::Mean,
        normalize: true,
        matryoshka_dimensions,
        generates: false,
    }
}

/// `frontend` over a scripted engine that embeds as `embedding` says
/// (`None`: a model that does not embed).
pub fn embedding_app(
    embedding: Option<kiln_protocol::EmbeddingSpec>,
    frontend: Box<dyn Frontend>,
) -> TestApp {
    TestApp::new(
        ScriptedConfig {
            embedding,
            ..ScriptedConfig::default()
        },
        golden_config(),
        &[frontend],
    )
}

/// The L2 norm of a JSON array of numbers.
pub fn l2_norm(v: &serde_json::Value) -> f64 {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number").powi(2))
        .sum::<f64>()
        .sqrt()
}
