//! Golden snapshots of every OpenAI route (bodies and SSE byte for byte,
//! with a fixed clock and counting ids) over the scripted engine.

use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, TestResponse, golden_config};

fn app() -> TestApp {
    TestApp::new(
        ScriptedConfig::default(),
        golden_config(),
        &[Box::new(OpenAiFrontend)],
    )
}

async fn post(path: &str, body: &str) -> TestResponse {
    app().post_json(path, body).await
}

fn assert_sse(r: &TestResponse) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    assert!(r.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn completion_json() {
    let r = post(
        "/v1/completions",
        r#"{"model":"scripted-model","prompt":"Hello world","max_tokens":5}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-request-id"), Some("1"));
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn completion_sse_with_usage() {
    let r = post(
        "/v1/completions",
        r#"{"prompt":"Hello","max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    assert_sse(&r);
    insta::assert_snapshot!(r.text());
}

#[tokio::test]
async fn completion_n2_seeded_with_logprobs() {
    let body = r#"{"prompt":"Hello","max_tokens":3,"n":2,"seed":7,"logprobs":2,"temperature":0.8}"#;
    let r = post("/v1/completions", body).await;
    assert_eq!(r.status, 200);
    let again = post("/v1/completions", body).await;
    assert_eq!(
        r.json()["choices"],
        again.json()["choices"],
        "same seed, same output"
    );
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn completion_sse_logprobs_and_batch() {
    let r = post(
        "/v1/completions",
        r#"{"prompt":["Hello","What"],"max_tokens":2,"stream":true,"logprobs":1}"#,
    )
    .await;
    assert_sse(&r);
    let text = r.text();
    assert!(text.contains("\"index\":0") && text.contains("\"index\":1"));
    assert_eq!(text.matches("\"finish_reason\":\"length\"").count(), 2);
}

#[tokio::test]
async fn completion_batch_and_echo() {
    let r = post(
        "/v1/completions",
        r#"{"prompt":["Hello","What"],"max_tokens":2,"echo":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn completion_stop_string_and_extras() {
    let r = post(
        "/v1/completions",
        r#"{"prompt":[1,300],"max_tokens":30,"temperature":0,"stop":[" kiln"],"top_k":5,"ignore_eos":true,"min_p":0.05}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["text"], "Once upon a time, a little");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["stop_reason"], " kiln");
}

#[tokio::test]
async fn vllm_extras_reach_the_engine() {
    let a = app();
    let r = a
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello","top_k":3,"repetition_penalty":1.3,"min_tokens":2,"stop_token_ids":[9],"skip_special_tokens":false,"include_stop_str_in_output":true,"seed":11}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let req = a.engine.last_admitted().unwrap().request;
    assert_eq!(req.sampling.top_k, 3);
    assert_eq!(req.sampling.repetition_penalty, 1.3);
    assert_eq!(req.sampling.seed, Some(11));
    assert_eq!(req.stopping.min_tokens, 2);
    assert_eq!(req.stopping.stop_token_ids, vec![9]);
    assert!(!req.stopping.skip_special_tokens && req.stopping.include_stop_str_in_output);
    assert_eq!(req.tag.as_deref(), Some("1"));
}

#[tokio::test]
async fn chat_json() {
    let r = post(
        "/v1/chat/completions",
        r#"{"model":"tgi","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":6}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn chat_default_max_tokens_is_the_rest_of_the_context() {
    let a = app();
    let r = a
        .post_json(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let admitted = a.engine.last_admitted().unwrap();
    assert_eq!(
        admitted.max_tokens as usize,
        128 - admitted.prompt_token_ids.len()
    );
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_sse_with_usage() {
    let r = post(
        "/v1/chat/completions",
        r#"{"model":"dummy","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    assert_sse(&r);
    insta::assert_snapshot!(r.text());
}

#[tokio::test]
async fn chat_sse_n2_stop() {
    let r = post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"n":2,"stop":"time","stream":true}"#,
    )
    .await;
    assert_sse(&r);
    insta::assert_snapshot!(r.text());
}

#[tokio::test]
async fn chat_logprobs() {
    let r = post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"logprobs":true,"top_logprobs":2}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn chat_sse_logprobs_and_continuous_usage() {
    let r = post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"logprobs":true,"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true}}"#,
    )
    .await;
    assert_sse(&r);
    insta::assert_snapshot!(r.text());
}

#[tokio::test]
async fn errors_mid_stream_keep_status_200() {
    let r = post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"please [fail]"}],"stream":true}"#,
    )
    .await;
    assert_sse(&r);
    insta::assert_snapshot!(r.text());
    let r = post("/v1/completions", r#"{"prompt":"x [fail]","max_tokens":9}"#).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "InternalServerError");
}

#[tokio::test]
async fn continue_final_message() {
    let a = app();
    let r = a
        .post_json(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Once"}],"continue_final_message":true,"add_generation_prompt":false,"max_tokens":1}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = a.engine.last_admitted().unwrap().prompt_token_ids;
    let text = kiln_http::testing::vocab::detokenize(&prompt, false).unwrap();
    assert!(text.ends_with("<|im_start|>assistant\nOnce"), "{text}");
}

#[tokio::test]
async fn context_overflow_names_both_numbers() {
    let r = post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":500}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    insta::assert_json_snapshot!(r.json());
}

#[tokio::test]
async fn models_version_server_info() {
    let a = app();
    let models = a.get("/v1/models").await;
    assert_eq!(models.status, 200);
    insta::assert_json_snapshot!("models", models.json());
    insta::assert_json_snapshot!("version", a.get("/version").await.json());
    let info = a.get("/v1/server_info").await.json();
    assert_eq!(info["http"]["frontends"], serde_json::json!(["openai"]));
    assert_eq!(info["engine"]["max_model_len"], 128);
    assert_eq!(a.get("/v1/models/scripted-model").await.status, 404);
}

#[tokio::test]
async fn tokenize_and_detokenize() {
    let a = app();
    let t = a
        .post_json(
            "/tokenize",
            r#"{"prompt":"Hello world","return_token_strs":true}"#,
        )
        .await;
    assert_eq!(t.status, 200);
    insta::assert_json_snapshot!("tokenize_prompt", t.json());
    let c = a
        .post_json(
            "/tokenize",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    insta::assert_json_snapshot!("tokenize_messages", c.json());
    let tokens = t.json()["tokens"].clone();
    let d = a
        .post_json(
            "/detokenize",
            &serde_json::json!({"tokens": tokens}).to_string(),
        )
        .await;
    assert_eq!(d.json(), serde_json::json!({"prompt": "<s>Hello world"}));
}

#[tokio::test]
async fn health_is_empty_200_then_503() {
    let a = app();
    let r = a.get("/health").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
    a.engine.set_healthy(false);
    assert_eq!(a.get("/health").await.status, 503);
    let r = a.post_json("/v1/completions", r#"{"prompt":"x"}"#).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn structured_outputs_reach_the_engine_and_shape_the_text() {
    let app = app();
    let schema = r#"{"type":"object","properties":{"city":{"type":"string"},"n":{"type":"integer"}},"required":["city","n"]}"#;
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"hi"}}],"response_format":{{"type":"json_schema","json_schema":{{"name":"place","schema":{schema},"strict":true}}}}}}"#
    );
    let r = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let content = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let parsed: serde_json::Value = serde_json::from_str(&content).unwrap();
    assert!(
        parsed["city"].is_string() && parsed["n"].is_i64(),
        "{content}"
    );
    let admitted = app.engine.last_admitted().unwrap();
    assert_eq!(
        admitted.request.sampling.structured,
        Some(kiln_protocol::StructuredOutput::JsonSchema(
            serde_json::from_str::<serde_json::Value>(schema)
                .unwrap()
                .to_string()
        ))
    );
    let r = app
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Pick","guided_choice":["red","blue"],"max_tokens":8}"#,
        )
        .await;
    assert_eq!(r.json()["choices"][0]["text"], "blue");
    let r = app
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Digits","structured_outputs":{"regex":"[0-9]{3}"},"max_tokens":2}"#,
        )
        .await;
    let choice = &r.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(choice["text"], "11");
}

