//! The metric families and how each engine event moves them.
//!
//! [`Metrics::observe`] is synchronous and does no I/O: the async task in
//! `lib.rs` only feeds it events, and the scrape handler only sets the gauges
//! from the engine's current load and encodes.
//!
//! Counting rules for a request with `n` sequences (`n` `SequenceFinished`
//! events, index `0..n`):
//! - per request, from the sequence with index 0: `prompt_tokens_total`,
//!   `request_success_total`, and the `request_prompt_tokens`,
//!   `request_queue_time_seconds`, `e2e_request_latency_seconds` and
//!   `request_params_*` histograms;
//! - per sequence: `generation_tokens_total`, `request_generation_tokens`,
//!   and the token-timing histograms (`time_to_first_token_seconds`,
//!   `request_prefill_time_seconds` and `request_decode_time_seconds` only
//!   for sequences that produced a token; one `inter_token_latency_seconds`
//!   observation per gap between consecutive tokens).

use kiln_engine_api::{EngineInfo, EngineLoad};
use kiln_protocol::{EngineEvent, FinishReason, RequestMetrics, StepStats};
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, Opts, Registry, TextEncoder,
};

/// Seconds from arrival to first token (vLLM's buckets).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// Seconds between consecutive tokens (vLLM's buckets).
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// Seconds of whole-request phases: queue, prefill, decode, end to end (vLLM's buckets).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// The request's `n` (vLLM's buckets).
pub const N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];

/// Every finish reason, in the order the labels are created.
const REASONS: [FinishReason; 4] = [
    FinishReason::Stop,
    FinishReason::Length,
    FinishReason::Abort,
    FinishReason::Error,
];

/// Token-count buckets 1, 2, 5, 10, 20, 50, ... up to `max` inclusive
/// (vLLM's 1-2-5 series); at least `[1]`.
pub fn token_buckets(max: u64) -> Vec<f64> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut scale = 1u64;
    loop {
        for m in [1, 2, 5] {
            let v = m * scale;
            if v > max {
                return out;
            }
            out.push(v as f64);
        }
        scale *= 10;
    }
}

/// What the families are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The `model_name` label.
    pub model_name: String,
    /// Upper end of the per-request token-count buckets (the served context length).
    pub max_model_len: u32,
    /// Upper end of the per-step token-count buckets (the step token budget).
    pub max_num_batched_tokens: u32,
}

impl MetricsConfig {
    /// The configuration for the engine described by `info`: `model_name` is its model id.
    pub fn from_info(info: &EngineInfo) -> Self {
        MetricsConfig {
            model_name: info.model_id.clone(),
            max_model_len: info.max_model_len,
            max_num_batched_tokens: info.max_num_batched_tokens,
        }
    }
}

/// Registers families in one registry, all labelled `model_name`.
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

    fn register<M: Collector + Clone + 'static>(&self, metric: prometheus::Result<M>) -> M {
        // Names, labels and buckets are constants of this file (valid by
        // construction) and each is registered once: a failure is a bug here.
        let metric = metric.expect("valid metric definition");
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric registered once");
        metric
    }
}

/// The engine's current load (set at each scrape).
struct LoadGauges {
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge,
}

impl LoadGauges {
    fn new(b: &Builder<'_>) -> Self {
        LoadGauges {
            running: b.gauge(
                "vllm:num_requests_running",
                "Sequences being computed (holding KV-cache blocks).",
            ),
            waiting: b.gauge(
                "vllm:num_requests_waiting",
                "Requests waiting to be scheduled, preempted ones included.",
            ),
            kv_usage: b.gauge(
                "vllm:kv_cache_usage_perc",
                "Fraction of KV-cache blocks in use (1 = full).",
            ),
        }
    }
}

/// Monotonic totals.
struct Counters {
    prompt_tokens: IntCounter,
    generation_tokens: IntCounter,
    request_success: CounterVec,
    preemptions: IntCounter,
    prefix_queries: IntCounter,
    prefix_hits: IntCounter,
    lagged: IntCounter,
}

