//! Tool calling on `/api/chat` over the scripted engine: calls the model
//! writes come back as `message.tool_calls` with object arguments, whole or
//! streamed.

use kiln_frontend_ollama::OllamaFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, golden_config};
use serde_json::{Value, json};

fn app() -> TestApp {
    TestApp::new(
        ScriptedConfig {
            max_model_len: 1024,
            ..ScriptedConfig::default()
        },
        golden_config(),
        &[Box::new(OllamaFrontend)],
    )
}

fn body(content: &str, stream: bool) -> String {
    json!({
        "model": "scripted-model",
        "messages": [{"role": "user", "content": content}],
        "tools": [{"type": "function", "function": {"name": "weather"}}],
        "stream": stream,
        "options": {"num_predict": -1},
    })
    .to_string()
}

const CALL: &str = "[reply]<tool_call>{\"name\":\"weather\",\"arguments\":{\"city\":\"Oslo\"}}</tool_call>[/reply]";

fn assert_weather_call(message: &Value) {
    let call = &message["tool_calls"][0]["function"];
    assert_eq!(call["name"], "weather", "{message}");
    assert_eq!(call["arguments"], json!({"city": "Oslo"}));
}

#[tokio::test]
async fn calls_come_back_as_tool_calls() {
    let r = app().post_json("/api/chat", &body(CALL, false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_weather_call(&v["message"]);
    assert_eq!(v["message"]["content"], "");
    assert_eq!(v["done"], true);
}

#[tokio::test]
async fn streamed_calls_arrive_before_the_final_object() {
    let r = app().post_json("/api/chat", &body(CALL, true)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", r.text());
    assert_weather_call(&lines[0]["message"]);
    assert_eq!(lines[0]["done"], false);
    assert_eq!(lines[1]["done"], true);
}

#[tokio::test]
async fn plain_answers_stay_content() {
    let r = app()
        .post_json("/api/chat", &body("[reply]Sunny.[/reply]", false))
        .await;
    let v = r.json();
    assert_eq!(
        v["message"],
        json!({"role": "assistant", "content": "Sunny."})
    );
}

#[tokio::test]
async fn streamed_prose_comes_as_it_is_written() {
    let r = app()
        .post_json("/api/chat", &body("[reply]Sunny and warm.[/reply]", true))
        .await;
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 2, "{}", r.text());
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(text, "Sunny and warm.");
    assert!(
        lines
            .iter()
            .all(|l| l["message"].get("tool_calls").is_none())
    );
}
