//! Bad requests get the right 4xx in OpenAI's error shape, and a good request
//! still succeeds afterwards.

use axum::http::Method;
use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::HttpConfig;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::TestApp;

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
    status: u16,
    param: Option<&'static str>,
}

fn post(
    name: &'static str,
    path: &'static str,
    body: &str,
    status: u16,
    param: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        headers: JSON,
        body: body.as_bytes().to_vec(),
        status,
        param,
    }
}

fn chat(name: &'static str, body: &str, param: Option<&'static str>) -> Case {
    post(name, "/v1/chat/completions", body, 400, param)
}

fn completion(name: &'static str, body: &str, param: Option<&'static str>) -> Case {
    post(name, "/v1/completions", body, 400, param)
}

fn cases() -> Vec<Case> {
    let long_prompt = format!(r#"{{"prompt":"{}","max_tokens":1}}"#, "Hello ".repeat(200));
    let huge = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(100 * 1024));
    let user = r#""messages":[{"role":"user","content":"hi"}]"#;
    vec![
        completion("invalid json", "{", None),
        completion("empty body", "", None),
        completion("array body", "[]", None),
        completion("string body", "\"x\"", None),
        completion("missing prompt", r#"{"max_tokens":3}"#, Some("prompt")),
        completion("prompt is a number", r#"{"prompt":3}"#, Some("prompt")),
        completion("empty prompt list", r#"{"prompt":[]}"#, Some("prompt")),
        completion(
            "negative max_tokens",
            r#"{"prompt":"a","max_tokens":-1}"#,
            Some("max_tokens"),
        ),
        completion(
            "max_tokens string",
            r#"{"prompt":"a","max_tokens":"ten"}"#,
            Some("max_tokens"),
        ),
        completion(
            "max_tokens zero",
            r#"{"prompt":"a","max_tokens":0}"#,
            Some("max_tokens"),
        ),
        completion(
            "negative temperature",
            r#"{"prompt":"a","temperature":-1}"#,
            Some("temperature"),
        ),
        completion(
            "temperature string",
            r#"{"prompt":"a","temperature":"hot"}"#,
            Some("temperature"),
        ),
        completion("top_p zero", r#"{"prompt":"a","top_p":0}"#, Some("top_p")),
        completion(
            "top_p above one",
            r#"{"prompt":"a","top_p":1.5}"#,
            Some("top_p"),
        ),
        completion("n zero", r#"{"prompt":"a","n":0}"#, Some("n")),
        completion("n huge", r#"{"prompt":"a","n":1000}"#, Some("n")),
        completion(
            "logprobs too many",
            r#"{"prompt":"a","logprobs":50}"#,
            Some("logprobs"),
        ),
        completion("suffix", r#"{"prompt":"a","suffix":"b"}"#, Some("suffix")),
        completion(
            "stream_options without stream",
            r#"{"prompt":"a","stream_options":{"include_usage":true}}"#,
            Some("stream_options"),
        ),
        completion(
            "stop wrong type",
            r#"{"prompt":"a","stop":5}"#,
            Some("stop"),
        ),
        completion(
            "empty stop string",
            r#"{"prompt":"a","stop":[""]}"#,
            Some("stop"),
        ),
        completion(
            "presence penalty out of range",
            r#"{"prompt":"a","presence_penalty":5}"#,
            Some("presence_penalty"),
        ),
        completion(
            "logit_bias bad key",
            r#"{"prompt":"a","logit_bias":{"x":1}}"#,
            Some("logit_bias"),
        ),
        completion(
            "token outside vocabulary",
            r#"{"prompt":[999999]}"#,
            Some("prompt"),
        ),
        completion(
            "min_tokens above max_tokens",
            r#"{"prompt":"a","max_tokens":2,"min_tokens":5}"#,
            Some("min_tokens"),
        ),
        completion(
            "top_k negative",
            r#"{"prompt":"a","top_k":-5}"#,
            Some("top_k"),
        ),
        completion(
            "beam search",
            r#"{"prompt":"a","use_beam_search":true}"#,
            Some("use_beam_search"),
        ),
        completion(
            "stream not a bool",
            r#"{"prompt":"a","stream":"yes"}"#,
            Some("stream"),
        ),
        Case {
            name: "prompt too long",
            ..completion("", &long_prompt, None)
        },
        completion(
            "prompt plus max_tokens too long",
            r#"{"prompt":"a","max_tokens":200}"#,
            None,
        ),
        chat("missing messages", r#"{"model":"m"}"#, Some("messages")),
        chat("empty messages", r#"{"messages":[]}"#, Some("messages")),
        chat(
            "messages not a list",
            r#"{"messages":"hi"}"#,
            Some("messages"),
        ),
        chat(
            "message without role",
            r#"{"messages":[{"content":"hi"}]}"#,
            Some("messages[0].role"),
        ),
        chat(
            "content is a number",
            r#"{"messages":[{"role":"user","content":5}]}"#,
            Some("messages.0.content"),
        ),
        chat(
            "image content",
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            Some("messages.0.content"),
        ),
        chat(
            "json_schema without json_schema",
            &format!(r#"{{{user},"response_format":{{"type":"json_schema"}}}}"#),
            Some("response_format"),
        ),
        chat(
            "json_schema without schema",
            &format!(
                r#"{{{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"a"}}}}}}"#
            ),
            Some("response_format"),
        ),
        chat(
            "json_schema with a bad name",
            &format!(
                r#"{{{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"a b","schema":{{}}}}}}}}"#
            ),
            Some("response_format"),
        ),
        chat(
            "json_schema strict not a bool",
            &format!(
                r#"{{{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"a","strict":"yes","schema":{{}}}}}}}}"#
            ),
            Some("response_format"),
        ),
        chat(
            "schema is a list",
            &format!(
                r#"{{{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"a","schema":[1]}}}}}}"#
            ),
            Some("response_format"),
        ),
        chat(
            "schema with an unknown type",
            &format!(
                r#"{{{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"a","schema":{{"type":"integr"}}}}}}}}"#
            ),
            Some("json_schema"),
        ),
        chat(
            "schema with a dangling $ref",
            &format!(
                r##"{{{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"a","schema":{{"$ref":"#/$defs/nope"}}}}}}}}"##
            ),
            Some("json_schema"),
        ),
        chat(
            "schema with a type that is a number",
            &format!(
                r#"{{{user},"response_format":{{"type":"json_schema","json_schema":{{"name":"a","schema":{{"type":"object","properties":{{"a":{{"type":7}}}}}}}}}}}}"#
            ),
            Some("json_schema"),
        ),
        chat(
            "unknown response_format type",
            &format!(r#"{{{user},"response_format":{{"type":"yaml"}}}}"#),
            Some("response_format"),
        ),
        chat(
            "response_format is a string",
            &format!(r#"{{{user},"response_format":"json"}}"#),
            Some("response_format"),
        ),
        chat(
            "response_format without a type",
            &format!(r#"{{{user},"response_format":{{"json_schema":{{}}}}}}"#),
            Some("response_format"),
        ),
        chat(
            "structural_tag",
            &format!(r#"{{{user},"response_format":{{"type":"structural_tag"}}}}"#),
            Some("response_format"),
        ),
        chat(
            "unbalanced guided_regex",
            &format!(r#"{{{user},"guided_regex":"([0-9]+"}}"#),
            Some("regex"),
        ),
        chat(
            "guided_regex not a string",
            &format!(r#"{{{user},"guided_regex":["a"]}}"#),
            Some("guided_regex"),
        ),
        chat(
            "empty guided_choice",
            &format!(r#"{{{user},"guided_choice":[]}}"#),
            Some("choice"),
        ),
        chat(
            "guided_choice not a list",
            &format!(r#"{{{user},"guided_choice":"yes"}}"#),
            Some("guided_choice"),
        ),
        chat(
            "guided_choice with a number",
            &format!(r#"{{{user},"guided_choice":["a",1]}}"#),
            Some("guided_choice"),
        ),
        chat(
            "lark grammar with an undefined rule",
            &format!(r#"{{{user},"guided_grammar":"start: item+"}}"#),
            Some("grammar"),
        ),
        chat(
            "gbnf grammar without root",
            &format!(r#"{{{user},"guided_grammar":"item ::= \"a\""}}"#),
            Some("grammar"),
        ),
        chat(
            "gbnf grammar with a reversed range",
            &format!(r#"{{{user},"guided_grammar":"root ::= [z-a]"}}"#),
            Some("grammar"),
        ),
        chat(
            "guided_json that is not JSON",
            &format!(r#"{{{user},"guided_json":"{{nope"}}"#),
            Some("guided_json"),
        ),
        chat(
            "two structured outputs",
            &format!(r#"{{{user},"response_format":{{"type":"json_object"}},"guided_regex":"a"}}"#),
            Some("guided_regex"),
        ),
        chat(
            "structured_outputs with two constraints",
            &format!(r#"{{{user},"structured_outputs":{{"regex":"a","choice":["a"]}}}}"#),
            Some("structured_outputs"),
        ),
        chat(
            "structured_outputs with an unknown key",
            &format!(r#"{{{user},"structured_outputs":{{"xml":"<a/>"}}}}"#),
            Some("structured_outputs"),
        ),
        chat(
            "structured_outputs not an object",
            &format!(r#"{{{user},"structured_outputs":"json"}}"#),
            Some("structured_outputs"),
        ),
        completion(
            "completion with a bad guided_regex",
            r#"{"prompt":"a","guided_regex":"[z-a]"}"#,
            Some("regex"),
        ),
        completion(
            "completion with an oversized choice list",
            &format!(
                r#"{{"prompt":"a","guided_choice":[{}]}}"#,
                vec!["\"x\""; 1100].join(",")
            ),
            Some("choice"),
        ),
        chat(
            "auto tool choice without --enable-auto-tool-choice",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":"auto"}}"#
            ),
            Some("tool_choice"),
        ),
        chat(
            "tool with an invalid parameters schema",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"nope"}}}}}}],"tool_choice":"required"}}"#
            ),
            Some("tools.0.function.parameters"),
        ),
        chat(
            "tool parameters not an object",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":"object"}}}}],"tool_choice":"required"}}"#
            ),
            Some("tools.0.function.parameters"),
        ),
        chat(
            "tool_choice names an unknown tool",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":{{"type":"function","function":{{"name":"g"}}}}}}"#
            ),
            Some("tool_choice"),
        ),
        chat(
            "tool_choice required without tools",
            &format!(r#"{{{user},"tool_choice":"required"}}"#),
            Some("tool_choice"),
        ),
        chat(
            "tool_choice of an unknown kind",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":"always"}}"#
            ),
            Some("tool_choice"),
        ),
        chat(
            "tool_choice object without a function name",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":{{"type":"function"}}}}"#
            ),
            Some("tool_choice"),
        ),
        chat(
            "tool message without tool_call_id",
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"tool","content":"42"}]}"#,
            Some("messages.1.tool_call_id"),
        ),
        chat(
            "non-function tool type",
            &format!(
                r#"{{{user},"tools":[{{"type":"code_interpreter"}}],"tool_choice":"required"}}"#
            ),
            Some("tools.0.type"),
        ),
        chat(
            "function tool without a function",
            &format!(r#"{{{user},"tools":[{{"type":"function"}}],"tool_choice":"required"}}"#),
            Some("tools.0.function"),
        ),
        chat(
            "function name with spaces",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"get weather"}}}}],"tool_choice":"required"}}"#
            ),
            Some("tools.0.function.name"),
        ),
        chat(
            "two tools with one name",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}},{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":"required"}}"#
            ),
            Some("tools.1.function.name"),
        ),
        chat(
            "tool calls in history with arguments that are not JSON",
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{"}}]}]}"#,
            Some("messages.1.tool_calls.0.function.arguments"),
        ),
        chat(
            "tool calls on a user message",
            r#"{"messages":[{"role":"user","content":"hi","tool_calls":[]}]}"#,
            Some("messages.0.tool_calls"),
        ),
        chat(
            "forced tool choice with a response_format",
            &format!(
                r#"{{{user},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":"required","response_format":{{"type":"json_object"}}}}"#
            ),
            Some("tool_choice"),
        ),
        chat(
            "tools not a list",
            &format!(r#"{{{user},"tools":{{"type":"function"}}}}"#),
            None,
        ),
        chat(
            "top_logprobs without logprobs",
            &format!(r#"{{{user},"top_logprobs":3}}"#),
            Some("top_logprobs"),
        ),
        chat(
            "logprobs not a bool",
            &format!(r#"{{{user},"logprobs":"yes"}}"#),
            Some("logprobs"),
        ),
        chat(
            "max_tokens above context",
            &format!(r#"{{{user},"max_tokens":100000}}"#),
            None,
        ),
        chat(
            "custom template unsupported by engine",
            &format!(r#"{{{user},"chat_template":"{{{{x}}}}"}}"#),
            Some("chat_template"),
        ),
        Case {
            name: "wrong content type",
            headers: &[("content-type", "text/plain")],
            ..completion("", r#"{"prompt":"a"}"#, None)
        },
        Case {
            name: "missing content type",
            headers: &[],
            ..completion("", r#"{"prompt":"a"}"#, None)
        },
        Case {
            name: "bad utf-8",
            body: b"{\"prompt\":\"\xff\xfe\"}".to_vec(),
            ..completion("", "", None)
        },
        Case {
            name: "huge body",
            status: 413,
            ..completion("", &huge, None)
        },
        post("unknown route", "/v1/nope", "{}", 404, None),
        Case {
            name: "wrong method",
            method: Method::GET,
            ..post("", "/v1/completions", "", 405, None)
        },
        Case {
            name: "models retrieve",
            method: Method::GET,
            ..post("", "/v1/models/x", "", 404, None)
        },
        post(
            "detokenize bad ids",
            "/detokenize",
            r#"{"tokens":[999999]}"#,
            400,
            Some("tokens"),
        ),
        post(
            "detokenize missing tokens",
            "/detokenize",
            r#"{}"#,
            400,
            Some("tokens"),
        ),
        post(
            "tokenize neither prompt nor messages",
            "/tokenize",
            r#"{"text":"a"}"#,
            400,
            Some("body"),
        ),
        post("tokenize bad json", "/tokenize", "{", 400, None),
    ]
}

#[tokio::test]
async fn malformed_requests_get_openai_errors() {
    let http = HttpConfig {
        body_limit_bytes: 64 * 1024,
        ..Default::default()
    };
    let app = TestApp::new(ScriptedConfig::default(), http, &[Box::new(OpenAiFrontend)]);
    let cases = cases();
    assert!(cases.len() >= 85, "{} cases", cases.len());
    for case in cases {
        let r = app
            .request(case.method, case.path, case.headers, case.body)
            .await;
        let body = r.json();
        assert_eq!(
            r.status.as_u16(),
            case.status,
            "{}: {}",
            case.name,
            r.text()
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{}",
            case.name
        );
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            case.name
        );
        assert!(error["type"].is_string(), "{}: {body}", case.name);
        assert_eq!(error["code"], case.status, "{}: {body}", case.name);
        if let Some(param) = case.param {
            assert_eq!(error["param"], param, "{}: {body}", case.name);
        }
    }
    assert!(
        app.engine.admitted().is_empty(),
        "no bad request reached the engine"
    );
    let ok = app
        .post_json(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[tokio::test]
async fn context_errors_name_both_numbers() {
    let app = TestApp::new(
        ScriptedConfig::default(),
        HttpConfig::default(),
        &[Box::new(OpenAiFrontend)],
    );
    let r = app
        .post_json("/v1/completions", r#"{"prompt":"a","max_tokens":200}"#)
        .await;
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("128") && msg.contains("200"), "{msg}");
}