impl Counters {
    fn new(b: &Builder<'_>) -> Self {
        let request_success = b.register(CounterVec::new(
            b.opts(
                "vllm:request_success_total",
                "Finished requests, by finish reason.",
            ),
            &["finished_reason"],
        ));
        // Every reason shows from the start, at 0.
        for reason in REASONS {
            request_success.with_label_values(&[reason.as_str()]);
        }
        Counters {
            prompt_tokens: b.counter("vllm:prompt_tokens_total", "Prompt tokens of requests."),
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
        }
    }
}

/// Latency histograms, in seconds.
struct Latencies {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    prefill: Histogram,
    decode: Histogram,
}

impl Latencies {
    fn new(b: &Builder<'_>) -> Self {
        Latencies {
            ttft: b.histogram(
                "vllm:time_to_first_token_seconds",
                "Seconds from arrival to a sequence's first token.",
                TTFT_BUCKETS,
            ),
            itl: b.histogram(
                "vllm:inter_token_latency_seconds",
                "Seconds between consecutive tokens of a sequence.",
                ITL_BUCKETS,
            ),
            e2e: b.histogram(
                "vllm:e2e_request_latency_seconds",
                "Seconds from arrival to finish.",
                REQUEST_BUCKETS,
            ),
            queue: b.histogram(
                "vllm:request_queue_time_seconds",
                "Seconds from arrival to first scheduled.",
                REQUEST_BUCKETS,
            ),
            prefill: b.histogram(
                "vllm:request_prefill_time_seconds",
                "Seconds from first scheduled to a sequence's first token.",
                REQUEST_BUCKETS,
            ),
            decode: b.histogram(
                "vllm:request_decode_time_seconds",
                "Seconds from a sequence's first token to its last.",
                REQUEST_BUCKETS,
            ),
        }
    }
}

/// Size histograms, in tokens (or sequences for `n`).
struct Sizes {
    prompt: Histogram,
    generation: Histogram,
    params_n: Histogram,
    params_max_tokens: Histogram,
    iteration: Histogram,
}

impl Sizes {
    fn new(b: &Builder<'_>, config: &MetricsConfig) -> Self {
        let tokens = token_buckets(u64::from(config.max_model_len));
        Sizes {
            prompt: b.histogram(
                "vllm:request_prompt_tokens",
                "Prompt tokens per request.",
                &tokens,
            ),
            generation: b.histogram(
                "vllm:request_generation_tokens",
                "Generated tokens per sequence.",
                &tokens,
            ),
            params_n: b.histogram(
                "vllm:request_params_n",
                "The n parameter of requests.",
                N_BUCKETS,
            ),
            params_max_tokens: b.histogram(
                "vllm:request_params_max_tokens",
                "The max_tokens parameter of requests that set it.",
                &tokens,
            ),
            iteration: b.histogram(
                "vllm:iteration_tokens_total",
                "Tokens computed per engine step.",
                &token_buckets(u64::from(config.max_num_batched_tokens)),
            ),
        }
    }
}

