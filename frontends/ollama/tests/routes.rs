//! Golden snapshots of the Ollama routes (bodies and NDJSON line by line,
//! with a fixed clock) over the scripted engine, the exact NDJSON bytes, how
//! `options` map onto the engine's sampling parameters, and aborts on
//! client disconnect.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use futures::StreamExt;
use kiln_frontend_ollama::OllamaFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, TestResponse, golden_config};
use serde_json::{Value, json};
use tower::ServiceExt;

fn app() -> TestApp {
    app_with(ScriptedConfig::default())
}

fn app_with(engine: ScriptedConfig) -> TestApp {
    TestApp::new(engine, golden_config(), &[Box::new(OllamaFrontend)])
}

/// Checks NDJSON framing (one object per line, each ended by `\n`, no blank
/// line, only the last one `done`) and returns the objects.
fn ndjson(r: &TestResponse) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    let text = r.text();
    assert!(text.ends_with('\n') && !text.contains("\n\n") && !text.starts_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let (last, rest) = lines.split_last().expect("at least one line");
    assert_eq!(last["done"], true);
    assert!(rest.iter().all(|l| l["done"] == false));
    lines
}

/// The final object's metrics: present, integers (nanoseconds and counts).
fn assert_metrics(last: &Value) {
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(last[key].is_u64(), "{key} in {last}");
    }
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
    let last = lines.last().unwrap();
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 4);
    assert_metrics(last);
    insta::assert_json_snapshot!(lines);
}

#[tokio::test]
async fn ndjson_lines_are_exact_bytes() {
    let r = app()
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"Hello","raw":true,"options":{"num_predict":2,"temperature":0}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = concat!(
        r#"{"model":"scripted-model","created_at":"2023-11-14T22:13:20Z","response":"Once","done":false}"#,
        "\n",
        r#"{"model":"scripted-model","created_at":"2023-11-14T22:13:20Z","response":" upon","done":false}"#,
        "\n",
        r#"{"model":"scripted-model","created_at":"2023-11-14T22:13:20Z","response":"","done":true,"done_reason":"length","context":[0,286,260,261],"total_duration":0,"load_duration":0,"prompt_eval_count":2,"prompt_eval_duration":0,"eval_count":2,"eval_duration":0}"#,
        "\n",
    );
    assert_eq!(r.text(), expected);
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
    assert_metrics(&r.json());
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn generate_stops_at_end_of_sequence_and_stop_strings() {
    let app = app();
    let eos = app
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"Hello","stream":false,"options":{"temperature":0}}"#,
        )
        .await;
    assert_eq!(eos.status, 200, "{}", eos.text());
    let v = eos.json();
    assert_eq!(v["done_reason"], "stop");
    assert!(v["response"].as_str().unwrap().ends_with("The end."));
    let stop = app
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"Hello","options":{"temperature":0,"stop":[" kiln"]}}"#,
        )
        .await;
    let lines = ndjson(&stop);
    let text: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Once upon a time, a little");
    assert_eq!(lines.last().unwrap()["done_reason"], "stop");
}

#[tokio::test]
async fn chat_streams_and_answers_with_a_message() {
    let body = r#"{"model":"scripted-model:latest","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"options":{"num_predict":3},"tools":[]}"#;
    let lines = ndjson(&app().post_json("/api/chat", body).await);
    assert!(lines.iter().all(|l| l["message"]["role"] == "assistant"));
    let last = lines.last().unwrap();
    assert!(last.get("context").is_none(), "chat has no context");
    assert_metrics(last);
    insta::assert_json_snapshot!(lines);
}

