//! The metric families and how each engine event moves them.
//!
//! [`Metrics::observe`] is synchronous and does no I/O: the async task in
//! `lib.rs` only feeds it events, and the scrape handler only sets the gauges
//! from the engine's current load and encodes.

use kiln_engine_api::EngineLoad;
use kiln_protocol::{EngineEvent, FinishReason, RequestMetrics, StepStats};
use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, Opts, Registry, TextEncoder,
};

/// Seconds from arrival to first token.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// Seconds between consecutive tokens.
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// Seconds of whole-request phases (queue, prefill, decode, end to end).
const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Token-count buckets 1, 2, 5, 10, 20, 50, ... up to `max` (vLLM's 1-2-5 series).
pub fn token_buckets(max: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1u64;
    loop {
        for m in [1, 2, 5] {
            let v = m * scale;
            if v > max.max(1) {
                return out;
            }
            out.push(v as f64);
        }
        scale *= 10;
    }
}

/// Every metric Kiln exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge,
    prompt_tokens: IntCounter,
    generation_tokens: IntCounter,
    request_success: CounterVec,
    preemptions: IntCounter,
    prefix_queries: IntCounter,
    prefix_hits: IntCounter,
    lagged: IntCounter,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    prefill: Histogram,
    decode: Histogram,
    prompt_hist: Histogram,
    generation_hist: Histogram,
    params_n: Histogram,
    params_max_tokens: Histogram,
    iteration_tokens: Histogram,
}

/// What the families are built from.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// The `model_name` label.
    pub model_name: String,
    /// Upper end of the token-count buckets (the served context length).
    pub max_model_len: u32,
}

struct Builder<'a> {
    registry: &'a Registry,
    model_name: &'a str,
}

impl Builder<'_> {
    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help).const_label("model_name", self.model_name)
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::with_opts(self.opts(name, help)))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(self.opts(name, help)))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets.to_vec());
        self.register(Histogram::with_opts(opts))
    }

    fn register<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: prometheus::Result<M>,
    ) -> M {
        // Names and buckets are constants of this file; a failure is a bug here.
        let metric = metric.expect("valid metric definition");
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric registered once");
        metric
    }
}

