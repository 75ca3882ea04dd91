//! # kiln-frontend-metrics
//!
//! `GET /metrics` in the Prometheus text format (0.0.4) with vLLM's metric
//! names, so dashboards and alerts built for vLLM work on Kiln unchanged:
//! `vllm:num_requests_running`, `vllm:num_requests_waiting`,
//! `vllm:kv_cache_usage_perc`, token and request counters, preemption and
//! prefix-cache counters, and latency and size histograms, all labelled
//! `model_name`.
//!
//! Counters and histograms are folded from the engine's event broadcast
//! (`EngineHandle::subscribe`) by one task per server; the gauges are read
//! from the engine's current load at each scrape, so they are exact even
//! when no step has run since the last request ended. Each frontend instance
//! owns its registry.
//!
//! Depends on `kiln-http`, `kiln-engine-api` and `kiln-protocol` only.

pub mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use kiln_engine_api::EngineHandle;
use kiln_http::{Frontend, HttpConfig};
use kiln_protocol::EngineEvent;
use tokio::sync::broadcast;

pub use state::{Metrics, MetricsConfig};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus frontend.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsFrontend;

struct ScrapeState {
    handle: EngineHandle,
    metrics: Arc<Metrics>,
}

impl Frontend for MetricsFrontend {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn routes(&self, handle: EngineHandle, _config: &HttpConfig) -> Router {
        let info = handle.info();
        let metrics = Arc::new(Metrics::new(&MetricsConfig {
            model_name: info.model_id.clone(),
            max_model_len: info.max_model_len,
        }));
        tokio::spawn(fold_events(handle.subscribe(), metrics.clone()));
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(Arc::new(ScrapeState { handle, metrics }))
    }
}

/// Feeds engine events to `metrics` until the engine closes the broadcast.
async fn fold_events(mut events: broadcast::Receiver<EngineEvent>, metrics: Arc<Metrics>) {
    loop {
        match events.recv().await {
            Ok(event) => metrics.observe(&event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "metrics fell behind the engine's events");
                metrics.lagged(missed);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn scrape(State(state): State<Arc<ScrapeState>>) -> impl IntoResponse {
    state.metrics.set_load(state.handle.load());
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}
