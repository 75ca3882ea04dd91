//! # kiln-example-frontend-jsonl
//!
//! A whole API dialect in one small crate, as a template for new frontends:
//! `POST /jsonl` takes one JSON object per line and answers one JSON line
//! per input, in input order. Mounted with `kiln serve --frontend jsonl`
//! (next to others: `--frontend openai,jsonl`).
//!
//! ```text
//! {"id": "a", "prompt": "The capital of France is", "max_tokens": 8}
//! {"prompt_token_ids": [1, 504, 3458], "temperature": 0.7, "seed": 1}
//! ```
//! answers
//! ```text
//! {"id":"a","text":" Paris.","token_ids":[...],"finish_reason":"stop"}
//! {"id":1,"error":"..."}
//! ```
//!
//! A frontend implements [`kiln_http::Frontend`] over an
//! [`EngineHandle`] and nothing else: the HTTP server, auth, request ids
//! and shutdown are `kiln-http`'s. Every input is submitted before any is
//! awaited, so the scheduler batches them; a line that cannot be parsed
//! fails the whole body with 400 before anything runs.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::join_all;
use kiln_engine_api::{EngineHandle, RequestStream};
use kiln_http::{Frontend, HttpConfig};
use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria, TokenEvent};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, Default)]
pub struct JsonlFrontend;

impl Frontend for JsonlFrontend {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn routes(&self, handle: EngineHandle, _config: &HttpConfig) -> Router {
        Router::new()
            .route("/jsonl", post(complete_lines))
            .with_state(handle)
    }
}

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    /// Echoed back; the 0-based line number when absent.
    id: Option<Value>,
    prompt: Option<String>,
    prompt_token_ids: Option<Vec<u32>>,
    #[serde(default = "default_max_tokens")]
    max_tokens: u32,
    /// 0 (greedy) unless given.
    #[serde(default)]
    temperature: f32,
    seed: Option<u64>,
}

fn default_max_tokens() -> u32 {
    16
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

/// The inputs of a body, or the first line's problem.
fn parse(body: &str) -> Result<Vec<(Value, GenerateRequest)>, String> {
    let mut out = Vec::new();
    for (i, text) in body
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(text).map_err(|e| format!("line {}: {e}", i + 1))?;
        let prompt = match (line.prompt, line.prompt_token_ids) {
            (Some(text), None) => PromptInput::Text(text),
            (None, Some(ids)) => PromptInput::TokenIds(ids),
            _ => {
                return Err(format!(
                    "line {}: give exactly one of `prompt` or `prompt_token_ids`",
                    i + 1
                ));
            }
        };
        let add_special_tokens = matches!(prompt, PromptInput::Text(_));
        let request = GenerateRequest {
            prompt,
            sampling: SamplingParams {
                temperature: line.temperature,
                seed: line.seed,
                ..SamplingParams::default()
            },
            stopping: StoppingCriteria {
                max_tokens: Some(line.max_tokens),
                ..StoppingCriteria::default()
            },
            add_special_tokens,
            tag: None,
        };
        out.push((line.id.unwrap_or_else(|| json!(out.len())), request));
    }
    if out.is_empty() {
        return Err("the body holds no lines: send one JSON object per line".into());
    }
    Ok(out)
}

async fn complete_lines(State(handle): State<EngineHandle>, body: String) -> Response {
    let inputs = match parse(&body) {
        Ok(inputs) => inputs,
        Err(message) => return bad_request(message),
    };
    let submitted: Vec<(Value, Result<RequestStream, String>)> = inputs
        .into_iter()
        .map(|(id, request)| (id, handle.submit(request).map_err(|e| e.to_string())))
        .collect();
    let lines = join_all(submitted.into_iter().map(|(id, stream)| async move {
        match stream {
            Ok(stream) => answer(id, stream).await,
            Err(error) => json!({ "id": id, "error": error }),
        }
    }))
    .await;
    let mut text = String::new();
    for line in lines {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response()
}

/// The line of one finished request.
async fn answer(id: Value, mut stream: RequestStream) -> Value {
    let (mut text, mut token_ids, mut finish_reason) = (String::new(), Vec::new(), None);
    while let Some(event) = stream.next_event().await {
        match event {
            TokenEvent::Token(t) => {
                text.push_str(&t.text);
                token_ids.push(t.id);
            }
            TokenEvent::Finished(f) => finish_reason = Some(f.reason.as_str()),
            TokenEvent::Failed { error } => return json!({ "id": id, "error": error.to_string() }),
            // This dialect never asks for prompt log-probabilities.
            TokenEvent::Prompt(_) => {}
        }
    }
    json!({ "id": id, "text": text, "token_ids": token_ids, "finish_reason": finish_reason })
}
