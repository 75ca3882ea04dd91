//! Golden snapshots of TGI's routes over the scripted engine.

use kiln_frontend_tgi::TgiFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, TestResponse, golden_config};

fn app() -> TestApp {
    TestApp::new(
        ScriptedConfig::default(),
        golden_config(),
        &[Box::new(TgiFrontend)],
    )
}

async fn post(path: &str, body: &str) -> TestResponse {
    app().post_json(path, body).await
}

fn assert_sse(r: &TestResponse) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    assert!(!r.text().contains("[DONE]"));
}

#[tokio::test]
async fn generate_plain() {
    let r = post(
        "/generate",
        r#"{"inputs":"Hello","parameters":{"max_new_tokens":4}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-generated-tokens"), Some("4"));
    assert_eq!(r.header("x-prompt-tokens"), Some("2"));
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn generate_with_details() {
    let r = post(
        "/generate",
        r#"{"inputs":"Hello","parameters":{"max_new_tokens":3,"details":true,"decoder_input_details":true,"top_n_tokens":2,"do_sample":true,"seed":5}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn compat_route_returns_an_array_with_full_text() {
    let r = post(
        "/",
        r#"{"inputs":"Hello","parameters":{"best_of":null,"decoder_input_details":false,"details":true,"do_sample":false,"max_new_tokens":20,"repetition_penalty":null,"return_full_text":false,"seed":null,"stop":[],"temperature":null,"top_k":null,"top_n_tokens":null,"top_p":null,"truncate":null,"typical_p":null,"watermark":false},"stream":false}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    insta::assert_json_snapshot!(r.json());
    let full = post(
        "/",
        r#"{"inputs":"Hello","parameters":{"max_new_tokens":2}}"#,
    )
    .await;
    assert_eq!(full.json()[0]["generated_text"], "HelloOnce upon");
}

#[tokio::test]
async fn stop_sequences_and_eos() {
    let r = post(
        "/generate",
        r#"{"inputs":"Hi","parameters":{"stop":[" kiln"],"details":true}}"#,
    )
    .await;
    let v = r.json();
    assert_eq!(v["generated_text"], "Once upon a time, a little kiln");
    assert_eq!(v["details"]["finish_reason"], "stop_sequence");
    let r = post(
        "/generate",
        r#"{"inputs":"Hi","parameters":{"details":true}}"#,
    )
    .await;
    let v = r.json();
    assert_eq!(v["details"]["finish_reason"], "eos_token");
    let last = v["details"]["tokens"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["special"], true);
    assert_eq!(last["text"], "<|im_end|>");
}

#[tokio::test]
async fn generate_stream_sse() {
    let r = post(
        "/generate_stream",
        r#"{"inputs":"Hello","parameters":{"max_new_tokens":3,"details":true}}"#,
    )
    .await;
    assert_sse(&r);
    insta::assert_snapshot!(r.text());
}

#[tokio::test]
async fn compat_stream_with_top_tokens_and_eos() {
    let r = post(
        "/",
        r#"{"inputs":"Hi","stream":true,"parameters":{"max_new_tokens":60,"details":true,"top_n_tokens":1,"stop":["The end"],"return_full_text":false}}"#,
    )
    .await;
    assert_sse(&r);
    let text = r.text();
    let last = text.trim_end().lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert!(
        v["generated_text"].as_str().unwrap().ends_with("The end"),
        "{v}"
    );
    assert_eq!(v["details"]["finish_reason"], "stop_sequence");
    assert!(text.contains("\"top_tokens\":[{"));
}

#[tokio::test]
async fn stream_errors_are_events() {
    let r = post("/generate_stream", r#"{"inputs":"x [fail]"}"#).await;
    assert_sse(&r);
    insta::assert_snapshot!(r.text());
}

#[tokio::test]
async fn truncate_keeps_the_last_tokens() {
    let a = app();
    let r = a
        .post_json("/generate", r#"{"inputs":"Hello world Hello world","parameters":{"truncate":2,"max_new_tokens":1}}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let admitted = a.engine.last_admitted().unwrap();
    assert_eq!(
        kiln_http::testing::vocab::detokenize(&admitted.prompt_token_ids, false).unwrap(),
        " Hello world"
    );
}

#[tokio::test]
async fn info_and_tokenize() {
    let a = app();
    insta::assert_json_snapshot!("info", a.get("/info").await.json());
    let t = a
        .post_json("/tokenize", r#"{"inputs":"Hello world"}"#)
        .await;
    assert_eq!(t.status, 200);
    insta::assert_json_snapshot!("tokenize", t.json());
}

#[tokio::test]
async fn context_overflow_is_422() {
    let r = post(
        "/generate",
        r#"{"inputs":"Hello","parameters":{"max_new_tokens":500}}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn best_of_answers_with_the_most_likely_sequence() {
    let r = post(
        "/generate",
        r#"{"inputs":"Hello","parameters":{"max_new_tokens":4,"best_of":2,"do_sample":true,"details":true}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let others = v["details"]["best_of_sequences"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    let score = |d: &serde_json::Value| -> f64 {
        d["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap())
            .sum()
    };
    assert!(score(&v["details"]) >= score(&others[0]));
    assert!(others[0]["generated_text"].is_string());
    assert_eq!(others[0]["generated_tokens"], 4);
}
