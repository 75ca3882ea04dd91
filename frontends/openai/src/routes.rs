//! Thin handlers: parse → plan (pure) → submit → collect or stream → build (pure).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kiln_engine_api::EngineHandle;
use kiln_http::stream::Framing;
use kiln_http::{
    ApiError, ApiJson, Dialect, DialectState, OpenAiDialect, RequestId, collect, stream_response,
};
use kiln_protocol::{EngineError, PromptInput};

use crate::chat::{ChatStream, ChatStreamConfig, chat_response};
use crate::completion::{
    CompletionStream, CompletionStreamConfig, LogprobsShape, PromptResult, completion_response,
    keep_best,
};
use crate::convert::{self, StreamMode};
use crate::request::{ChatRequest, CompletionRequest};
use crate::tools::{ToolExtraction, ToolPlan, ToolResponder};
use crate::wire::ResponseMeta;

/// What every handler holds.
pub type AppState = DialectState<OpenAiDialect>;

/// What the OpenAI handlers derive from their state.
pub(crate) trait OpenAiState {
    /// The fields every response and chunk of one request repeats.
    fn meta(
        &self,
        prefix: &str,
        requested_model: Option<&str>,
        request_id: &RequestId,
    ) -> ResponseMeta;

    /// How this chat request's output is searched for tool calls.
    fn tool_responder(&self, plan: &ToolPlan, rid: &RequestId) -> Result<ToolResponder, ApiError>;
}

impl OpenAiState for AppState {
    fn meta(
        &self,
        prefix: &str,
        requested_model: Option<&str>,
        request_id: &RequestId,
    ) -> ResponseMeta {
        let info = self.handle.info();
        ResponseMeta {
            id: format!("{prefix}-{}", request_id.0),
            created: self.config.unix_seconds(),
            model: convert::response_model(
                &info.served_model_names,
                &info.model_id,
                requested_model,
            ),
            system_fingerprint: system_fingerprint(&info.version),
        }
    }

    fn tool_responder(&self, plan: &ToolPlan, rid: &RequestId) -> Result<ToolResponder, ApiError> {
        let settings = self.config.tool_calls;
        if *plan == ToolPlan::Auto && !settings.auto_tool_choice {
            return Err(ApiError::bad_request(
                Dialect::OpenAi,
                "tool_choice",
                "\"auto\" tool choice requires the server to run with --enable-auto-tool-choice",
            ));
        }
        let parser = settings.parser_for(self.handle.info().chat_template.as_deref());
        Ok(ToolResponder {
            extraction: ToolExtraction::new(plan, parser),
            call_id_base: rid.0.clone(),
        })
    }
}

/// `system_fingerprint`: a string, as TGI's clients require.
pub fn system_fingerprint(version: &str) -> String {
    format!("kiln-{version}")
}

pub(crate) fn request_id(ext: Option<Extension<RequestId>>) -> RequestId {
    ext.map_or_else(|| RequestId(String::from("0")), |Extension(r)| r)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(req, _): ApiJson<CompletionRequest, OpenAiDialect>,
) -> Response {
    respond(run_completion(&st, req, request_id(rid)).await)
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(req, _): ApiJson<ChatRequest, OpenAiDialect>,
) -> Response {
    respond(run_chat(&st, req, request_id(rid)).await)
}

fn truncate_prompt(
    st: &AppState,
    prompt: PromptInput,
    keep_last: Option<usize>,
    add_special_tokens: bool,
) -> Result<PromptInput, ApiError> {
    let Some(keep) = keep_last else {
        return Ok(prompt);
    };
    let ids = match prompt {
        PromptInput::Text(text) => st
            .handle
            .tokenize(&text, add_special_tokens)
            .map_err(|e| st.engine_error(&e))?,
        PromptInput::TokenIds(ids) => ids,
    };
    let start = ids.len().saturating_sub(keep);
    Ok(PromptInput::TokenIds(ids[start..].to_vec()))
}

fn prompt_text(st: &AppState, prompt: &PromptInput) -> Result<String, ApiError> {
    match prompt {
        PromptInput::Text(t) => Ok(t.clone()),
        PromptInput::TokenIds(ids) => st
            .handle
            .detokenize(ids, true)
            .map_err(|e| st.engine_error(&e)),
    }
}

