//! Tool calling on `/v1/chat/completions` over the scripted engine: forced
//! calls follow the tool's schema, auto calls are parsed from scripted
//! output, and both come back in OpenAI's JSON and SSE shapes.

mod common;

use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, golden_config};
use serde_json::{Value, json};

fn app() -> TestApp {
    common::tool_calling_app()
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"], "additionalProperties": false}
    }})
}

fn body(content: &str, tool_choice: Value, stream: bool) -> String {
    json!({
        "messages": [{"role": "user", "content": content}],
        "tools": [weather_tool()],
        "tool_choice": tool_choice,
        "stream": stream,
    })
    .to_string()
}

fn sse_chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn assert_weather_call(call: &Value) {
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
}

#[tokio::test]
async fn required_choice_returns_schema_valid_calls() {
    let r = app()
        .post_json(
            "/v1/chat/completions",
            &body("hi", json!("required"), false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let choice = &r.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_weather_call(&choice["message"]["tool_calls"][0]);
}

#[tokio::test]
async fn named_choice_streams_calls_as_openai_does() {
    let named = json!({"type": "function", "function": {"name": "weather"}});
    let r = app()
        .post_json("/v1/chat/completions", &body("hi", named, true))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks = sse_chunks(&r.text());
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(deltas.len(), 2, "{}", r.text());
    let opening = &deltas[0][0];
    assert_eq!(opening["index"], 0);
    assert_eq!(opening["type"], "function");
    assert_eq!(opening["function"]["name"], "weather");
    assert_eq!(opening["function"]["arguments"], "");
    let mut call = opening.clone();
    call["function"]["arguments"] = deltas[1][0]["function"]["arguments"].clone();
    assert_weather_call(&call);
    let last = &chunks.last().unwrap()["choices"][0];
    assert_eq!(last["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn auto_choice_parses_hermes_calls_and_keeps_prose() {
    let scripted = "[reply]Checking.<tool_call>{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>[/reply]";
    let r = app()
        .post_json(
            "/v1/chat/completions",
            &body(scripted, json!("auto"), false),
        )
        .await;
    let choice = &r.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Checking.");
    assert_weather_call(&choice["message"]["tool_calls"][0]);

    let plain = app()
        .post_json(
            "/v1/chat/completions",
            &body("[reply]It is sunny.[/reply]", json!("auto"), true),
        )
        .await;
    let chunks = sse_chunks(&plain.text());
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|p| !p.is_empty())
        .collect();
    assert!(pieces.len() > 1, "content streams as it comes: {pieces:?}");
    assert_eq!(pieces.concat(), "It is sunny.");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn tool_history_reaches_the_template() {
    let request = json!({
        "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [weather_tool()],
        "tool_choice": "none",
        "max_tokens": 3,
    });
    let r = app()
        .post_json("/v1/chat/completions", &request.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["choices"][0]["message"]
            .get("tool_calls")
            .is_none()
    );
}

#[tokio::test]
async fn auto_choice_needs_the_server_flag() {
    let app = TestApp::new(
        ScriptedConfig::default(),
        golden_config(),
        &[Box::new(OpenAiFrontend)],
    );
    let r = app
        .post_json("/v1/chat/completions", &body("hi", json!("auto"), false))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "tool_choice");
}

#[tokio::test]
async fn auto_choice_streams_prose_then_calls() {
    let scripted = "[reply]Checking.<tool_call>{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>[/reply]";
    let r = app()
        .post_json("/v1/chat/completions", &body(scripted, json!("auto"), true))
        .await;
    let chunks = sse_chunks(&r.text());
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Checking.");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["function"]["name"], "weather");
    assert_eq!(calls[1][0]["function"]["arguments"], r#"{"city":"Oslo"}"#);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}
