//! `/metrics` mounted beside the OpenAI routes over the scripted engine:
//! the exposition parses line by line, every vLLM family is there, and the
//! counters move by exactly what known requests did.

use std::collections::HashMap;
use std::time::Duration;

use kiln_frontend_metrics::{CONTENT_TYPE, MetricsFrontend};
use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, golden_config};

fn app() -> TestApp {
    TestApp::new(
        ScriptedConfig::default(),
        golden_config(),
        &[Box::new(OpenAiFrontend), Box::new(MetricsFrontend)],
    )
}

/// Samples by `name{labels}`; panics on a line that is not a comment or `series value`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        out.insert(series.to_string(), value);
    }
    out
}

async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    parse(&r.text())
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series}"))
}

/// Waits until the events of finished requests are folded in.
async fn scrape_until(app: &TestApp, series: &str, want: f64) -> HashMap<String, f64> {
    for _ in 0..200 {
        let s = scrape(app).await;
        if s.get(series) == Some(&want) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} never reached {want}");
}

#[tokio::test]
async fn every_vllm_family_is_exposed_with_its_type() {
    let app = app();
    let text = app.get("/metrics").await.text();
    for (name, kind) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:request_success_total", "counter"),
        ("vllm:num_preemptions_total", "counter"),
        ("vllm:prefix_cache_queries_total", "counter"),
        ("vllm:prefix_cache_hits_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:request_queue_time_seconds", "histogram"),
        ("vllm:request_prefill_time_seconds", "histogram"),
        ("vllm:request_decode_time_seconds", "histogram"),
        ("vllm:request_prompt_tokens", "histogram"),
        ("vllm:request_generation_tokens", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{text}"
        );
    }
    parse(&text);
}

#[tokio::test]
async fn counters_move_by_what_known_requests_did() {
    let app = app();
    let label = |name: &str| format!("{name}{{model_name=\"scripted-model\"}}");
    let before = scrape(&app).await;
    let r = app
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello world","max_tokens":5,"ignore_eos":true}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let usage = r.json()["usage"].clone();
    let prompt = usage["prompt_tokens"].as_f64().unwrap();
    let completion = usage["completion_tokens"].as_f64().unwrap();
    assert_eq!(completion, 5.0);
    let length =
        "vllm:request_success_total{finished_reason=\"length\",model_name=\"scripted-model\"}";
    let after = scrape_until(&app, length, get(&before, length) + 1.0).await;
    let delta = |series: &str| get(&after, series) - get(&before, series);
    assert_eq!(delta(&label("vllm:prompt_tokens_total")), prompt);
    assert_eq!(delta(&label("vllm:generation_tokens_total")), 5.0);
    assert_eq!(delta(&label("vllm:e2e_request_latency_seconds_count")), 1.0);
    assert_eq!(delta(&label("vllm:request_generation_tokens_sum")), 5.0);
    assert_eq!(delta(&label("vllm:inter_token_latency_seconds_count")), 4.0);
    assert_eq!(get(&after, &label("vllm:num_requests_running")), 0.0);
    assert_eq!(get(&after, &label("vllm:kv_cache_usage_perc")), 0.0);
}
