//! A backend fault seen through the HTTP dialects: with one `execute` call
//! failing (`kiln_tests::faulty`), the request in flight ends with an error
//! in its dialect's shape (an error body with the dialect's status, or an
//! error event inside an already-started stream), the server stays healthy
//! with its KV blocks back in the pool and its metrics counting the error,
//! and the next request in the same dialect is answered.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_engine::LLM;
use kiln_engine_api::EngineHandle;
use kiln_http::HttpConfig;
use kiln_http::testing::app::{TestClient, TestResponse};
use kiln_models::weights::WeightDType;
use kiln_tests::faulty::{self, Fault};
use kiln_tests::start;
use kiln_tests::tiny::{TinySpec, write_safetensors};

fn engine(model: &Path) -> LLM {
    start(faulty::engine_config(model))
}

async fn wait_until_idle(handle: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let load = handle.load();
        if load.running == 0 && load.waiting == 0 && load.kv_usage == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "engine not idle: {load:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `path` with `body`, with the fault armed for the request's third step.
async fn faulted(client: &TestClient, path: &str, body: &str) -> TestResponse {
    faulty::arm(Fault::Error, 2);
    let r = client.post_json(path, body).await;
    assert!(
        !faulty::armed(),
        "{path}: the fault never fired: {} {}",
        r.status,
        r.text()
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_is_an_error_in_every_dialect_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_safetensors(
        &dir.path().join("tiny"),
        &TinySpec::default(),
        WeightDType::F32,
    );
    let llm = engine(&model);
    let handle = llm.handle();
    let client = TestClient::over(
        handle.clone(),
        HttpConfig::default(),
        &[
            Box::new(kiln_frontend_openai::OpenAiFrontend),
            Box::new(kiln_frontend_tgi::TgiFrontend),
            Box::new(kiln_frontend_ollama::OllamaFrontend),
            Box::new(kiln_frontend_metrics::MetricsFrontend),
        ],
    );
    let injected = "injected fault: the device failed";
    let cases = [
        // (path, body, the fault's answer: status and what it must contain)
        (
            "/v1/completions",
            r#"{"model":"any","prompt":"Hello","max_tokens":8,"temperature":0,"ignore_eos":true}"#,
            500,
            r#""error":{"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"any","messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"stream":true,"ignore_eos":true}"#,
            200,
            r#"data: {"error":{"#,
        ),
        (
            "/generate",
            r#"{"inputs":"Hello","parameters":{"max_new_tokens":8}}"#,
            // TGI answers generation errors with 424 Failed Dependency.
            424,
            r#""error_type""#,
        ),
        (
            "/generate_stream",
            r#"{"inputs":"Hello","parameters":{"max_new_tokens":8}}"#,
            200,
            r#""error_type""#,
        ),
        (
            "/api/generate",
            r#"{"model":"tiny","prompt":"Hello","stream":true,"options":{"num_predict":8}}"#,
            200,
            r#"{"error":"#,
        ),
        (
            "/api/chat",
            r#"{"model":"tiny","messages":[{"role":"user","content":"Hi"}],"stream":false,"options":{"num_predict":8}}"#,
            500,
            r#"{"error":"#,
        ),
    ];
    for (path, body, status, shape) in cases {
        let r = faulted(&client, path, body).await;
        let text = r.text();
        assert_eq!(r.status.as_u16(), status, "{path}: {text}");
        assert!(
            text.contains(shape),
            "{path}: not in the dialect's error shape: {text}"
        );
        assert!(
            text.contains(injected),
            "{path}: the cause is not named: {text}"
        );
        wait_until_idle(&handle).await;
        assert_eq!(client.get("/health").await.status, 200, "{path}");
        let again = client.post_json(path, body).await;
        assert!(
            again.status.is_success() && !again.text().contains(injected),
            "{path}: the next request failed: {}",
            again.text()
        );
        wait_until_idle(&handle).await;
    }
    let metrics = client.get("/metrics").await.text();
    let errors = metrics
        .lines()
        .find(|l| {
            l.starts_with("vllm:request_success_total") && l.contains(r#"finished_reason="error""#)
        })
        .unwrap_or_else(|| panic!("no error counter in /metrics:\n{metrics}"));
    let count: f64 = errors.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= cases.len() as f64, "{errors}");
}