#[tokio::test]
async fn completion_echo_with_logprobs_leads_with_the_prompt_tokens() {
    let a = app();
    let r = a
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello world","max_tokens":2,"echo":true,"logprobs":1}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = a.engine.last_admitted().unwrap();
    let prompt_len = req.prompt_token_ids.len();
    assert_eq!(req.request.sampling.prompt_logprobs, Some(1));
    let choice = &r.json()["choices"][0];
    let lp = &choice["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), prompt_len + 2, "{lp}");
    assert_eq!(lp["token_logprobs"][0], serde_json::Value::Null);
    assert_eq!(lp["top_logprobs"][0], serde_json::Value::Null);
    assert!(lp["token_logprobs"][1].is_f64());
    let offsets = lp["text_offset"].as_array().unwrap();
    assert!(offsets.windows(2).all(|w| w[0].as_u64() <= w[1].as_u64()));
    assert!(choice["text"].as_str().unwrap().starts_with("Hello world"));
    assert_eq!(
        choice["prompt_logprobs"],
        serde_json::Value::Null,
        "not asked by name"
    );

    let r = a
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello world","max_tokens":2,"echo":true,"logprobs":1,"stream":true}"#,
        )
        .await;
    assert_sse(&r);
    let first: serde_json::Value = serde_json::from_str(
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    let choice = &first["choices"][0];
    assert!(choice["text"].as_str().unwrap().starts_with("Hello world"));
    assert_eq!(
        choice["logprobs"]["tokens"].as_array().unwrap().len(),
        prompt_len
    );
}

#[tokio::test]
async fn vllm_prompt_logprobs_on_completions_and_chat() {
    let r = post(
        "/v1/completions",
        r#"{"prompt":"Hello world","max_tokens":1,"prompt_logprobs":2}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json()["choices"][0]["prompt_logprobs"].clone();
    let entries = p.as_array().unwrap();
    assert_eq!(entries[0], serde_json::Value::Null);
    let second = entries[1].as_object().unwrap();
    assert_eq!(second.len(), 2, "the token and its neighbour: {second:?}");
    let (_, best) = second.iter().find(|(_, v)| v["rank"] == 1).unwrap();
    assert!(best["logprob"].is_f64() && best["decoded_token"].is_string());

    let r = post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"prompt_logprobs":0}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json()["prompt_logprobs"].clone();
    assert_eq!(p[0], serde_json::Value::Null);
    assert_eq!(p[1].as_object().unwrap().len(), 1);

    let r = post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"prompt_logprobs":0,"stream":true}"#,
    )
    .await;
    assert_sse(&r);
    assert!(
        r.text().contains("\"prompt_logprobs\":[null,"),
        "{}",
        r.text()
    );

    let r = post(
        "/v1/completions",
        r#"{"prompt":"Hello","max_tokens":1,"prompt_logprobs":-1}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "prompt_logprobs");
}

#[tokio::test]
async fn best_of_returns_the_most_likely_of_its_sequences() {
    let a = app();
    let r = a
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello","max_tokens":4,"n":1,"best_of":3,"seed":3,"temperature":1.0}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let admitted = a.engine.last_admitted().unwrap().request.sampling;
    assert_eq!((admitted.n, admitted.logprobs), (3, Some(0)));
    let best = r.json();
    let choices = best["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["logprobs"], serde_json::Value::Null, "not asked");

    let all = a
        .post_json(
            "/v1/completions",
            r#"{"prompt":"Hello","max_tokens":4,"n":3,"seed":3,"temperature":1.0,"logprobs":0}"#,
        )
        .await
        .json();
    let score = |c: &serde_json::Value| -> f64 {
        c["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum()
    };
    let most_likely = all["choices"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|x, y| score(x).total_cmp(&score(y)))
        .unwrap();
    assert_eq!(choices[0]["text"], most_likely["text"]);
}
