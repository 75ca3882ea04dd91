//! `/metrics` mounted beside the OpenAI routes over the scripted engine:
//! the exposition parses line by line, every vLLM family is there with its
//! type, and the counters move by exactly what known requests did.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use kiln_frontend_metrics::{CONTENT_TYPE, MetricsFrontend};
use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, golden_config};
use tower::ServiceExt;

const MODEL: &str = "scripted-model";

/// Every family Kiln exports, with its Prometheus type.
const FAMILIES: &[(&str, &str)] = &[
    ("vllm:num_requests_running", "gauge"),
    ("vllm:num_requests_waiting", "gauge"),
    ("vllm:kv_cache_usage_perc", "gauge"),
    ("vllm:prompt_tokens_total", "counter"),
    ("vllm:generation_tokens_total", "counter"),
    ("vllm:request_success_total", "counter"),
    ("vllm:num_preemptions_total", "counter"),
    ("vllm:prefix_cache_queries_total", "counter"),
    ("vllm:prefix_cache_hits_total", "counter"),
    ("kiln:metrics_events_lagged_total", "counter"),
    ("vllm:time_to_first_token_seconds", "histogram"),
    ("vllm:inter_token_latency_seconds", "histogram"),
    ("vllm:e2e_request_latency_seconds", "histogram"),
    ("vllm:request_queue_time_seconds", "histogram"),
    ("vllm:request_prefill_time_seconds", "histogram"),
    ("vllm:request_decode_time_seconds", "histogram"),
    ("vllm:request_prompt_tokens", "histogram"),
    ("vllm:request_generation_tokens", "histogram"),
    ("vllm:request_params_n", "histogram"),
    ("vllm:request_params_max_tokens", "histogram"),
    ("vllm:iteration_tokens_total", "histogram"),
];

fn app_with(engine: ScriptedConfig) -> TestApp {
    TestApp::new(
        engine,
        golden_config(),
        &[Box::new(OpenAiFrontend), Box::new(MetricsFrontend)],
    )
}

fn app() -> TestApp {
    app_with(ScriptedConfig::default())
}

/// One scrape: samples by series (`name{labels}` as written) and the
/// `# TYPE` of each family.
#[derive(Debug, Default)]
struct Scrape {
    samples: HashMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series}"))
    }

    /// A series of this model with no other label.
    fn model(&self, name: &str) -> f64 {
        self.get(&format!("{name}{{model_name=\"{MODEL}\"}}"))
    }

    fn success(&self, reason: &str) -> f64 {
        self.get(&format!(
            "vllm:request_success_total{{finished_reason=\"{reason}\",model_name=\"{MODEL}\"}}"
        ))
    }
}

fn is_name(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

/// Checks `{k="v",...}` and returns the label names.
fn label_names(labels: &str, line: &str) -> Vec<String> {
    let inner = labels
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("bad labels in {line:?}"));
    inner
        .split(',')
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(is_name(k, false), "bad label name in {line:?}");
            assert!(
                v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "unquoted label value in {line:?}"
            );
            k.to_string()
        })
        .collect()
}

/// The family a sample belongs to (histogram series end in `_bucket`, `_sum`, `_count`).
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|f| types.get(*f).is_some_and(|t| t == "histogram"))
        .unwrap_or_else(|| panic!("sample {name} has no # TYPE"))
}

/// Parses the text exposition format strictly: `# HELP name text`,
/// `# TYPE name type` before the family's samples, `name{labels} value`.
fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(is_name(name, true), "bad HELP line {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name and type");
            assert!(is_name(name, true), "bad TYPE line {line:?}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{line:?}"
            );
            scrape.types.insert(name.into(), kind.into());
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "{line:?}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = series.split_at(series.find('{').unwrap_or(series.len()));
        assert!(is_name(name, true), "bad metric name in {line:?}");
        family(name, &scrape.types);
        if !labels.is_empty() {
            assert!(label_names(labels, line).contains(&"model_name".to_string()));
        }
        scrape.samples.insert(series.to_string(), value);
    }
    check_histograms(&scrape);
    scrape
}