impl Metrics {
    /// Builds and registers every family in a fresh registry.
    pub fn new(config: &MetricsConfig) -> Metrics {
        let registry = Registry::new();
        let b = Builder {
            registry: &registry,
            model_name: &config.model_name,
        };
        let tokens = token_buckets(u64::from(config.max_model_len));
        let request_success = b.register(CounterVec::new(
            b.opts(
                "vllm:request_success_total",
                "Finished requests, by finish reason.",
            ),
            &["finished_reason"],
        ));
        // Every reason shows from the start, at 0, as vLLM does.
        for reason in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Abort,
            FinishReason::Error,
        ] {
            request_success.with_label_values(&[reason.as_str()]);
        }
        Metrics {
            running: b.gauge("vllm:num_requests_running", "Requests being computed."),
            waiting: b.gauge(
                "vllm:num_requests_waiting",
                "Requests waiting to be scheduled.",
            ),
            kv_usage: b.gauge(
                "vllm:kv_cache_usage_perc",
                "Fraction of KV-cache blocks in use (1 = full).",
            ),
            prompt_tokens: b.counter("vllm:prompt_tokens_total", "Prompt tokens processed."),
            generation_tokens: b.counter("vllm:generation_tokens_total", "Tokens generated."),
            request_success,
            preemptions: b.counter("vllm:num_preemptions_total", "Sequences preempted."),
            prefix_queries: b.counter(
                "vllm:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache.",
            ),
            prefix_hits: b.counter(
                "vllm:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache.",
            ),
            lagged: b.counter(
                "kiln:metrics_events_lagged_total",
                "Engine events the metrics task missed because it fell behind.",
            ),
            ttft: b.histogram(
                "vllm:time_to_first_token_seconds",
                "Seconds from arrival to the first token.",
                TTFT_BUCKETS,
            ),
            itl: b.histogram(
                "vllm:inter_token_latency_seconds",
                "Seconds between consecutive tokens.",
                ITL_BUCKETS,
            ),
            e2e: b.histogram(
                "vllm:e2e_request_latency_seconds",
                "Seconds from arrival to finish.",
                REQUEST_BUCKETS,
            ),
            queue: b.histogram(
                "vllm:request_queue_time_seconds",
                "Seconds waiting before first scheduled.",
                REQUEST_BUCKETS,
            ),
            prefill: b.histogram(
                "vllm:request_prefill_time_seconds",
                "Seconds from first scheduled to first token.",
                REQUEST_BUCKETS,
            ),
            decode: b.histogram(
                "vllm:request_decode_time_seconds",
                "Seconds from first to last token.",
                REQUEST_BUCKETS,
            ),
            prompt_hist: b.histogram(
                "vllm:request_prompt_tokens",
                "Prompt tokens per request.",
                &tokens,
            ),
            generation_hist: b.histogram(
                "vllm:request_generation_tokens",
                "Generated tokens per sequence.",
                &tokens,
            ),
            params_n: b.histogram(
                "vllm:request_params_n",
                "The n parameter of requests.",
                &[1.0, 2.0, 5.0, 10.0, 20.0],
            ),
            params_max_tokens: b.histogram(
                "vllm:request_params_max_tokens",
                "The max_tokens parameter of requests.",
                &tokens,
            ),
            iteration_tokens: b.histogram(
                "vllm:iteration_tokens_total",
                "Tokens computed per engine step.",
                &token_buckets(16384),
            ),
            registry,
        }
    }

    /// Folds one engine event into the counters and histograms.
    pub fn observe(&self, event: &EngineEvent) {
        match event {
            EngineEvent::RequestArrived { .. } => {}
            EngineEvent::Step(stats) => self.observe_step(stats),
            EngineEvent::SequenceFinished(m) => self.observe_finished(m),
        }
    }

    fn observe_step(&self, s: &StepStats) {
        self.preemptions.inc_by(u64::from(s.num_preemptions));
        self.prefix_queries
            .inc_by(u64::from(s.prefix_cache_queries));
        self.prefix_hits.inc_by(u64::from(s.prefix_cache_hits));
        if s.num_batched_tokens > 0 {
            self.iteration_tokens
                .observe(f64::from(s.num_batched_tokens));
        }
    }

    /// Per sequence: generated tokens and latencies. Per request (the
    /// sequence with index 0): prompt tokens, the finish reason and the
    /// request parameters.
    fn observe_finished(&self, m: &RequestMetrics) {
        self.generation_tokens
            .inc_by(u64::from(m.generation_tokens));
        self.generation_hist.observe(f64::from(m.generation_tokens));
        if m.generation_tokens > 0 {
            self.ttft.observe(m.ttft_seconds);
            self.prefill.observe(m.prefill_seconds);
            self.decode.observe(m.decode_seconds);
        }
        for gap in &m.inter_token_seconds {
            self.itl.observe(*gap);
        }
        if m.index != 0 {
            return;
        }
        self.prompt_tokens.inc_by(u64::from(m.prompt_tokens));
        self.prompt_hist.observe(f64::from(m.prompt_tokens));
        self.queue.observe(m.queue_seconds);
        self.e2e.observe(m.e2e_seconds);
        self.params_n.observe(f64::from(m.n.max(1)));
        if let Some(max) = m.max_tokens {
            self.params_max_tokens.observe(f64::from(max));
        }
        let reason = m.reason.unwrap_or(FinishReason::Error).as_str();
        self.request_success.with_label_values(&[reason]).inc();
    }

    /// Counts events the fold missed.
    pub fn lagged(&self, missed: u64) {
        self.lagged.inc_by(missed);
    }

    /// Sets the gauges from the engine's current load.
    pub fn set_load(&self, load: EngineLoad) {
        self.running.set(f64::from(load.running));
        self.waiting.set(f64::from(load.waiting));
        self.kv_usage.set(load.kv_usage);
    }

    /// The text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails for malformed families, which this file never builds.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Value of a counter of `request_success_total` (tests and logs).
    pub fn successes(&self, reason: FinishReason) -> f64 {
        self.request_success
            .with_label_values(&[reason.as_str()])
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&MetricsConfig {
            model_name: "m".into(),
            max_model_len: 2048,
        })
    }

    fn finished(index: u32, reason: FinishReason, prompt: u32, generated: u32) -> EngineEvent {
        EngineEvent::SequenceFinished(RequestMetrics {
            request_id: 1,
            index,
            reason: Some(reason),
            prompt_tokens: prompt,
            generation_tokens: generated,
            queue_seconds: 0.01,
            ttft_seconds: 0.05,
            prefill_seconds: 0.04,
            decode_seconds: 0.2,
            e2e_seconds: 0.25,
            inter_token_seconds: vec![0.02; generated.saturating_sub(1) as usize],
            n: 2,
            max_tokens: Some(16),
        })
    }

    #[test]
    fn token_buckets_follow_the_one_two_five_series() {
        assert_eq!(token_buckets(60), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(token_buckets(0), vec![1.0]);
    }

    #[test]
    fn prompt_tokens_and_success_count_once_per_request_generation_per_sequence() {
        let m = metrics();
        m.observe(&finished(0, FinishReason::Length, 10, 16));
        m.observe(&finished(1, FinishReason::Stop, 10, 4));
        assert_eq!(m.prompt_tokens.get(), 10);
        assert_eq!(m.generation_tokens.get(), 20);
        assert_eq!(m.successes(FinishReason::Length), 1.0);
        assert_eq!(m.successes(FinishReason::Stop), 0.0);
        assert_eq!(m.e2e.get_sample_count(), 1);
        assert_eq!(m.ttft.get_sample_count(), 2);
        assert_eq!(m.itl.get_sample_count(), 15 + 3);
        assert!((m.itl.get_sample_sum() - 18.0 * 0.02).abs() < 1e-9);
        assert_eq!(m.generation_hist.get_sample_count(), 2);
        assert_eq!(m.params_n.get_sample_count(), 1);
    }

    #[test]
    fn aborted_sequences_without_tokens_observe_no_first_token_latency() {
        let m = metrics();
        m.observe(&finished(0, FinishReason::Abort, 7, 0));
        assert_eq!(m.successes(FinishReason::Abort), 1.0);
        assert_eq!(m.ttft.get_sample_count(), 0);
        assert_eq!(m.prompt_tokens.get(), 7);
    }

    #[test]
    fn steps_move_preemption_and_prefix_cache_counters() {
        let m = metrics();
        let step = StepStats {
            num_preemptions: 2,
            prefix_cache_queries: 64,
            prefix_cache_hits: 48,
            num_batched_tokens: 70,
            ..StepStats::default()
        };
        m.observe(&EngineEvent::Step(step));
        m.observe(&EngineEvent::Step(step));
        assert_eq!(m.preemptions.get(), 4);
        assert_eq!(m.prefix_queries.get(), 128);
        assert_eq!(m.prefix_hits.get(), 96);
        assert_eq!(m.iteration_tokens.get_sample_count(), 2);
    }

    #[test]
    fn gauges_show_the_load_given_and_the_text_names_every_family() {
        let m = metrics();
        m.set_load(EngineLoad {
            running: 3,
            waiting: 1,
            kv_usage: 0.25,
        });
        let text = m.encode();
        assert!(
            text.contains("vllm:num_requests_running{model_name=\"m\"} 3"),
            "{text}"
        );
        assert!(text.contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25"));
        for name in [
            "vllm:num_requests_waiting",
            "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total",
            "vllm:num_preemptions_total",
            "vllm:prefix_cache_queries_total",
            "vllm:prefix_cache_hits_total",
            "vllm:time_to_first_token_seconds",
            "vllm:inter_token_latency_seconds",
            "vllm:e2e_request_latency_seconds",
            "vllm:request_queue_time_seconds",
            "vllm:request_prefill_time_seconds",
            "vllm:request_decode_time_seconds",
            "vllm:request_prompt_tokens",
            "vllm:request_generation_tokens",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}