async fn run_completion(
    st: &AppState,
    req: CompletionRequest,
    rid: RequestId,
) -> Result<Response, ApiError> {
    let plan = convert::completion_plan(&req, st.handle.info().max_model_len)?;
    let meta = st.meta("cmpl", req.model.as_deref(), &rid);
    let mut streams = Vec::new();
    let mut echoes = Vec::new();
    for prompt in plan.prompts {
        let prompt = truncate_prompt(st, prompt, plan.truncate, plan.request.add_special_tokens)?;
        echoes.push(if plan.echo {
            Some(prompt_text(st, &prompt)?)
        } else {
            None
        });
        let mut request = plan.request.clone();
        request.prompt = prompt;
        request.tag = Some(rid.0.clone());
        streams.push(st.submit(request)?);
    }
    let n = plan.n;
    let shape = LogprobsShape {
        tokens: plan.logprobs,
        echo: plan.echo,
        vllm_prompt: plan.vllm_prompt_logprobs,
    };
    match plan.stream {
        StreamMode::On {
            include_usage,
            continuous_usage,
        } => {
            let prompt_tokens = streams
                .iter()
                .map(|s| s.prompt_token_ids().len() as u32)
                .sum();
            let config = CompletionStreamConfig {
                meta,
                n,
                echo: echoes,
                logprobs: shape,
                include_usage,
                continuous_usage,
                prompt_tokens,
            };
            let tagged = streams
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.map(move |e| (i, e)));
            let source = futures::stream::select_all(tagged);
            Ok(stream_response(
                source,
                CompletionStream::new(config),
                Framing::Sse,
            ))
        }
        StreamMode::Off => {
            let clock = st.config.clock.clone();
            let collected = futures::future::try_join_all(streams.into_iter().map(|s| {
                let clock = clock.clone();
                async move { collect(s, clock.as_ref()).await }
            }))
            .await
            .map_err(|e| st.engine_error(&e))?;
            let results: Vec<PromptResult> = echoes
                .into_iter()
                .zip(collected)
                .map(|(echo, collected)| PromptResult {
                    echo,
                    collected: keep_best(collected, n),
                })
                .collect();
            Ok(Json(completion_response(&meta, &results, n, shape)).into_response())
        }
    }
}

/// Renders the conversation with the chat template.
pub fn render_chat(handle: &EngineHandle, plan: &convert::ChatPlan) -> Result<String, EngineError> {
    let rendered = handle.apply_chat_template(&plan.messages, &plan.options)?;
    if plan.continue_final_message {
        return convert::continue_final(&rendered, &plan.messages)
            .map_err(|e| EngineError::invalid("messages", e.message));
    }
    Ok(rendered)
}

/// The engine request of a chat plan over its rendered prompt: special
/// tokens stay in the text when the tool-call parser reads them.
pub(crate) fn chat_engine_request(
    plan: &convert::ChatPlan,
    tools: &ToolResponder,
    prompt: String,
    rid: &RequestId,
) -> kiln_protocol::GenerateRequest {
    let mut request = plan.request.clone();
    if let ToolExtraction::Parse(parser) = &tools.extraction
        && parser.needs_special_tokens()
    {
        request.stopping.skip_special_tokens = false;
    }
    request.prompt = PromptInput::Text(prompt);
    request.tag = Some(rid.0.clone());
    request
}

async fn run_chat(st: &AppState, req: ChatRequest, rid: RequestId) -> Result<Response, ApiError> {
    let plan = convert::chat_plan(&req)?;
    let tools = st.tool_responder(&plan.tools, &rid)?;
    let prompt = render_chat(&st.handle, &plan).map_err(|e| st.engine_error(&e))?;
    let meta = st.meta("chatcmpl", req.model.as_deref(), &rid);
    let stream = st.submit(chat_engine_request(&plan, &tools, prompt, &rid))?;
    match plan.stream {
        StreamMode::On {
            include_usage,
            continuous_usage,
        } => {
            let config = ChatStreamConfig {
                meta,
                n: plan.request.sampling.n,
                top_logprobs: plan.top_logprobs,
                include_usage,
                continuous_usage,
                prompt_tokens: stream.prompt_token_ids().len() as u32,
                tools,
            };
            Ok(stream_response(
                stream,
                ChatStream::new(config),
                Framing::Sse,
            ))
        }
        StreamMode::Off => {
            let collected = collect(stream, st.config.clock.as_ref())
                .await
                .map_err(|e| st.engine_error(&e))?;
            Ok(Json(chat_response(&meta, &collected, plan.top_logprobs, &tools)).into_response())
        }
    }
}
