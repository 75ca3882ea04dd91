//! Golden snapshots of the Ollama routes (bodies and NDJSON line by line,
//! with a fixed clock) over the scripted engine, and how `options` map onto
//! the engine's sampling parameters.

use axum::http::Method;
use kiln_frontend_ollama::OllamaFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, TestResponse, golden_config};

fn app() -> TestApp {
    TestApp::new(
        ScriptedConfig::default(),
        golden_config(),
        &[Box::new(OllamaFrontend)],
    )
}

/// Checks NDJSON framing (one object per line, no blank line, only the last
/// one `done`) and returns the objects.
fn ndjson(r: &TestResponse) -> Vec<serde_json::Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let text = r.text();
    assert!(text.ends_with('\n') && !text.contains("\n\n") && !text.starts_with('\n'));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let (last, rest) = lines.split_last().expect("at least one line");
    assert_eq!(last["done"], true);
    assert!(rest.iter().all(|l| l["done"] == false));
    lines
}

#[tokio::test]
async fn generate_streams_ndjson_by_default() {
    let r = app()
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"Hello","options":{"num_predict":4}}"#,
        )
        .await;
    let lines = ndjson(&r);
    assert_eq!(lines.last().unwrap()["done_reason"], "length");
    assert_eq!(lines.last().unwrap()["eval_count"], 4);
    insta::assert_json_snapshot!(lines);
}

#[tokio::test]
async fn generate_without_streaming() {
    let r = app()
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"Hello","stream":false,"options":{"num_predict":3}}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn chat_streams_and_answers_with_a_message() {
    let body = r#"{"model":"scripted-model:latest","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"options":{"num_predict":3},"tools":[]}"#;
    let lines = ndjson(&app().post_json("/api/chat", body).await);
    assert!(lines.iter().all(|l| l["message"]["role"] == "assistant"));
    insta::assert_json_snapshot!(lines);
}

#[tokio::test]
async fn chat_without_streaming() {
    let body = r#"{"model":"scripted-model","messages":[{"role":"user","content":"Hi"}],"stream":false,"options":{"num_predict":3}}"#;
    let r = app().post_json("/api/chat", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn options_map_onto_sampling_and_stopping() {
    let app = app();
    let body = r#"{"model":"scripted-model","prompt":"Hi","stream":false,"raw":true,"keep_alive":"5m",
        "options":{"num_predict":5,"temperature":0.5,"top_k":7,"top_p":0.9,"min_p":0.05,"repeat_penalty":1.2,
                   "presence_penalty":0.1,"frequency_penalty":0.2,"seed":11,"stop":["END"],"num_ctx":4096,"mirostat":0}}"#;
    let r = app.post_json("/api/generate", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = app.engine.last_admitted().expect("admitted");
    let s = &a.request.sampling;
    assert_eq!(
        (s.temperature, s.top_k, s.top_p, s.min_p),
        (0.5, 7, 0.9, 0.05)
    );
    assert_eq!(
        (
            s.repetition_penalty,
            s.presence_penalty,
            s.frequency_penalty
        ),
        (1.2, 0.1, 0.2)
    );
    assert_eq!(s.seed, Some(11));
    assert_eq!(a.request.stopping.stop, vec!["END".to_string()]);
    assert_eq!(a.max_tokens, 5);
}

#[tokio::test]
async fn tags_show_ps_and_version() {
    let app = app();
    let tags = app.get("/api/tags").await;
    assert_eq!(tags.status, 200);
    assert!(tags.json()["models"][0]["model"].is_string());
    let show = app
        .post_json("/api/show", r#"{"model":"scripted-model"}"#)
        .await;
    assert_eq!(show.status, 200);
    assert!(show.json().get("model_info").is_some());
    let ps = app.get("/api/ps").await;
    let version = app.get("/api/version").await;
    insta::assert_json_snapshot!(serde_json::json!({
        "tags": tags.json(),
        "show": show.json(),
        "ps": ps.json(),
        "version": version.json(),
    }));
}

#[tokio::test]
async fn root_says_ollama_is_running() {
    let app = app();
    let get = app.get("/").await;
    assert_eq!(get.status, 200);
    assert_eq!(get.text(), "Ollama is running");
    let head = app
        .request(Method::HEAD, "/", &[], axum::body::Body::empty())
        .await;
    assert_eq!(head.status, 200);
}
