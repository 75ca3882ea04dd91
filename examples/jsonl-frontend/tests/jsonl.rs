//! The example dialect end to end over the shared HTTP stack, against the
//! scripted engine.

use kiln_example_frontend_jsonl::JsonlFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, golden_config};
use serde_json::Value;

fn app() -> TestApp {
    TestApp::new(
        ScriptedConfig::default(),
        golden_config(),
        &[Box::new(JsonlFrontend)],
    )
}

#[tokio::test]
async fn one_answer_line_per_input_line_in_order() {
    let body = "{\"id\":\"a\",\"prompt\":\"Hello\",\"max_tokens\":3}\n\n{\"prompt_token_ids\":[5,6],\"max_tokens\":2}\n";
    let r = app().post_json("/jsonl", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["token_ids"].as_array().unwrap().len(), 3);
    assert_eq!(lines[0]["finish_reason"], "length");
    assert_eq!(lines[1]["id"], 1);
    assert_eq!(lines[1]["token_ids"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_bad_line_fails_the_body_naming_it() {
    for (body, words) in [
        ("{\"prompt\":\"a\"}\n{\"prompt\":1}\n", "line 2"),
        (
            "{\"prompt\":\"a\",\"prompt_token_ids\":[1]}\n",
            "exactly one",
        ),
        ("{\"prompt\":\"a\",\"colour\":1}\n", "unknown field"),
        ("\n\n", "no lines"),
    ] {
        let r = app().post_json("/jsonl", body).await;
        assert_eq!(r.status, 400, "{body}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(words), "{body}: {error}");
    }
}

#[tokio::test]
async fn an_engine_refusal_is_that_lines_error() {
    let body = "{\"prompt\":\"ok\",\"max_tokens\":1}\n{\"prompt_token_ids\":[999999999]}\n";
    let r = app().post_json("/jsonl", body).await;
    assert_eq!(r.status, 200);
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[0]["error"].is_null());
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("outside the vocabulary")
    );
}
