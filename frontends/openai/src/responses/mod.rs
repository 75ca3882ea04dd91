//! `POST /v1/responses`, OpenAI's Responses API, computed by the chat
//! completions machinery: the body is translated into a chat request
//! ([`request`]), planned, rendered and run exactly as
//! `/v1/chat/completions` would (template, sampling, structured outputs,
//! tool calls), and the result is written as a Response object ([`output`])
//! or its SSE events ([`stream`]).
//!
//! Kiln stores nothing: `store` is accepted and reported `false`, and
//! `previous_response_id`, `conversation` and `background` are refused with
//! a 400 that says to send the whole conversation.

pub mod output;
pub mod request;
pub mod stream;

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use kiln_http::stream::Framing;
use kiln_http::{ApiError, ApiJson, OpenAiDialect, RequestId, collect, stream_response};

use crate::convert::{self, StreamMode};
use crate::routes::{AppState, OpenAiState, chat_engine_request, render_chat, request_id};
use output::{ResponseEcho, ResponseUsage, output_items, split_output, status_of, usage_json};
use request::{ResponsesRequest, chat_request, responses_param};
use stream::ResponseStream;

/// `POST /v1/responses`.
pub async fn create(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(req, _): ApiJson<ResponsesRequest, OpenAiDialect>,
) -> Response {
    run(&st, req, request_id(rid))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn run(st: &AppState, req: ResponsesRequest, rid: RequestId) -> Result<Response, ApiError> {
    let chat = chat_request(&req)?;
    let plan = convert::chat_plan(&chat).map_err(responses_param)?;
    let tools = st
        .tool_responder(&plan.tools, &rid)
        .map_err(responses_param)?;
    let prompt = render_chat(&st.handle, &plan).map_err(|e| st.engine_error(&e))?;
    let meta = st.meta("resp", req.model.as_deref(), &rid);
    let echo = ResponseEcho::new(&req, &rid.0, meta.created, meta.model);
    let stream = st
        .submit(chat_engine_request(&plan, &tools, prompt, &rid))
        .map_err(responses_param)?;
    if let StreamMode::On { .. } = plan.stream {
        let prompt_tokens = stream.prompt_token_ids().len() as u32;
        return Ok(stream_response(
            stream,
            ResponseStream::new(echo, tools, prompt_tokens),
            Framing::Sse,
        ));
    }
    let collected = collect(stream, st.config.clock.as_ref())
        .await
        .map_err(|e| st.engine_error(&e))?;
    let seq = collected
        .first_sequence()
        .map_err(|e| st.engine_error(&e))?;
    let status = status_of(&seq.finished);
    let (content, calls) = split_output(&tools, &seq.text);
    let items = output_items(&echo, content.as_deref(), &calls, status);
    let usage = usage_json(ResponseUsage {
        input: collected.prompt_token_ids.len() as u32,
        output: seq.finished.usage.completion_tokens,
        cached: seq.finished.usage.cached_prompt_tokens,
    });
    Ok(Json(echo.object(status, items, Some(usage))).into_response())
}
