//! Bad requests get the right 4xx in TGI's `{"error","error_type"}` shape,
//! and a good request still succeeds afterwards.

use axum::http::Method;
use kiln_frontend_tgi::TgiFrontend;
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
}

fn post(name: &'static str, path: &'static str, body: &str, status: u16) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        headers: JSON,
        body: body.as_bytes().to_vec(),
        status,
    }
}

fn params(name: &'static str, parameters: &str) -> Case {
    post(
        name,
        "/generate",
        &format!(r#"{{"inputs":"Hello","parameters":{parameters}}}"#),
        422,
    )
}

fn cases() -> Vec<Case> {
    let long = format!(
        r#"{{"inputs":"{}","parameters":{{"max_new_tokens":1}}}}"#,
        "Hello ".repeat(200)
    );
    let huge = format!(r#"{{"inputs":"{}"}}"#, "a".repeat(100 * 1024));
    vec![
        post("invalid json", "/generate", "{", 422),
        post("empty body", "/generate", "", 422),
        post("array body", "/generate", "[]", 422),
        post("missing inputs", "/generate", r#"{"parameters":{}}"#, 422),
        post("inputs not a string", "/generate", r#"{"inputs":5}"#, 422),
        post("empty inputs", "/generate", r#"{"inputs":""}"#, 422),
        post(
            "parameters not an object",
            "/generate",
            r#"{"inputs":"a","parameters":3}"#,
            422,
        ),
        params("top_p one", r#"{"top_p":1.0}"#),
        params("top_p zero", r#"{"top_p":0}"#),
        params("temperature zero", r#"{"temperature":0}"#),
        params("negative temperature", r#"{"temperature":-1}"#),
        params("top_k zero", r#"{"top_k":0}"#),
        params("max_new_tokens zero", r#"{"max_new_tokens":0}"#),
        params("max_new_tokens negative", r#"{"max_new_tokens":-3}"#),
        params("max_new_tokens string", r#"{"max_new_tokens":"x"}"#),
        params("repetition_penalty zero", r#"{"repetition_penalty":0}"#),
        params("frequency_penalty big", r#"{"frequency_penalty":9}"#),
        params("typical_p", r#"{"typical_p":0.5}"#),
        params("too many stops", r#"{"stop":["a","b","c","d","e"]}"#),
        params("stop not a list", r#"{"stop":"a"}"#),
        params("best_of two", r#"{"best_of":2}"#),
        params("truncate zero", r#"{"truncate":0}"#),
        params("truncate too big", r#"{"truncate":100000}"#),
        params("watermark", r#"{"watermark":true}"#),
        params("grammar is a string", r#"{"grammar":"json"}"#),
        params("grammar without a type", r#"{"grammar":{"value":"a"}}"#),
        params(
            "grammar of unknown type",
            r#"{"grammar":{"type":"xml","value":"<a/>"}}"#,
        ),
        params(
            "regex grammar without a value",
            r#"{"grammar":{"type":"regex"}}"#,
        ),
        params(
            "regex grammar with a number",
            r#"{"grammar":{"type":"regex","value":7}}"#,
        ),
        params(
            "unbalanced regex",
            r#"{"grammar":{"type":"regex","value":"(ab"}}"#,
        ),
        params(
            "reversed regex range",
            r#"{"grammar":{"type":"regex","value":"[9-0]+"}}"#,
        ),
        params(
            "bad regex escape",
            r#"{"grammar":{"type":"regex","value":"\\p{Nope}"}}"#,
        ),
        params(
            "dangling regex quantifier",
            r#"{"grammar":{"type":"regex","value":"*a"}}"#,
        ),
        params(
            "json grammar with a list value",
            r#"{"grammar":{"type":"json","value":[1,2]}}"#,
        ),
        params(
            "json grammar with a number value",
            r#"{"grammar":{"type":"json","value":3}}"#,
        ),
        params(
            "json grammar with unparsable text",
            r#"{"grammar":{"type":"json","value":"{nope"}}"#,
        ),
        params(
            "json grammar with an unknown type",
            r#"{"grammar":{"type":"json","value":{"type":"strin"}}}"#,
        ),
        params(
            "json grammar with a dangling ref",
            r##"{"grammar":{"type":"json","value":{"$ref":"#/definitions/x"}}}"##,
        ),
        params(
            "json grammar with a numeric type",
            r#"{"grammar":{"type":"json","value":{"type":1}}}"#,
        ),
        params(
            "json grammar with bad properties",
            r#"{"grammar":{"type":"json","value":{"type":"object","properties":{"a":{"type":"integr"}}}}}"#,
        ),
        params(
            "json grammar with bad required",
            r#"{"grammar":{"type":"json","value":{"type":"object","required":"a"}}}"#,
        ),
        params(
            "json_schema grammar without schema",
            r#"{"grammar":{"type":"json_schema","value":{"name":"x"}}}"#,
        ),
        params(
            "json_schema grammar without value",
            r#"{"grammar":{"type":"json_schema"}}"#,
        ),
        params(
            "json_object grammar with a bad schema",
            r#"{"grammar":{"type":"json_object","value":{"type":"object","properties":{"a":{"minimum":"x"}}}}}"#,
        ),
        params(
            "regex grammar with a null value",
            r#"{"grammar":{"type":"regex","value":null}}"#,
        ),
        params("top_n_tokens too many", r#"{"top_n_tokens":100}"#),
        params("details not a bool", r#"{"details":"yes"}"#),
        params("seed negative", r#"{"seed":-1}"#),
        params(
            "input plus new tokens too long",
            r#"{"max_new_tokens":1000}"#,
        ),
        Case {
            name: "prompt too long",
            ..post("", "/generate", &long, 422)
        },
        post(
            "decoder_input_details when streaming",
            "/generate_stream",
            r#"{"inputs":"a","parameters":{"decoder_input_details":true}}"#,
            422,
        ),
        post(
            "best_of when streaming",
            "/",
            r#"{"inputs":"a","stream":true,"parameters":{"best_of":2}}"#,
            422,
        ),
        post("compat bad json", "/", "{", 422),
        post(
            "compat stream not a bool",
            "/",
            r#"{"inputs":"a","stream":"yes"}"#,
            422,
        ),
        Case {
            name: "wrong content type",
            headers: &[("content-type", "text/plain")],
            ..post("", "/generate", r#"{"inputs":"a"}"#, 415)
        },
        Case {
            name: "missing content type",
            headers: &[],
            ..post("", "/generate_stream", r#"{"inputs":"a"}"#, 415)
        },
        Case {
            name: "bad utf-8",
            body: b"{\"inputs\":\"\xff\"}".to_vec(),
            ..post("", "/generate", "", 422)
        },
        Case {
            name: "huge body",
            ..post("", "/generate", &huge, 413)
        },
        Case {
            name: "wrong method",
            method: Method::GET,
            ..post("", "/generate", "", 405)
        },
        Case {
            name: "wrong method on info",
            method: Method::POST,
            ..post("", "/info", "{}", 405)
        },
        post("unknown route", "/generate_nothing", "{}", 404),
        post("tokenize bad inputs", "/tokenize", r#"{"inputs":3}"#, 422),
    ]
}

#[tokio::test]
async fn malformed_requests_get_tgi_errors() {
    let http = HttpConfig {
        body_limit_bytes: 64 * 1024,
        ..Default::default()
    };
    let app = TestApp::new(ScriptedConfig::default(), http, &[Box::new(TgiFrontend)]);
    let cases = cases();
    assert!(cases.len() >= 30);
    for case in cases {
        let r = app
            .request(case.method, case.path, case.headers, case.body)
            .await;
        assert_eq!(
            r.status.as_u16(),
            case.status,
            "{}: {}",
            case.name,
            r.text()
        );
        let body = r.json();
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {}",
            case.name,
            r.text()
        );
        assert!(body["error_type"].is_string(), "{}: {body}", case.name);
        if case.status == 422 {
            assert_eq!(body["error_type"], "validation", "{}", case.name);
        }
    }
    assert!(
        app.engine.admitted().is_empty(),
        "no bad request reached the engine"
    );
    let ok = app
        .post_json(
            "/generate",
            r#"{"inputs":"Hello","parameters":{"max_new_tokens":2}}"#,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}