/// Every metric Kiln exports, registered in a registry of its own.
pub struct Metrics {
    registry: Registry,
    load: LoadGauges,
    counters: Counters,
    latencies: Latencies,
    sizes: Sizes,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
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
        let load = LoadGauges::new(&b);
        let counters = Counters::new(&b);
        let latencies = Latencies::new(&b);
        let sizes = Sizes::new(&b, config);
        Metrics {
            registry,
            load,
            counters,
            latencies,
            sizes,
        }
    }

    /// Folds one engine event into the counters and histograms.
    pub fn observe(&self, event: &EngineEvent) {
        match event {
            EngineEvent::RequestArrived { .. } => {}
            EngineEvent::Step(stats) => self.observe_step(stats),
            EngineEvent::SequenceFinished(m) => {
                self.observe_sequence(m);
                if m.index == 0 {
                    self.observe_request(m);
                }
            }
        }
    }

    fn observe_step(&self, s: &StepStats) {
        let c = &self.counters;
        c.preemptions.inc_by(u64::from(s.num_preemptions));
        c.prefix_queries.inc_by(u64::from(s.prefix_cache_queries));
        c.prefix_hits.inc_by(u64::from(s.prefix_cache_hits));
        // Steps that computed nothing (bookkeeping after a release) are not iterations.
        if s.num_batched_tokens > 0 {
            self.sizes
                .iteration
                .observe(f64::from(s.num_batched_tokens));
        }
    }

    /// What every sequence contributes.
    fn observe_sequence(&self, m: &RequestMetrics) {
        let l = &self.latencies;
        self.counters
            .generation_tokens
            .inc_by(u64::from(m.generation_tokens));
        self.sizes
            .generation
            .observe(f64::from(m.generation_tokens));
        if m.generation_tokens > 0 {
            l.ttft.observe(m.ttft_seconds);
            l.prefill.observe(m.prefill_seconds);
            l.decode.observe(m.decode_seconds);
        }
        for gap in &m.inter_token_seconds {
            l.itl.observe(*gap);
        }
    }

    /// What a request contributes once (fed its sequence with index 0).
    fn observe_request(&self, m: &RequestMetrics) {
        self.counters
            .prompt_tokens
            .inc_by(u64::from(m.prompt_tokens));
        self.sizes.prompt.observe(f64::from(m.prompt_tokens));
        self.latencies.queue.observe(m.queue_seconds);
        self.latencies.e2e.observe(m.e2e_seconds);
        self.sizes.params_n.observe(f64::from(m.n.max(1)));
        if let Some(max) = m.max_tokens {
            self.sizes.params_max_tokens.observe(f64::from(max));
        }
        // A sequence that ended without a reason ended abnormally.
        let reason = m.reason.unwrap_or(FinishReason::Error);
        self.counters
            .request_success
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts engine events the fold missed.
    pub fn lagged(&self, missed: u64) {
        self.counters.lagged.inc_by(missed);
    }

    /// Sets the gauges from the engine's current load.
    pub fn set_load(&self, load: EngineLoad) {
        self.load.running.set(f64::from(load.running));
        self.load.waiting.set(f64::from(load.waiting));
        self.load.kv_usage.set(load.kv_usage.clamp(0.0, 1.0));
    }

    /// The text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding only fails for malformed families, which this file never
        // builds, and the text encoder writes UTF-8 only.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Value of `vllm:request_success_total` for one reason.
    pub fn successes(&self, reason: FinishReason) -> u64 {
        // Counted by whole increments, so the float is an exact integer.
        self.counters
            .request_success
            .with_label_values(&[reason.as_str()])
            .get() as u64
    }

    /// Value of `kiln:metrics_events_lagged_total`.
    pub fn events_lagged(&self) -> u64 {
        self.counters.lagged.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&MetricsConfig {
            model_name: "m".into(),
            max_model_len: 2048,
            max_num_batched_tokens: 512,
        })
    }

    fn sequence(index: u32, reason: FinishReason, prompt: u32, generated: u32) -> RequestMetrics {
        RequestMetrics {
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
        }
    }

    fn finished(index: u32, reason: FinishReason, prompt: u32, generated: u32) -> EngineEvent {
        EngineEvent::SequenceFinished(sequence(index, reason, prompt, generated))
    }

    /// The value of one exposition line, found by its series (`name{labels}`).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(s, _)| *s == series)
            .and_then(|(_, v)| v.parse().ok())
    }

    #[test]
    fn token_buckets_follow_the_one_two_five_series() {
        assert_eq!(token_buckets(60), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(token_buckets(50), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(token_buckets(0), vec![1.0]);
        assert_eq!(token_buckets(20_000).last(), Some(&20_000.0));
        assert_eq!(token_buckets(u64::from(u32::MAX)).last(), Some(&2e9));
    }

    #[test]
    fn config_comes_from_engine_info() {
        let info = EngineInfo {
            model_id: "org/model".into(),
            max_model_len: 4096,
            max_num_batched_tokens: 1024,
            ..EngineInfo::default()
        };
        let config = MetricsConfig::from_info(&info);
        assert_eq!(config.model_name, "org/model");
        assert_eq!(
            (config.max_model_len, config.max_num_batched_tokens),
            (4096, 1024)
        );
    }

    #[test]
    fn prompt_tokens_and_success_count_once_per_request_generation_per_sequence() {
        let m = metrics();
        m.observe(&finished(0, FinishReason::Length, 10, 16));
        m.observe(&finished(1, FinishReason::Stop, 10, 4));
        let (c, l, s) = (&m.counters, &m.latencies, &m.sizes);
        assert_eq!(c.prompt_tokens.get(), 10);
        assert_eq!(c.generation_tokens.get(), 20);
        assert_eq!(m.successes(FinishReason::Length), 1);
        assert_eq!(m.successes(FinishReason::Stop), 0);
        assert_eq!(l.e2e.get_sample_count(), 1);
        assert_eq!(l.queue.get_sample_count(), 1);
        assert_eq!(l.ttft.get_sample_count(), 2);
        assert_eq!(l.prefill.get_sample_count(), 2);
        assert_eq!(l.decode.get_sample_count(), 2);
        assert_eq!(l.itl.get_sample_count(), 15 + 3);
        assert!((l.itl.get_sample_sum() - 18.0 * 0.02).abs() < 1e-9);
        assert_eq!(s.prompt.get_sample_count(), 1);
        assert_eq!(s.prompt.get_sample_sum(), 10.0);
        assert_eq!(s.generation.get_sample_count(), 2);
        assert_eq!(s.generation.get_sample_sum(), 20.0);
        assert_eq!(s.params_n.get_sample_count(), 1);
        assert_eq!(s.params_n.get_sample_sum(), 2.0);
        assert_eq!(s.params_max_tokens.get_sample_sum(), 16.0);
    }

    #[test]
    fn a_sequence_finishing_before_index_zero_counts_the_request_only_once() {
        let m = metrics();
        m.observe(&finished(1, FinishReason::Stop, 10, 3));
        assert_eq!(m.counters.prompt_tokens.get(), 0);
        assert_eq!(m.successes(FinishReason::Stop), 0);
        m.observe(&finished(0, FinishReason::Stop, 10, 5));
        assert_eq!(m.counters.prompt_tokens.get(), 10);
        assert_eq!(m.counters.generation_tokens.get(), 8);
        assert_eq!(m.successes(FinishReason::Stop), 1);
    }

    #[test]
    fn every_finish_reason_has_its_label() {
        let m = metrics();
        for (i, reason) in REASONS.into_iter().enumerate() {
            for _ in 0..=i {
                m.observe(&finished(0, reason, 1, 1));
            }
        }
        let mut missing = sequence(0, FinishReason::Stop, 1, 1);
        missing.reason = None;
        m.observe(&EngineEvent::SequenceFinished(missing));
        let text = m.encode();
        for (reason, want) in [
            ("stop", 1.0),
            ("length", 2.0),
            ("abort", 3.0),
            ("error", 5.0),
        ] {
            let series = format!(
                "vllm:request_success_total{{finished_reason=\"{reason}\",model_name=\"m\"}}"
            );
            assert_eq!(sample(&text, &series), Some(want), "{series}\n{text}");
        }
    }

    #[test]
    fn every_reason_is_exposed_at_zero_before_any_request() {
        let text = metrics().encode();
        for reason in REASONS {
            let series = format!(
                "vllm:request_success_total{{finished_reason=\"{}\",model_name=\"m\"}}",
                reason.as_str()
            );
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn aborted_sequences_without_tokens_observe_no_token_timings() {
        let m = metrics();
        m.observe(&finished(0, FinishReason::Abort, 7, 0));
        assert_eq!(m.successes(FinishReason::Abort), 1);
        assert_eq!(m.latencies.ttft.get_sample_count(), 0);
        assert_eq!(m.latencies.prefill.get_sample_count(), 0);
        assert_eq!(m.latencies.decode.get_sample_count(), 0);
        assert_eq!(m.latencies.itl.get_sample_count(), 0);
        assert_eq!(m.latencies.e2e.get_sample_count(), 1);
        assert_eq!(m.counters.prompt_tokens.get(), 7);
        assert_eq!(m.sizes.generation.get_sample_count(), 1);
    }

    #[test]
    fn observations_land_in_vllm_buckets() {
        let m = metrics();
        m.observe(&finished(0, FinishReason::Stop, 300, 3));
        let text = m.encode();
        let bucket = |name: &str, le: &str| {
            sample(
                &text,
                &format!("{name}_bucket{{model_name=\"m\",le=\"{le}\"}}"),
            )
        };
        // TTFT 0.05 s: above 0.04, within 0.06.
        assert_eq!(
            bucket("vllm:time_to_first_token_seconds", "0.04"),
            Some(0.0)
        );
        assert_eq!(
            bucket("vllm:time_to_first_token_seconds", "0.06"),
            Some(1.0)
        );
        // Two gaps of 0.02 s: within the first ITL bucket.
        assert_eq!(
            bucket("vllm:inter_token_latency_seconds", "0.01"),
            Some(0.0)
        );
        assert_eq!(
            bucket("vllm:inter_token_latency_seconds", "0.025"),
            Some(2.0)
        );
        // E2E 0.25 s: within the first request bucket.
        assert_eq!(bucket("vllm:e2e_request_latency_seconds", "0.3"), Some(1.0));
        // 300 prompt tokens: above 200, within 500; the last bucket is 2000.
        assert_eq!(bucket("vllm:request_prompt_tokens", "200"), Some(0.0));
        assert_eq!(bucket("vllm:request_prompt_tokens", "500"), Some(1.0));
        assert_eq!(bucket("vllm:request_prompt_tokens", "2000"), Some(1.0));
        assert_eq!(bucket("vllm:request_prompt_tokens", "5000"), None);
        assert_eq!(bucket("vllm:request_prompt_tokens", "+Inf"), Some(1.0));
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
        m.observe(&EngineEvent::Step(StepStats::default()));
        assert_eq!(m.counters.preemptions.get(), 4);
        assert_eq!(m.counters.prefix_queries.get(), 128);
        assert_eq!(m.counters.prefix_hits.get(), 96);
        assert_eq!(m.sizes.iteration.get_sample_count(), 2);
        assert_eq!(m.sizes.iteration.get_sample_sum(), 140.0);
    }

    #[test]
    fn arrivals_move_nothing() {
        let m = metrics();
        let before = m.encode();
        m.observe(&EngineEvent::RequestArrived {
            request_id: 3,
            prompt_tokens: 12,
        });
        assert_eq!(m.encode(), before);
    }

    #[test]
    fn lagged_events_are_counted() {
        let m = metrics();
        m.lagged(3);
        m.lagged(4);
        assert_eq!(m.events_lagged(), 7);
        assert_eq!(
            sample(
                &m.encode(),
                "kiln:metrics_events_lagged_total{model_name=\"m\"}"
            ),
            Some(7.0)
        );
    }

    #[test]
    fn gauges_show_the_load_given() {
        let m = metrics();
        m.set_load(EngineLoad {
            running: 3,
            waiting: 1,
            kv_usage: 0.25,
        });
        let text = m.encode();
        let gauge = |name: &str| sample(&text, &format!("{name}{{model_name=\"m\"}}"));
        assert_eq!(gauge("vllm:num_requests_running"), Some(3.0));
        assert_eq!(gauge("vllm:num_requests_waiting"), Some(1.0));
        assert_eq!(gauge("vllm:kv_cache_usage_perc"), Some(0.25));
        m.set_load(EngineLoad::default());
        let text = m.encode();
        assert_eq!(
            sample(&text, "vllm:num_requests_running{model_name=\"m\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn registries_are_independent() {
        let (a, b) = (metrics(), metrics());
        a.observe(&finished(0, FinishReason::Stop, 5, 5));
        assert_eq!(a.counters.prompt_tokens.get(), 5);
        assert_eq!(b.counters.prompt_tokens.get(), 0);
    }
}
