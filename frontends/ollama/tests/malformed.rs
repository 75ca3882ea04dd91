//! Bad requests get the right status and Ollama's `{"error": "..."}` shape
//! with a message naming what is wrong, none reaches the engine, and a good
//! request succeeds afterwards. Also: Ollama reads any `Content-Type` as
//! JSON, and context overflows name both numbers.

use axum::http::Method;
use kiln_frontend_ollama::OllamaFrontend;
use kiln_http::HttpConfig;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::TestApp;

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
const MODEL: &str = "scripted-model";
const USER: &str = r#"[{"role":"user","content":"hi"}]"#;

struct Case {
    name: String,
    method: Method,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    /// A fragment the error message must contain.
    says: &'static str,
}

impl Case {
    fn with_body(mut self, body: &[u8]) -> Case {
        self.body = body.to_vec();
        self
    }

    fn with_method(mut self, method: Method) -> Case {
        self.method = method;
        self
    }
}

fn post(name: &str, path: &'static str, body: &str, status: u16, says: &'static str) -> Case {
    Case {
        name: name.to_string(),
        method: Method::POST,
        path,
        body: body.as_bytes().to_vec(),
        status,
        says,
    }
}

/// A `/api/generate` body: the model and a prompt plus `rest` (JSON members,
/// may be empty), answered with a 400 saying `says`.
fn generate(name: &str, rest: &str, says: &'static str) -> Case {
    let sep = if rest.is_empty() { "" } else { "," };
    let body = format!(r#"{{"model":"{MODEL}","prompt":"hi","stream":false{sep}{rest}}}"#);
    post(name, "/api/generate", &body, 400, says)
}

/// A `/api/generate` body with one `options` member.
fn option(name: &str, options: &str, says: &'static str) -> Case {
    generate(name, &format!(r#""options":{{{options}}}"#), says)
}

/// A `/api/chat` body with the given `messages` and extra members.
fn chat(name: &str, messages: &str, rest: &str, says: &'static str) -> Case {
    let sep = if rest.is_empty() { "" } else { "," };
    let body = format!(r#"{{"model":"{MODEL}","stream":false,"messages":{messages}{sep}{rest}}}"#);
    post(name, "/api/chat", &body, 400, says)
}

fn cases() -> Vec<Case> {
    let long = format!(
        r#"{{"model":"{MODEL}","prompt":"{}","stream":false}}"#,
        "Hello ".repeat(200)
    );
    let long_chat = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "Hello ".repeat(200)
    );
    let huge = format!(
        r#"{{"model":"{MODEL}","prompt":"{}"}}"#,
        "a".repeat(100 * 1024)
    );
    let mut bad_utf8 = format!(r#"{{"model":"{MODEL}","prompt":""#).into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe\"}");
    vec![
        // Bodies.
        post("invalid json", "/api/generate", "{", 400, "invalid JSON"),
        post("empty body", "/api/chat", "", 400, "missing request body"),
        post(
            "whitespace body",
            "/api/generate",
            "  \n",
            400,
            "missing request body",
        ),
        post(
            "array body",
            "/api/generate",
            "[]",
            400,
            "must be a JSON object",
        ),
        post(
            "positional array body",
            "/api/generate",
            &format!(r#"["{MODEL}","hi"]"#),
            400,
            "must be a JSON object",
        ),
        post(
            "null body",
            "/api/chat",
            "null",
            400,
            "must be a JSON object",
        ),
        post(
            "string body",
            "/api/show",
            r#""m""#,
            400,
            "must be a JSON object",
        ),
        post("bad utf-8", "/api/generate", "", 400, "invalid JSON").with_body(&bad_utf8),
        post(
            "huge body",
            "/api/generate",
            &huge,
            413,
            "limit of 65536 bytes",
        ),
        // Models.
        post(
            "missing model",
            "/api/generate",
            r#"{"prompt":"hi"}"#,
            400,
            "model is required",
        ),
        post(
            "empty model",
            "/api/chat",
            r#"{"model":" ","messages":[]}"#,
            400,
            "model is required",
        ),
        post(
            "model is a number",
            "/api/generate",
            r#"{"model":5,"prompt":"hi"}"#,
            400,
            "`model`",
        ),
        post(
            "unknown model",
            "/api/generate",
            r#"{"model":"nope","prompt":"hi"}"#,
            404,
            "model 'nope' not found",
        ),
        post(
            "chat unknown model",
            "/api/chat",
            &format!(r#"{{"model":"nope","messages":{USER}}}"#),
            404,
            "model 'nope' not found",
        ),
        post(
            "unknown tag",
            "/api/generate",
            &format!(r#"{{"model":"{MODEL}:7b","prompt":"hi"}}"#),
            404,
            "not found",
        ),
        post(
            "show unknown model",
            "/api/show",
            r#"{"model":"nope"}"#,
            404,
            "model 'nope' not found",
        ),
        post(
            "show without model",
            "/api/show",
            "{}",
            400,
            "model is required",
        ),
        // Generate fields.
        generate("prompt is a number", r#""prompt":5"#, "`prompt`"),
        generate("stream is a string", r#""stream":"yes""#, "`stream`"),
        generate("raw is a string", r#""raw":"yes""#, "`raw`"),
        generate("system is a number", r#""system":5"#, "`system`"),
        generate("template is a number", r#""template":5"#, "`template`"),
        generate("context is a string", r#""context":"abc""#, "`context`"),
        generate(
            "context holds negatives",
            r#""context":[-1]"#,
            "`context[0]`",
        ),
        generate(
            "context outside the vocabulary",
            r#""context":[99999999]"#,
            "outside the vocabulary",
        ),
        generate(
            "images given",
            r#""images":["aGk="]"#,
            "does not support images",
        ),
        generate("images is a string", r#""images":"aGk=""#, "`images`"),
        generate("format yaml", r#""format":"yaml""#, "invalid format"),
        generate("format a number", r#""format":3"#, "invalid format"),
        generate(
            "format a list",
            r#""format":[{"type":"object"}]"#,
            "invalid format",
        ),
        generate("format true", r#""format":true"#, "invalid format"),
        generate(
            "schema of unknown type",
            r#""format":{"type":"objekt"}"#,
            "json_schema",
        ),
        generate(
            "schema with a numeric type",
            r#""format":{"type":5}"#,
            "json_schema",
        ),
        generate(
            "schema with a dangling ref",
            r##""format":{"$ref":"#/$defs/gone"}"##,
            "json_schema",
        ),
        generate(
            "schema with a bad property",
            r#""format":{"type":"object","properties":{"a":{"type":"nmber"}}}"#,
            "json_schema",
        ),
        generate(
            "schema with bad required",
            r#""format":{"type":"object","required":7}"#,
            "json_schema",
        ),
        generate(
            "schema with a bad enum",
            r#""format":{"enum":"a"}"#,
            "json_schema",
        ),
        generate(
            "schema with bad items",
            r#""format":{"type":"array","items":3}"#,
            "json_schema",
        ),
        generate(
            "schema with a bad minimum",
            r#""format":{"type":"integer","minimum":"zero"}"#,
            "json_schema",
        ),
        generate(
            "schema with a bad pattern",
            r#""format":{"type":"string","pattern":"(a"}"#,
            "json_schema",
        ),
        generate("thinking", r#""think":true"#, "does not support thinking"),
        generate("suffix", r#""suffix":"end""#, "does not support insert"),
        generate(
            "raw with system",
            r#""raw":true,"system":"s""#,
            "raw mode does not support",
        ),
        generate(
            "raw with template",
            r#""raw":true,"template":"{{ .Prompt }}""#,
            "raw mode does not support",
        ),
        generate(
            "unsupported template action",
            r#""template":"{{ range .Messages }}{{ end }}""#,
            "range .Messages",
        ),
        generate(
            "unclosed template",
            r#""template":"{{ .Prompt""#,
            "unclosed",
        ),
        generate(
            "bad keep_alive",
            r#""keep_alive":"soon""#,
            "invalid duration",
        ),
        generate("keep_alive is a list", r#""keep_alive":[1]"#, "keep_alive"),
        generate(
            "top_logprobs above 20",
            r#""logprobs":true,"top_logprobs":21"#,
            "top_logprobs",
        ),
        generate(
            "negative top_logprobs",
            r#""top_logprobs":-1"#,
            "`top_logprobs`",
        ),
        post(
            "prompt too long",
            "/api/generate",
            &long,
            400,
            "maximum context length is 128",
        ),
        post(
            "conversation too long",
            "/api/chat",
            &long_chat,
            400,
            "maximum context length is 128",
        ),
        // Options.
        generate("options not an object", r#""options":5"#, "`options`"),
        option(
            "temperature is a string",
            r#""temperature":"hot""#,
            "option \"temperature\" must be of type float",
        ),
        option(
            "negative temperature",
            r#""temperature":-1"#,
            "option \"temperature\" must be non-negative",
        ),
        option(
            "infinite temperature",
            r#""temperature":1e300"#,
            "option \"temperature\" must be a finite number",
        ),
        option(
            "top_p above one",
            r#""top_p":1.5"#,
            "option \"top_p\" must be in (0, 1]",
        ),
        option(
            "top_p zero",
            r#""top_p":0"#,
            "option \"top_p\" must be in (0, 1]",
        ),
        option(
            "top_k is a string",
            r#""top_k":"many""#,
            "option \"top_k\" must be of type integer",
        ),
        option("min_p above one", r#""min_p":2"#, "option \"min_p\""),
        option(
            "negative repeat_penalty",
            r#""repeat_penalty":-1"#,
            "option \"repeat_penalty\" must be positive",
        ),
        option(
            "presence_penalty too big",
            r#""presence_penalty":3"#,
            "option \"presence_penalty\"",
        ),
        option(
            "num_predict is a string",
            r#""num_predict":"ten""#,
            "option \"num_predict\" must be of type integer",
        ),
        option(
            "num_predict beyond the context",
            r#""num_predict":500"#,
            "500",
        ),
        option(
            "num_ctx is a string",
            r#""num_ctx":"big""#,
            "option \"num_ctx\"",
        ),
        option(
            "seed is a string",
            r#""seed":"x""#,
            "option \"seed\" must be of type integer",
        ),
        option(
            "stop is a string",
            r#""stop":"x""#,
            "option \"stop\" must be of type array of strings",
        ),
        option("stop holds numbers", r#""stop":[1,2]"#, "option \"stop\""),
        option(
            "empty stop string",
            r#""stop":[""]"#,
            "stop strings must not be empty",
        ),
        option(
            "use_mmap is a number",
            r#""use_mmap":1"#,
            "option \"use_mmap\" must be of type boolean",
        ),
        // Chat messages.
        chat(
            "messages is an object",
            r#"{"role":"user","content":"hi"}"#,
            "",
            "`messages`",
        ),
        chat("messages is a string", r#""hi""#, "", "`messages`"),
        chat("message is a string", r#"["hi"]"#, "", "`messages[0]`"),
        chat(
            "message without role",
            r#"[{"content":"hi"}]"#,
            "",
            "missing field `role`",
        ),
        chat(
            "role is a number",
            r#"[{"role":1,"content":"hi"}]"#,
            "",
            "`messages[0].role`",
        ),
        chat(
            "unknown role",
            r#"[{"role":"wizard","content":"hi"}]"#,
            "",
            "invalid role \"wizard\"",
        ),
        chat(
            "empty role",
            r#"[{"role":"user","content":"a"},{"role":"","content":"hi"}]"#,
            "",
            "messages[1]",
        ),
        chat(
            "content is a number",
            r#"[{"role":"user","content":5}]"#,
            "",
            "`messages[0].content`",
        ),
        chat(
            "images in a message",
            r#"[{"role":"user","content":"hi","images":["aGk="]}]"#,
            "",
            "does not support images",
        ),
        chat(
            "tool of a non-function type",
            USER,
            r#""tools":[{"type":"retrieval"}]"#,
            "only \"function\"",
        ),
        chat(
            "tool without a function",
            USER,
            r#""tools":[{"type":"function"}]"#,
            "missing function",
        ),
        chat(
            "tool function without a name",
            USER,
            r#""tools":[{"type":"function","function":{"description":"x"}}]"#,
            "function needs a name",
        ),
        chat(
            "tool with an invalid parameters schema",
            USER,
            r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"nope"}}}]"#,
            "invalid parameters schema",
        ),
        chat(
            "tool parameters not an object",
            USER,
            r#""tools":[{"type":"function","function":{"name":"f","parameters":"object"}}]"#,
            "invalid parameters schema",
        ),
        chat(
            "two tools with one name",
            USER,
            r#""tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]"#,
            "duplicate function name",
        ),
        chat(
            "tool calls on a user message",
            r#"[{"role":"user","content":"hi","tool_calls":[]}]"#,
            "",
            "only assistant messages carry tool_calls",
        ),
        chat(
            "tool calls not a list",
            r#"[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":{"function":{"name":"f"}}}]"#,
            "",
            "tool_calls must be a list",
        ),
        chat(
            "tool call without a function name",
            r#"[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"function":{"arguments":{}}}]}]"#,
            "",
            "function needs a name",
        ),
        chat(
            "tool call arguments not an object",
            r#"[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":[1]}}]}]"#,
            "",
            "arguments must be an object",
        ),
        chat(
            "tool call arguments a string that is not JSON",
            r#"[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{"}}]}]"#,
            "",
            "arguments must be an object",
        ),
        chat("tools is an object", USER, r#""tools":{}"#, "`tools`"),
        chat("format xml", USER, r#""format":"xml""#, "invalid format"),
        chat("format a number", USER, r#""format":1.5"#, "invalid format"),
        chat(
            "schema of unknown type",
            USER,
            r#""format":{"type":"strng"}"#,
            "json_schema",
        ),
        chat(
            "schema with a dangling ref",
            USER,
            r##""format":{"properties":{"a":{"$ref":"#/nope"}}}"##,
            "json_schema",
        ),
        chat(
            "schema with a bad property",
            USER,
            r#""format":{"type":"object","properties":{"a":{"type":["string",3]}}}"#,
            "json_schema",
        ),
        chat(
            "schema with bad anyOf",
            USER,
            r#""format":{"anyOf":"a"}"#,
            "json_schema",
        ),
        chat(
            "schema with a bad maxLength",
            USER,
            r#""format":{"type":"string","maxLength":"ten"}"#,
            "json_schema",
        ),
        chat(
            "schema with a bad pattern",
            USER,
            r#""format":{"type":"string","pattern":"[z-a]"}"#,
            "json_schema",
        ),
        chat(
            "thinking effort",
            USER,
            r#""think":"high""#,
            "does not support thinking",
        ),
        chat(
            "chat option of the wrong type",
            USER,
            r#""options":{"top_k":[1]}"#,
            "option \"top_k\"",
        ),
        // Routes.
        post(
            "embeddings",
            "/api/embed",
            &format!(r#"{{"model":"{MODEL}","input":"hi"}}"#),
            400,
            "does not support embeddings",
        ),
        post(
            "legacy embeddings",
            "/api/embeddings",
            &format!(r#"{{"model":"{MODEL}","prompt":"hi"}}"#),
            400,
            "does not support embeddings",
        ),
        post(
            "embeddings of an unknown model",
            "/api/embed",
            r#"{"model":"nope","input":"hi"}"#,
            404,
            "not found",
        ),
        post(
            "unknown route",
            "/api/nope",
            "{}",
            404,
            "no route for POST /api/nope",
        ),
        post("wrong method", "/api/chat", "", 405, "does not accept GET").with_method(Method::GET),
        post(
            "generate with PUT",
            "/api/generate",
            "{}",
            405,
            "does not accept PUT",
        )
        .with_method(Method::PUT),
        post(
            "tags with POST",
            "/api/tags",
            "{}",
            405,
            "does not accept POST",
        ),
    ]
}

fn app(http: HttpConfig) -> TestApp {
    TestApp::new(ScriptedConfig::default(), http, &[Box::new(OllamaFrontend)])
}

#[tokio::test]
async fn malformed_requests_get_ollama_errors() {
    let app = app(HttpConfig {
        body_limit_bytes: 64 * 1024,
        ..Default::default()
    });
    let cases = cases();
    assert!(cases.len() >= 45, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in cases {
        let r = app.request(case.method, case.path, JSON, case.body).await;
        let body = r.json();
        let message = body["error"].as_str().unwrap_or_default();
        let shaped = !message.is_empty()
            && body.as_object().is_some_and(|o| o.len() == 1)
            && r.header("content-type") == Some("application/json");
        if r.status.as_u16() != case.status || !shaped || !message.contains(case.says) {
            wrong.push(format!(
                "{}: {} {} (expected {} saying {:?})",
                case.name,
                r.status,
                r.text(),
                case.status,
                case.says
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
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
    assert_eq!(ok.json()["done"], true);
    let streamed = app
        .post_json(
            "/api/generate",
            &format!(r#"{{"model":"{MODEL}","prompt":"hi","options":{{"num_predict":2}}}}"#),
        )
        .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let last = streamed
        .text()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let last: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["done"], true);
}

#[tokio::test]
async fn any_content_type_is_read_as_json() {
    let app = app(HttpConfig::default());
    let body = format!(
        r#"{{"model":"{MODEL}","prompt":"hi","stream":false,"options":{{"num_predict":1}}}}"#
    );
    for headers in [
        &[("content-type", "application/x-www-form-urlencoded")][..],
        &[("content-type", "text/plain")][..],
        &[][..],
    ] {
        let r = app
            .request(Method::POST, "/api/generate", headers, body.clone())
            .await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.text());
        assert_eq!(r.json()["done"], true);
    }
}

#[tokio::test]
async fn context_errors_name_both_numbers() {
    let app = app(HttpConfig::default());
    let over = app
        .post_json(
            "/api/generate",
            &format!(
                r#"{{"model":"{MODEL}","prompt":"hi","stream":false,"options":{{"num_predict":500}}}}"#
            ),
        )
        .await;
    let long = app
        .post_json(
            "/api/chat",
            &format!(
                r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "Hello ".repeat(200)
            ),
        )
        .await;
    for (r, requested) in [(&over, "500"), (&long, "209 in the prompt")] {
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(r.status, 400, "{msg}");
        assert!(msg.contains("128") && msg.contains(requested), "{msg}");
    }
    assert!(app.engine.admitted().is_empty());
}
