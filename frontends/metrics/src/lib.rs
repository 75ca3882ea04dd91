//! # kiln-frontend-metrics
//!
//! `GET /metrics` in the Prometheus text format (0.0.4) with vLLM's metric
//! names, so dashboards and alerts built for vLLM work on Kiln unchanged.
//! Every series carries the label `model_name` (the engine's model id):
//!
//! - gauges `vllm:num_requests_running`, `vllm:num_requests_waiting` and
//!   `vllm:kv_cache_usage_perc` (a fraction, 0 to 1);
//! - counters `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`,
//!   `vllm:request_success_total{finished_reason=stop|length|abort|error}`,
//!   `vllm:num_preemptions_total`, `vllm:prefix_cache_queries_total`,
//!   `vllm:prefix_cache_hits_total`, and Kiln's own
//!   `kiln:metrics_events_lagged_total`;
//! - histograms with vLLM's buckets: `vllm:time_to_first_token_seconds`,
//!   `vllm:inter_token_latency_seconds`, `vllm:e2e_request_latency_seconds`,
//!   `vllm:request_queue_time_seconds`, `vllm:request_prefill_time_seconds`,
//!   `vllm:request_decode_time_seconds`, `vllm:request_prompt_tokens`,
//!   `vllm:request_generation_tokens`, `vllm:request_params_n`,
//!   `vllm:request_params_max_tokens` and `vllm:iteration_tokens_total`.
//!
//! ## Where the numbers come from
//!
//! Counters and histograms are folded from the engine's event broadcast
//! ([`EngineHandle::subscribe`]) by one task per server: a `Step` moves the
//! preemption and prefix-cache counters and the per-step token histogram,
//! a `SequenceFinished` the token counters and the request histograms. A
//! request with `n` sequences counts its prompt tokens and its success once
//! (from the sequence with index 0) and its generated tokens per sequence;
//! [`state`] lists the rule of each family. An embedding request counts as
//! a request that generates nothing (as vLLM counts pooling requests): its
//! prompt tokens, its outcome in `request_success_total` (`stop` once its
//! vector is computed), and its queue and end-to-end latencies. If the task
//! falls behind the
//! broadcast, the events it missed are counted in
//! `kiln:metrics_events_lagged_total` and folding goes on.
//!
//! The gauges are read from the engine's current load
//! ([`EngineHandle::load`]) at each scrape, so they are exact even when no
//! step has run since the last request ended or was aborted.
//!
//! Each frontend instance owns its [`prometheus::Registry`]; nothing goes
//! through the process-wide default registry.
//!
//! Depends on `kiln-http`, `kiln-engine-api` and `kiln-protocol` only.
//!
//! ```
//! use kiln_frontend_metrics::{Metrics, MetricsConfig};
//!
//! let metrics = Metrics::new(&MetricsConfig {
//!     model_name: "smollm2".into(),
//!     max_model_len: 8192,
//!     max_num_batched_tokens: 2048,
//! });
//! assert!(metrics.encode().contains("# TYPE vllm:num_requests_running gauge"));
//! ```

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
use tokio::sync::broadcast::{self, error::RecvError};

pub use state::{Metrics, MetricsConfig};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus frontend: `GET /metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsFrontend;

/// What the scrape handler reads.
struct ScrapeState {
    handle: EngineHandle,
    metrics: Arc<Metrics>,
}

impl Frontend for MetricsFrontend {
    fn name(&self) -> &'static str {
        "metrics"
    }

    /// Subscribes to the engine's events and spawns the task that folds
    /// them (so it must run inside a Tokio runtime, as the trait promises).
    fn routes(&self, handle: EngineHandle, _config: &HttpConfig) -> Router {
        let metrics = Arc::new(Metrics::new(&MetricsConfig::from_info(handle.info())));
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
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "metrics fell behind the engine's events");
                metrics.lagged(missed);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// `GET /metrics`: the gauges from the current load, then the whole registry.
async fn scrape(State(state): State<Arc<ScrapeState>>) -> impl IntoResponse {
    state.metrics.set_load(state.handle.load());
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::StepStats;

    fn preemption() -> EngineEvent {
        EngineEvent::Step(StepStats {
            num_preemptions: 1,
            ..StepStats::default()
        })
    }

    #[tokio::test]
    async fn the_fold_counts_missed_events_goes_on_and_stops_when_closed() {
        let metrics = Arc::new(Metrics::new(&MetricsConfig {
            model_name: "m".into(),
            max_model_len: 64,
            max_num_batched_tokens: 64,
        }));
        let (tx, rx) = broadcast::channel(2);
        for _ in 0..5 {
            tx.send(preemption()).unwrap();
        }
        drop(tx);
        // Returns only because the broadcast closed.
        fold_events(rx, metrics.clone()).await;
        assert_eq!(metrics.events_lagged(), 3);
        let text = metrics.encode();
        assert!(
            text.contains("vllm:num_preemptions_total{model_name=\"m\"} 2\n"),
            "{text}"
        );
    }
}
