//! Bad requests get the right status and Ollama's `{"error": "..."}` shape,
//! none reaches the engine, and a good request succeeds afterwards.

use axum::http::Method;
use kiln_frontend_ollama::OllamaFrontend;
use kiln_http::HttpConfig;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::TestApp;

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
const MODEL: &str = "scripted-model";

struct Case {
    name: String,
    method: Method,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
}

fn post(name: &str, path: &'static str, body: &str, status: u16) -> Case {
    Case {
        name: name.to_string(),
        method: Method::POST,
        path,
        body: body.as_bytes().to_vec(),
        status,
    }
}

/// A `/api/generate` body: the model plus `rest` (JSON members, may be empty).
fn generate(name: &str, rest: &str, status: u16) -> Case {
    let sep = if rest.is_empty() { "" } else { "," };
    let body = format!(r#"{{"model":"{MODEL}","prompt":"hi","stream":false{sep}{rest}}}"#);
    post(name, "/api/generate", &body, status)
}

/// A `/api/chat` body with the given `messages` and extra members.
fn chat(name: &str, messages: &str, rest: &str, status: u16) -> Case {
    let sep = if rest.is_empty() { "" } else { "," };
    let body = format!(r#"{{"model":"{MODEL}","stream":false,"messages":{messages}{sep}{rest}}}"#);
    post(name, "/api/chat", &body, status)
}

const USER: &str = r#"[{"role":"user","content":"hi"}]"#;

fn cases() -> Vec<Case> {
    let long = format!(
        r#"{{"model":"{MODEL}","prompt":"{}","stream":false}}"#,
        "Hello ".repeat(200)
    );
    let huge = format!(
        r#"{{"model":"{MODEL}","prompt":"{}"}}"#,
        "a".repeat(100 * 1024)
    );
    vec![
        post("invalid json", "/api/generate", "{", 400),
        post("empty body", "/api/chat", "", 400),
        post("array body", "/api/generate", "[]", 400),
        post("missing model", "/api/generate", r#"{"prompt":"hi"}"#, 400),
        post(
            "model is a number",
            "/api/generate",
            r#"{"model":5,"prompt":"hi"}"#,
            400,
        ),
        generate("prompt is a number", r#""prompt":5"#, 400),
        generate("stream is a string", r#""stream":"yes""#, 400),
        generate("options not an object", r#""options":5"#, 400),
        generate(
            "temperature is a string",
            r#""options":{"temperature":"hot"}"#,
            400,
        ),
        generate(
            "negative temperature",
            r#""options":{"temperature":-1}"#,
            400,
        ),
        generate("top_p above one", r#""options":{"top_p":1.5}"#, 400),
        generate("top_k is a string", r#""options":{"top_k":"many"}"#, 400),
        generate("min_p above one", r#""options":{"min_p":2}"#, 400),
        generate(
            "num_predict is a string",
            r#""options":{"num_predict":"ten"}"#,
            400,
        ),
        generate("num_ctx is a string", r#""options":{"num_ctx":"big"}"#, 400),
        generate("stop holds numbers", r#""options":{"stop":[1,2]}"#, 400),
        generate("template is a number", r#""template":5"#, 400),
        generate("seed is a string", r#""options":{"seed":"x"}"#, 400),
        generate("stop is a number", r#""options":{"stop":5}"#, 400),
        generate(
            "repeat_penalty negative",
            r#""options":{"repeat_penalty":-1}"#,
            400,
        ),
        generate("images", r#""images":["aGk="]"#, 400),
        generate("json format", r#""format":"json""#, 400),
        generate("schema format", r#""format":{"type":"object"}"#, 400),
        generate("raw is a string", r#""raw":"yes""#, 400),
        generate("system is a number", r#""system":5"#, 400),
        post(
            "unknown model",
            "/api/generate",
            r#"{"model":"nope","prompt":"hi"}"#,
            404,
        ),
        post("prompt too long", "/api/generate", &long, 400),
        generate(
            "prompt plus num_predict too long",
            r#""options":{"num_predict":500}"#,
            400,
        ),
        chat(
            "messages is an object",
            r#"{"role":"user","content":"hi"}"#,
            "",
            400,
        ),
        chat("messages not a list", r#""hi""#, "", 400),
        chat("message without role", r#"[{"content":"hi"}]"#, "", 400),
        chat(
            "role is a number",
            r#"[{"role":1,"content":"hi"}]"#,
            "",
            400,
        ),
        chat(
            "content is a number",
            r#"[{"role":"user","content":5}]"#,
            "",
            400,
        ),
        chat(
            "images in a message",
            r#"[{"role":"user","content":"hi","images":["aGk="]}]"#,
            "",
            400,
        ),
        chat(
            "tools given",
            USER,
            r#""tools":[{"type":"function","function":{"name":"f"}}]"#,
            400,
        ),
        chat("format given", USER, r#""format":"json""#, 400),
        post(
            "chat unknown model",
            "/api/chat",
            &format!(r#"{{"model":"nope","messages":{USER}}}"#),
            404,
        ),
        post(
            "show unknown model",
            "/api/show",
            r#"{"model":"nope"}"#,
            404,
        ),
        post("show without model", "/api/show", r#"{}"#, 400),
        Case {
            name: "bad utf-8".into(),
            ..post("", "/api/generate", "", 400)
        }
        .with_body(b"{\"model\":\"scripted-model\",\"prompt\":\"\xff\xfe\"}".to_vec()),
        post("huge body", "/api/generate", &huge, 413),
        post(
            "embeddings",
            "/api/embed",
            &format!(r#"{{"model":"{MODEL}","input":"hi"}}"#),
            400,
        ),
        post("unknown route", "/api/nope", "{}", 404),
        Case {
            method: Method::GET,
            ..post("wrong method", "/api/chat", "", 405)
        },
    ]
}

impl Case {
    fn with_body(mut self, body: Vec<u8>) -> Case {
        self.body = body;
        self
    }
}

#[tokio::test]
async fn malformed_requests_get_ollama_errors() {
    let http = HttpConfig {
        body_limit_bytes: 64 * 1024,
        ..Default::default()
    };
    let app = TestApp::new(ScriptedConfig::default(), http, &[Box::new(OllamaFrontend)]);
    let cases = cases();
    assert!(cases.len() >= 35);
    let mut wrong = Vec::new();
    for case in cases {
        let r = app.request(case.method, case.path, JSON, case.body).await;
        let body = r.json();
        let shaped = body["error"].as_str().is_some_and(|m| !m.is_empty())
            && body.as_object().is_some_and(|o| o.len() == 1);
        if r.status.as_u16() != case.status || !shaped {
            wrong.push(format!("{}: {} {}", case.name, r.status, r.text()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        app.engine.admitted().is_empty(),
        "no bad request reached the engine"
    );
    let ok = app
        .post_json(
            "/api/chat",
            &format!(r#"{{"model":"{MODEL}","messages":{USER},"stream":false}}"#),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[tokio::test]
async fn context_errors_name_both_numbers() {
    let app = TestApp::new(
        ScriptedConfig::default(),
        HttpConfig::default(),
        &[Box::new(OllamaFrontend)],
    );
    let r = app
        .post_json(
            "/api/generate",
            &format!(r#"{{"model":"{MODEL}","prompt":"hi","stream":false,"options":{{"num_predict":500}}}}"#),
        )
        .await;
    let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(r.status, 400);
    assert!(msg.contains("128") && msg.contains("500"), "{msg}");
}
