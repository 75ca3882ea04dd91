//! `POST /v1/responses` over the scripted engine: the Response object,
//! the SSE event order and sequence numbers, structured outputs and tool
//! calls through the chat machinery, and errors in OpenAI's shape.

mod common;

use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, TestResponse, golden_config};
use serde_json::{Value, json};

fn app() -> TestApp {
    common::tool_calling_app()
}

async fn create(app: &TestApp, body: Value) -> TestResponse {
    app.post_json("/v1/responses", &body.to_string()).await
}

/// `(event name, payload)` of every SSE event, checking the framing: each
/// event has an `event:` line matching its payload's `type`.
fn events(r: &TestResponse) -> Vec<(String, Value)> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    r.text()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not an SSE event: {e:?}"));
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name);
            (name.to_string(), data)
        })
        .collect()
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 8}},
        "required": ["city"],
        "additionalProperties": false
    }})
}

#[tokio::test]
async fn a_string_input_gets_a_completed_response() {
    let r = create(
        &app(),
        json!({"model": "kiln-test", "input": "[reply]Paris.[/reply]", "instructions": "Be brief.", "metadata": {"k": "v"}, "store": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "kiln-test");
    assert_eq!(v["created_at"], 1_700_000_000);
    assert_eq!(v["instructions"], "Be brief.");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["store"], false, "nothing is stored");
    assert_eq!(v["tools"], json!([]));
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["parallel_tool_calls"], true);
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], "completed");
    assert_eq!(
        item["content"],
        json!([{"type": "output_text", "text": "Paris.", "annotations": [], "logprobs": []}])
    );
    let usage = &v["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0);
    assert!(usage["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
    );
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
}

#[tokio::test]
async fn message_items_reach_the_chat_template_with_the_sampling_settings() {
    let app = app();
    let r = create(
        &app,
        json!({
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Capital?"}]},
            ],
            "max_output_tokens": 3,
            "temperature": 0.5,
            "top_p": 0.9,
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let admitted = app.engine.last_admitted().unwrap();
    assert_eq!(admitted.request.stopping.max_tokens, Some(3));
    assert_eq!(admitted.request.sampling.temperature, 0.5);
    assert_eq!(admitted.request.sampling.top_p, 0.9);
    let kiln_protocol::PromptInput::Text(prompt) = &admitted.request.prompt else {
        panic!("a rendered prompt")
    };
    assert!(prompt.contains("system\nAnswer in French."), "{prompt}");
    assert!(prompt.contains("user\nCapital?"), "{prompt}");
    let v = r.json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["output"][0]["status"], "incomplete");
    assert_eq!(v["usage"]["output_tokens"], 3);
    assert_eq!(v["max_output_tokens"], 3);
}

#[tokio::test]
async fn streaming_sends_the_events_in_order_with_counting_sequence_numbers() {
    let r = create(
        &app(),
        json!({"input": "[reply]It is sunny.[/reply]", "stream": true}),
    )
    .await;
    let events = events(&r);
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i as u64);
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!(deltas > 1, "text streams as it comes: {names:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "It is sunny.");
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    let done = &events[events.len() - 2].1;
    assert_eq!(done["item"]["content"][0]["text"], "It is sunny.");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["id"], created["id"]);
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["id"], done["item"]["id"]);
    assert!(completed["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn json_schema_format_constrains_the_output() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 6}}, "required": ["city"], "additionalProperties": false});
    let r = create(
        &app(),
        json!({"input": "Where?", "text": {"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": true}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(parsed["city"].is_string(), "{parsed}");
    assert_eq!(v["text"]["format"]["type"], "json_schema");
}

#[tokio::test]
async fn forced_tool_calls_are_function_call_items() {
    let r = create(
        &app(),
        json!({"input": "weather?", "tools": [weather_tool()], "tool_choice": "required"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let calls: Vec<&Value> = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .collect();
    assert!(!calls.is_empty(), "{v}");
    let call = calls[0];
    assert_eq!(call["name"], "weather");
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    assert_eq!(v["tools"][0]["name"], "weather");
}

#[tokio::test]
async fn streamed_auto_calls_keep_prose_as_a_message_then_send_arguments() {
    let scripted = "[reply]Checking.<tool_call>{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>[/reply]";
    let r = create(
        &app(),
        json!({"input": scripted, "tools": [weather_tool()], "tool_choice": "auto", "stream": true}),
    )
    .await;
    let events = events(&r);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let tail: Vec<&str> = names[names.len() - 5..].to_vec();
    assert_eq!(
        tail,
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["type"], "message");
    assert_eq!(completed["output"][0]["content"][0]["text"], "Checking.");
    assert_eq!(completed["output"][1]["type"], "function_call");
    assert_eq!(completed["output"][1]["arguments"], "{\"city\":\"Oslo\"}");
    let added = &events[events.len() - 5].1;
    assert_eq!(added["output_index"], 1);
    assert_eq!(added["item"]["arguments"], "");
}

#[tokio::test]
async fn function_call_history_reaches_the_template() {
    let app = app();
    let r = create(
        &app,
        json!({
            "input": [
                {"role": "user", "content": "weather in Oslo?"},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\": \"Oslo\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
            "tools": [weather_tool()],
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let kiln_protocol::PromptInput::Text(prompt) =
        app.engine.last_admitted().unwrap().request.prompt
    else {
        panic!("a rendered prompt")
    };
    assert!(prompt.contains("sunny"), "{prompt}");
}

#[tokio::test]
async fn errors_are_openai_shaped_and_name_the_field() {
    let app = app();
    let cases = [
        (json!({"model": "m"}), "input", "`input` is required"),
        (
            json!({"input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
            "responses are not stored",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]}),
            "input.0.content.0.type",
            "input_text",
        ),
        (
            json!({"input": "x", "tools": [{"type": "web_search"}]}),
            "tools.0.type",
            "function tools only",
        ),
        (
            json!({"input": "x", "text": {"format": {"type": "json_schema"}}}),
            "text.format.schema",
            "needs a `schema`",
        ),
        (
            json!({"input": "x", "tool_choice": "required"}),
            "tool_choice",
            "needs `tools`",
        ),
        (
            json!({"input": "x", "text": {"format": {"type": "json_schema", "schema": {"type": "nonsense"}}}}),
            "text.format.schema",
            "nonsense",
        ),
    ];
    for (body, param, words) in cases {
        let r = create(&app, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "BadRequestError", "{body}");
        assert_eq!(e["param"], param, "{body}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
    let r = app.post_json("/v1/responses", "{\"input\": ").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn a_prompt_beyond_the_context_is_a_400() {
    let app = TestApp::new(
        ScriptedConfig {
            max_model_len: 16,
            ..ScriptedConfig::default()
        },
        golden_config(),
        &[Box::new(OpenAiFrontend)],
    );
    let r = create(&app, json!({"input": "word ".repeat(64)})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16")
    );
}

#[tokio::test]
async fn a_failure_mid_stream_ends_it_with_an_error_event() {
    let r = create(&app(), json!({"input": "[fail]", "stream": true})).await;
    let events = events(&r);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["sequence_number"], (events.len() - 1) as u64);
    assert!(data["message"].is_string(), "{data}");
    assert_eq!(data["error"]["message"], data["message"]);
    assert!(
        !events.iter().any(|(n, _)| n == "response.completed"),
        "a failed response does not complete"
    );
}