#[tokio::test]
async fn chat_without_streaming() {
    let body = r#"{"model":"scripted-model","messages":[{"role":"user","content":"Hi"}],"stream":false,"options":{"num_predict":3}}"#;
    let r = app().post_json("/api/chat", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn chat_renders_the_template_and_continues_a_final_assistant_message() {
    let app = app();
    let body = r#"{"model":"kiln-test","stream":false,"options":{"num_predict":2},
        "messages":[{"role":"USER","content":"Hi"},{"role":"assistant","content":"Once"}]}"#;
    let r = app.post_json("/api/chat", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "kiln-test");
    let a = app.engine.last_admitted().unwrap();
    assert!(
        !a.request.add_special_tokens,
        "the template has the specials"
    );
    let kiln_protocol::PromptInput::Text(prompt) = &a.request.prompt else {
        panic!("a text prompt")
    };
    assert_eq!(
        prompt,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nOnce"
    );
}

#[tokio::test]
async fn empty_prompt_or_messages_load_or_unload_the_model() {
    let app = app();
    let load = app
        .post_json("/api/generate", r#"{"model":"scripted-model"}"#)
        .await;
    let unload = app
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"","keep_alive":0}"#,
        )
        .await;
    let chat_load = app
        .post_json(
            "/api/chat",
            r#"{"model":"scripted-model","messages":[],"stream":true}"#,
        )
        .await;
    let chat_unload = app
        .post_json(
            "/api/chat",
            r#"{"model":"scripted-model","keep_alive":"0s"}"#,
        )
        .await;
    for r in [&load, &unload, &chat_load, &chat_unload] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    assert!(app.engine.admitted().is_empty(), "nothing was generated");
    insta::assert_json_snapshot!(json!({
        "generate_load": load.json(),
        "generate_unload": unload.json(),
        "chat_load": chat_load.json(),
        "chat_unload": chat_unload.json(),
    }));
}

#[tokio::test]
async fn options_map_onto_sampling_and_stopping() {
    let app = app();
    let body = r#"{"model":"scripted-model","prompt":"Hi","stream":false,"raw":true,"keep_alive":"5m",
        "options":{"num_predict":5,"temperature":0.5,"top_k":7,"top_p":0.9,"min_p":0.05,"repeat_penalty":1.2,
                   "presence_penalty":0.1,"frequency_penalty":0.2,"seed":11,"stop":["END"],"num_ctx":4096,"mirostat":0,
                   "repeat_last_n":64,"typical_p":1.0,"num_thread":2,"use_mmap":true,"made_up":"ignored"}}"#;
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
    assert_eq!(a.request.tag.as_deref(), Some("1"), "the request id");
}

#[tokio::test]
async fn defaults_are_ollamas() {
    let app = app();
    let r = app
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"Hi","stream":false}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = app.engine.last_admitted().unwrap();
    let s = &a.request.sampling;
    assert_eq!(
        (
            s.temperature,
            s.top_k,
            s.top_p,
            s.min_p,
            s.repetition_penalty
        ),
        (0.8, 40, 0.9, 0.0, 1.0)
    );
    assert_eq!(s.seed, None, "seed -1 is random");
    assert_eq!(a.request.stopping.max_tokens, None);
    assert_eq!(
        a.max_tokens as usize,
        128 - a.prompt_token_ids.len(),
        "up to the context"
    );
}

#[tokio::test]
async fn non_positive_num_predict_generates_up_to_the_context() {
    let app = app();
    for n in ["-1", "-2", "-7", "0"] {
        let body = format!(
            r#"{{"model":"scripted-model","prompt":"Hi","stream":false,"options":{{"num_predict":{n}}}}}"#
        );
        let r = app.post_json("/api/generate", &body).await;
        assert_eq!(r.status, 200, "num_predict {n}: {}", r.text());
        let a = app.engine.last_admitted().unwrap();
        assert_eq!(
            a.max_tokens as usize,
            128 - a.prompt_token_ids.len(),
            "num_predict {n}"
        );
    }
}