/// Buckets of each histogram are cumulative and `+Inf` equals `_count`.
fn check_histograms(scrape: &Scrape) {
    for (name, _) in scrape.types.iter().filter(|(_, t)| *t == "histogram") {
        let prefix = format!("{name}_bucket{{model_name=\"{MODEL}\",le=\"");
        let mut buckets: Vec<(f64, f64)> = scrape
            .samples
            .iter()
            .filter_map(|(series, v)| {
                let le = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() > 1, "{name} has no buckets");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{name}");
        let last = buckets.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{name}");
        assert_eq!(last.1, scrape.model(&format!("{name}_count")), "{name}");
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    parse(&r.text())
}

/// Scrapes until `done` holds (events are folded by a background task).
async fn scrape_until(app: &TestApp, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..300 {
        let s = scrape(app).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("metrics never showed {what}");
}

#[tokio::test]
async fn every_family_is_exposed_with_its_type() {
    let app = app();
    let text = app.get("/metrics").await.text();
    for (name, kind) in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{text}"
        );
    }
    let scrape = parse(&text);
    assert_eq!(scrape.types.len(), FAMILIES.len(), "{:?}", scrape.types);
    for reason in ["stop", "length", "abort", "error"] {
        assert_eq!(scrape.success(reason), 0.0);
    }
}

#[tokio::test]
async fn counters_move_by_what_known_requests_did() {
    let app = app();
    let before = scrape(&app).await;
    let r = app
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello world","max_tokens":5,"ignore_eos":true}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = r.json()["usage"]["prompt_tokens"].as_f64().unwrap();
    assert_eq!(r.json()["usage"]["completion_tokens"], 5);
    let want = before.success("length") + 1.0;
    let after = scrape_until(&app, "one length", |s| s.success("length") == want).await;
    let delta = |name: &str| after.model(name) - before.model(name);
    assert_eq!(delta("vllm:prompt_tokens_total"), prompt);
    assert_eq!(delta("vllm:generation_tokens_total"), 5.0);
    assert_eq!(delta("vllm:e2e_request_latency_seconds_count"), 1.0);
    assert_eq!(delta("vllm:request_queue_time_seconds_count"), 1.0);
    assert_eq!(delta("vllm:time_to_first_token_seconds_count"), 1.0);
    assert_eq!(delta("vllm:request_prompt_tokens_sum"), prompt);
    assert_eq!(delta("vllm:request_generation_tokens_sum"), 5.0);
    assert_eq!(delta("vllm:inter_token_latency_seconds_count"), 4.0);
    assert_eq!(delta("vllm:request_params_n_sum"), 1.0);
    assert_eq!(delta("vllm:request_params_max_tokens_sum"), 5.0);
    // One step per generated token, the first also querying the prefix cache.
    assert_eq!(delta("vllm:iteration_tokens_total_count"), 5.0);
    assert_eq!(delta("vllm:prefix_cache_queries_total"), prompt);
    assert_eq!(after.success("stop"), 0.0);
    assert_eq!(after.model("vllm:num_requests_running"), 0.0);
    assert_eq!(after.model("vllm:num_requests_waiting"), 0.0);
    assert_eq!(after.model("vllm:kv_cache_usage_perc"), 0.0);
    assert_eq!(after.model("kiln:metrics_events_lagged_total"), 0.0);
}

#[tokio::test]
async fn a_request_with_n_sequences_counts_its_prompt_and_success_once() {
    let app = app();
    let r = app
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello world","max_tokens":4,"n":3,"ignore_eos":true}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = r.json()["usage"]["prompt_tokens"].as_f64().unwrap();
    assert_eq!(r.json()["usage"]["completion_tokens"], 12);
    let s = scrape_until(&app, "three sequences", |s| {
        s.model("vllm:request_generation_tokens_count") == 3.0
    })
    .await;
    assert_eq!(s.model("vllm:prompt_tokens_total"), prompt);
    assert_eq!(s.model("vllm:generation_tokens_total"), 12.0);
    assert_eq!(s.success("length"), 1.0);
    assert_eq!(s.model("vllm:e2e_request_latency_seconds_count"), 1.0);
    assert_eq!(s.model("vllm:request_prompt_tokens_count"), 1.0);
    assert_eq!(s.model("vllm:time_to_first_token_seconds_count"), 3.0);
    assert_eq!(s.model("vllm:inter_token_latency_seconds_count"), 9.0);
    assert_eq!(s.model("vllm:request_params_n_sum"), 3.0);
    assert_eq!(
        s.get(&format!(
            "vllm:request_params_n_bucket{{model_name=\"{MODEL}\",le=\"2\"}}"
        )),
        0.0
    );
}

#[tokio::test]
async fn a_failed_request_counts_as_error() {
    let app = app();
    let r = app
        .post_json("/v1/completions", r#"{"prompt":"x [fail]","max_tokens":9}"#)
        .await;
    assert!(r.status.is_server_error(), "{}", r.status);
    let s = scrape_until(&app, "one error", |s| s.success("error") == 1.0).await;
    assert_eq!(s.model("vllm:generation_tokens_total"), 2.0);
    assert_eq!(s.success("abort"), 0.0);
    assert_eq!(s.model("vllm:num_requests_running"), 0.0);
}

/// Sends a completion from a task of its own (aborting the task drops the
/// request mid-flight, as a client disconnect does).
fn spawn_completion(app: &TestApp, body: &'static str) -> tokio::task::JoinHandle<()> {
    let request = Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("valid request");
    let router = app.router.clone();
    tokio::spawn(async move {
        let _ = router.oneshot(request).await;
    })
}

#[tokio::test]
async fn gauges_follow_the_load_and_read_zero_once_requests_are_aborted() {
    let app = app_with(ScriptedConfig {
        token_delay: Duration::from_millis(20),
        max_num_seqs: 1,
        ..ScriptedConfig::default()
    });
    let body = r#"{"prompt":"Hello","max_tokens":100,"ignore_eos":true}"#;
    let clients: Vec<_> = (0..2).map(|_| spawn_completion(&app, body)).collect();
    let busy = scrape_until(&app, "one running, one waiting", |s| {
        s.model("vllm:num_requests_running") == 1.0 && s.model("vllm:num_requests_waiting") == 1.0
    })
    .await;
    assert!(busy.model("vllm:kv_cache_usage_perc") > 0.0);
    assert!(busy.model("vllm:kv_cache_usage_perc") <= 1.0);
    // Dropping the in-flight requests (a client disconnect) aborts them.
    for client in &clients {
        client.abort();
    }
    let idle = scrape_until(&app, "two aborts", |s| s.success("abort") == 2.0).await;
    assert_eq!(idle.model("vllm:num_requests_running"), 0.0);
    assert_eq!(idle.model("vllm:num_requests_waiting"), 0.0);
    assert_eq!(idle.model("vllm:kv_cache_usage_perc"), 0.0);
    assert_eq!(idle.model("vllm:e2e_request_latency_seconds_count"), 2.0);
    assert_eq!(app.engine.aborted().len(), 2);
}

#[tokio::test]
async fn embedding_requests_count_like_generation_requests() {
    let app = app_with(ScriptedConfig {
        embedding: Some(kiln_http::testing::app::encoder_spec(Vec::new())),
        ..ScriptedConfig::default()
    });
    let before = scrape(&app).await;
    let r = app
        .post_json(
            "/v1/embeddings",
            r#"{"input":["Hello world","Once upon a time"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = r.json()["usage"]["prompt_tokens"].as_f64().unwrap();
    let want = before.success("stop") + 2.0;
    let after = scrape_until(&app, "two embeddings", |s| s.success("stop") == want).await;
    let delta = |name: &str| after.model(name) - before.model(name);
    assert_eq!(delta("vllm:prompt_tokens_total"), prompt);
    assert_eq!(delta("vllm:request_prompt_tokens_sum"), prompt);
    assert_eq!(delta("vllm:e2e_request_latency_seconds_count"), 2.0);
    assert_eq!(delta("vllm:request_queue_time_seconds_count"), 2.0);
    assert_eq!(delta("vllm:generation_tokens_total"), 0.0);
    assert_eq!(delta("vllm:time_to_first_token_seconds_count"), 0.0);
    assert_eq!(after.success("error"), 0.0);
}
