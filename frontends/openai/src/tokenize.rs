//! vLLM's `/tokenize` (dispatched with TGI's by body keys) and `/detokenize`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use kiln_engine_api::{ChatOptions, EngineHandle};
use kiln_http::body::from_value;
use kiln_http::{ApiError, ApiJson, Dialect, OpenAiDialect};
use serde_json::{Value, json};

use crate::convert::template_messages;
use crate::request::{DetokenizeRequest, TokenizeRequest};
use crate::routes::AppState;

/// Whether a `/tokenize` body is vLLM's (`prompt` or `messages`).
pub fn claims(body: &Value) -> bool {
    body.get("prompt").is_some() || body.get("messages").is_some()
}

/// The shared `/tokenize` route holds only the engine handle; tokenizing
/// queues nothing, so no error of it is an overload with a `Retry-After`.
fn engine_error(e: &kiln_protocol::EngineError) -> ApiError {
    ApiError::from_engine(Dialect::OpenAi, e, 1)
}

/// The `/tokenize` answer for a parsed body.
pub fn tokenize(handle: &EngineHandle, req: &TokenizeRequest) -> Result<Value, ApiError> {
    let (text, add_special) = match (&req.prompt, &req.messages) {
        (Some(prompt), None) => (prompt.clone(), req.add_special_tokens.unwrap_or(true)),
        (None, Some(messages)) => {
            let options = ChatOptions {
                add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
                template: req.chat_template.clone(),
                ..Default::default()
            };
            let rendered = handle
                .apply_chat_template(&template_messages(messages)?, &options)
                .map_err(|e| engine_error(&e))?;
            (rendered, req.add_special_tokens.unwrap_or(false))
        }
        _ => {
            return Err(ApiError::bad_request(
                Dialect::OpenAi,
                "prompt",
                "send exactly one of `prompt` and `messages`",
            ));
        }
    };
    let tokens = handle
        .tokenize(&text, add_special)
        .map_err(|e| engine_error(&e))?;
    let token_strs: Value = if req.return_token_strs.unwrap_or(false) {
        tokens
            .iter()
            .map(|&id| handle.token_text(id).unwrap_or_default())
            .collect()
    } else {
        Value::Null
    };
    Ok(json!({
        "count": tokens.len(),
        "max_model_len": handle.info().max_model_len,
        "tokens": tokens,
        "token_strs": token_strs,
    }))
}

/// Shared-route handler for a claimed `/tokenize` body.
pub async fn tokenize_value(handle: EngineHandle, body: Value) -> Response {
    let result = from_value::<TokenizeRequest>(Dialect::OpenAi, body)
        .and_then(|req| tokenize(&handle, &req));
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /detokenize`.
pub async fn detokenize(
    State(st): State<Arc<AppState>>,
    ApiJson(req, _): ApiJson<DetokenizeRequest, OpenAiDialect>,
) -> Response {
    match st.handle.detokenize(&req.tokens, false) {
        Ok(text) => Json(json!({"prompt": text})).into_response(),
        Err(e) => st.engine_error(&e).into_response(),
    }
}