#[tokio::test]
async fn raw_system_template_and_context_build_the_prompt() {
    let app = app();
    let prompt_of = |app: &TestApp| match app.engine.last_admitted().unwrap().request.prompt {
        kiln_protocol::PromptInput::Text(t) => t,
        kiln_protocol::PromptInput::TokenIds(ids) => format!("{ids:?}"),
    };
    let raw = r#"{"model":"scripted-model","prompt":"Hello world","raw":true,"stream":false,"options":{"num_predict":1}}"#;
    assert_eq!(app.post_json("/api/generate", raw).await.status, 200);
    assert_eq!(prompt_of(&app), "Hello world");
    assert!(
        app.engine
            .last_admitted()
            .unwrap()
            .request
            .add_special_tokens
    );

    let system = r#"{"model":"scripted-model","prompt":"Hi","system":"Be brief.","stream":false,"options":{"num_predict":1}}"#;
    assert_eq!(app.post_json("/api/generate", system).await.status, 200);
    assert_eq!(
        prompt_of(&app),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );

    let template = r#"{"model":"scripted-model","prompt":"Hi","system":"S","template":"{{ if .System }}[{{ .System }}] {{ end }}Q: {{ .Prompt }} A:","stream":false,"options":{"num_predict":1}}"#;
    assert_eq!(app.post_json("/api/generate", template).await.status, 200);
    assert_eq!(prompt_of(&app), "[S] Q: Hi A:");

    let first = app.post_json("/api/generate", raw).await.json();
    let context = first["context"].clone();
    let follow_up = json!({"model": "scripted-model", "prompt": " world", "context": context,
        "template": "{{ .Prompt }}", "stream": false, "options": {"num_predict": 1}});
    let r = app.post_json("/api/generate", &follow_up.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = app.engine.last_admitted().unwrap();
    let context: Vec<u32> = serde_json::from_value(context).unwrap();
    assert_eq!(a.prompt_token_ids[..context.len()], context[..]);
    assert_eq!(
        a.prompt_token_ids.len(),
        context.len() + 1,
        "the new prompt adds ` world` only, no second BOS"
    );
}

#[tokio::test]
async fn logprobs_are_returned_on_request() {
    let r = app()
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"Hi","raw":true,"stream":false,"logprobs":true,"top_logprobs":2,"options":{"num_predict":2,"temperature":0}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    insta::assert_json_snapshot!(r.json()["logprobs"]);
}

#[tokio::test]
async fn errors_mid_stream_are_a_last_error_line_with_status_200() {
    let r = app()
        .post_json(
            "/api/generate",
            r#"{"model":"scripted-model","prompt":"x [fail]","raw":true}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.ends_with('\n') && !text.contains("\n\n"));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert!(
        last.as_object().unwrap().len() == 1 && last["error"].is_string(),
        "{last}"
    );
    assert!(lines.iter().all(|l| l["done"] != true));
}

#[tokio::test]
async fn a_client_that_disconnects_aborts_its_request() {
    let app = app_with(ScriptedConfig {
        token_delay: Duration::from_millis(20),
        ..Default::default()
    });
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/chat")
        .body(Body::from(
            r#"{"model":"scripted-model","messages":[{"role":"user","content":"Hi"}],"options":{"temperature":0}}"#,
        ))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body().into_data_stream();
    let first = body.next().await.expect("a first line").unwrap();
    assert!(first.ends_with(b"\n"));
    assert!(app.engine.aborted().is_empty(), "still running");
    drop(body);
    for _ in 0..100 {
        if app.engine.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(app.engine.aborted().len(), 1, "the request was aborted");
    assert_eq!(app.engine.in_flight(), 0);
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
    let legacy = app
        .post_json("/api/show", r#"{"name":"kiln-test:latest"}"#)
        .await;
    assert_eq!(legacy.json(), show.json(), "`name` is `model`'s alias");
    let ps = app.get("/api/ps").await;
    let version = app.get("/api/version").await;
    for r in [&tags, &show, &ps, &version] {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    insta::assert_json_snapshot!(json!({
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
    assert_eq!(
        get.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let head = app.request(Method::HEAD, "/", &[], Body::empty()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    for path in ["/api/version", "/api/tags"] {
        let head = app.request(Method::HEAD, path, &[], Body::empty()).await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty());
    }
}

#[tokio::test]
async fn push_and_create_are_not_implemented() {
    let app = app();
    for path in ["/api/push", "/api/create"] {
        let r = app
            .request(Method::POST, path, &[], r#"{"model":"x"}"#.to_string())
            .await;
        assert_eq!(r.status, 501, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains("kiln pull"));
    }
}

#[tokio::test]
async fn without_a_model_cache_pull_and_delete_say_how_to_get_one() {
    let app = app();
    for (method, path) in [(Method::POST, "/api/pull"), (Method::DELETE, "/api/delete")] {
        let r = app
            .request(method, path, &[], r#"{"model":"x"}"#.to_string())
            .await;
        assert_eq!(r.status, 501, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains("KILN_CACHE"));
    }
}
