//! Thin handlers over [`crate::convert`], [`crate::options`] and [`crate::response`].

use std::sync::{Arc, RwLock};

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_engine_api::{ChatOptions, EngineHandle};
use kiln_http::stream::Framing;
use kiln_http::time::rfc3339_nano;
use kiln_http::tool_calls::ToolCallParser;
use kiln_http::{
    ApiError, ApiJson, Dialect, DialectState, HttpConfig, OllamaDialect, RequestId, collect,
    stream_response,
};
use kiln_protocol::{GenerateRequest, PromptInput, TokenId};
use serde_json::{Value, json};

use crate::convert::{self, KeepAlive, PromptPlan, Unsupported};
use crate::format::format_spec;
use crate::manage;
use crate::models;
use crate::options::parse_options;
use crate::request::{ChatIn, GenerateIn, ModelIn, from_body};
use crate::response::{Kind, OllamaStream, ResponseContext, aborted, load_response};
use crate::tools;

/// What every handler holds: the dialect's state (engine, settings, error
/// shape) and the names the served model answers to besides its own.
#[derive(Debug, Clone)]
pub struct AppState {
    dialect: DialectState<OllamaDialect>,
    /// Names given to the served model with `/api/copy` (or found in the
    /// cache's table of names) while this server runs.
    pub served_copies: Arc<RwLock<Vec<String>>>,
}

impl std::ops::Deref for AppState {
    type Target = DialectState<OllamaDialect>;

    fn deref(&self) -> &Self::Target {
        &self.dialect
    }
}

impl AppState {
    /// The state of a server over `handle`.
    pub fn new(handle: EngineHandle, config: HttpConfig) -> AppState {
        AppState {
            dialect: DialectState::new(handle, config),
            served_copies: Arc::default(),
        }
    }

    fn copies(&self) -> Vec<String> {
        self.served_copies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `name` as the loaded model from now on.
    pub fn add_served_copy(&self, name: &str) {
        let mut copies = self
            .served_copies
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !copies.iter().any(|c| c == name) {
            copies.push(name.to_string());
        }
    }

    /// Stops serving the copy `name`; whether it was one.
    pub fn forget_served_copy(&self, name: &str) -> bool {
        let mut copies = self
            .served_copies
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let before = copies.len();
        copies.retain(|c| c != name && *c != convert::tagged(name));
        copies.len() != before
    }

    /// The requested model if it is the loaded one, under any of its names.
    pub fn resolve_loaded(&self, requested: Option<&str>) -> Result<String, ApiError> {
        convert::resolve_model_among(self.handle.info(), &self.copies(), requested)
    }

    /// As [`AppState::resolve_loaded`], also looking the name up in the
    /// model cache: a cached name of the loaded model is served, another
    /// cached model is a 400 saying how to serve it.
    pub async fn resolve(&self, requested: Option<&str>) -> Result<String, ApiError> {
        let missing = match self.resolve_loaded(requested) {
            Err(e) if e.status == StatusCode::NOT_FOUND => e,
            other => return other,
        };
        let (Some(store), Some(name)) = (self.config.model_store.clone(), requested) else {
            return Err(missing);
        };
        let name = name.trim();
        match manage::find_cached(self, store, name).await {
            Ok(Some(found)) if found.served => {
                self.add_served_copy(name);
                Ok(name.to_string())
            }
            Ok(Some(found)) => Err(manage::not_loaded(self, name, &found.model)),
            Ok(None) => Err(missing),
            Err(e) => {
                tracing::warn!("looking '{name}' up in the model cache failed: {e}");
                Err(missing)
            }
        }
    }

    fn now(&self) -> String {
        rfc3339_nano(self.config.clock.since_epoch())
    }
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A prepared generation: the engine request and how to answer.
struct Prepared {
    model: String,
    kind: Kind,
    request: GenerateRequest,
    stream: bool,
    logprobs: Option<u32>,
    tool_parser: Option<ToolCallParser>,
}

/// `POST /api/generate`.
pub async fn generate(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    let tag = rid.map(|Extension(r)| r.0);
    respond(match from_body(body) {
        Ok(req) => run_generate(&st, req, tag).await,
        Err(e) => Err(e),
    })
}

/// `POST /api/chat`.
pub async fn chat(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    let tag = rid.map(|Extension(r)| r.0);
    respond(match from_body(body) {
        Ok(req) => run_chat(&st, req, tag).await,
        Err(e) => Err(e),
    })
}

fn logprobs_of(logprobs: Option<bool>, top: Option<u32>) -> Option<u32> {
    logprobs.unwrap_or(false).then(|| top.unwrap_or(0))
}

fn load_or_unload(st: &AppState, model: &str, kind: Kind, keep_alive: KeepAlive) -> Response {
    let reason = if keep_alive == KeepAlive::Unload {
        "unload"
    } else {
        "load"
    };
    Json(load_response(model, kind, &st.now(), reason)).into_response()
}

async fn run_generate(
    st: &AppState,
    req: GenerateIn,
    tag: Option<String>,
) -> Result<Response, ApiError> {
    let model = st.resolve(req.model.as_deref()).await?;
    let keep_alive = convert::parse_keep_alive(req.keep_alive.as_ref())?;
    let options = parse_options(req.options.as_ref())?;
    convert::check_unsupported(
        &model,
        Unsupported {
            think: req.think.as_ref(),
            images: req.images.as_ref().is_some_and(|i| !i.is_empty()),
            top_logprobs: req.top_logprobs,
        },
    )?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::new(
            Dialect::Ollama,
            StatusCode::BAD_REQUEST,
            format!("\"{model}\" does not support insert"),
        ));
    }
    if req.prompt.as_deref().unwrap_or("").is_empty() {
        return Ok(load_or_unload(st, &model, Kind::Generate, keep_alive));
    }
    let has_chat_template = st.handle.info().chat_template.is_some();
    let (text, add_special) = match convert::generate_prompt(&req, has_chat_template)? {
        PromptPlan::Raw(t) | PromptPlan::Templated(t) => (t, true),
        PromptPlan::Chat(messages) => (render(st, &messages, false, None)?, false),
    };
    let logprobs = logprobs_of(req.logprobs, req.top_logprobs);
    let mut request = convert::engine_request(&options, logprobs);
    request.sampling.structured = format_spec(req.format.as_ref())?;
    request.tag = tag;
    request.add_special_tokens = add_special;
    request.prompt = match req.context.filter(|c| !c.is_empty()) {
        Some(context) => PromptInput::TokenIds(with_context(st, context, &text)?),
        None => PromptInput::Text(text),
    };
    let prepared = Prepared {
        model,
        kind: Kind::Generate,
        request,
        stream: req.stream.unwrap_or(true),
        logprobs,
        tool_parser: None,
    };
    answer(st, prepared).await
}

/// The token ids of an earlier exchange followed by the new prompt, which
/// gets no special tokens of its own (the context already starts with them).
fn with_context(
    st: &AppState,
    mut context: Vec<TokenId>,
    text: &str,
) -> Result<Vec<TokenId>, ApiError> {
    let ids = st
        .handle
        .tokenize(text, false)
        .map_err(|e| st.engine_error(&e))?;
    context.extend(ids);
    Ok(context)
}

fn render(
    st: &AppState,
    messages: &[Value],
    continue_last: bool,
    tools: Option<Value>,
) -> Result<String, ApiError> {
    let options = ChatOptions {
        add_generation_prompt: !continue_last,
        tools,
        ..Default::default()
    };
    let rendered = st
        .handle
        .apply_chat_template(messages, &options)
        .map_err(|e| st.engine_error(&e))?;
    if !continue_last {
        return Ok(rendered);
    }
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    Ok(kiln_http::chat::cut_after_final_message(&rendered, last).unwrap_or(rendered))
}

async fn run_chat(st: &AppState, req: ChatIn, tag: Option<String>) -> Result<Response, ApiError> {
    let model = st.resolve(req.model.as_deref()).await?;
    let keep_alive = convert::parse_keep_alive(req.keep_alive.as_ref())?;
    let options = parse_options(req.options.as_ref())?;
    let messages = req.messages.unwrap_or_default();
    convert::check_unsupported(
        &model,
        Unsupported {
            think: req.think.as_ref(),
            images: messages
                .iter()
                .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty())),
            top_logprobs: req.top_logprobs,
        },
    )?;
    if messages.is_empty() {
        return Ok(load_or_unload(st, &model, Kind::Chat, keep_alive));
    }
    let (values, continue_last) = convert::chat_messages(&messages)?;
    let template_tools = tools::template_tools(req.tools.as_deref())?;
    if st.handle.info().chat_template.is_none() {
        return Err(ApiError::new(
            Dialect::Ollama,
            StatusCode::BAD_REQUEST,
            format!(
                "\"{model}\" has no chat template: start kiln with --chat-template, or send a prompt to /api/generate"
            ),
        ));
    }
    let logprobs = logprobs_of(req.logprobs, req.top_logprobs);
    let mut request = convert::engine_request(&options, logprobs);
    request.sampling.structured = format_spec(req.format.as_ref())?;
    request.tag = tag;
    request.add_special_tokens = false;
    let tool_parser = template_tools.is_some().then(|| {
        st.config
            .tool_calls
            .parser_for(st.handle.info().chat_template.as_deref())
    });
    if tool_parser.is_some_and(ToolCallParser::needs_special_tokens) {
        request.stopping.skip_special_tokens = false;
    }
    request.prompt = PromptInput::Text(render(st, &values, continue_last, template_tools)?);
    let prepared = Prepared {
        model,
        kind: Kind::Chat,
        request,
        stream: req.stream.unwrap_or(true),
        logprobs,
        tool_parser,
    };
    answer(st, prepared).await
}

async fn answer(st: &AppState, p: Prepared) -> Result<Response, ApiError> {
    let stream = st.submit(p.request)?;
    let ctx = ResponseContext {
        model: p.model,
        kind: p.kind,
        clock: st.config.clock.clone(),
        prompt_token_ids: stream.prompt_token_ids().to_vec(),
        logprobs: p.logprobs,
        tool_parser: p.tool_parser,
    };
    if p.stream {
        return Ok(stream_response(
            stream,
            OllamaStream::new(ctx),
            Framing::Ndjson,
        ));
    }
    let collected = collect(stream, st.config.clock.as_ref())
        .await
        .map_err(|e| st.engine_error(&e))?;
    let seq = collected
        .first_sequence()
        .map_err(|e| st.engine_error(&e))?;
    if crate::response::done_reason(&seq.finished).is_none() {
        return Err(aborted(&seq.finished));
    }
    let generated: Vec<TokenId> = seq.tokens.iter().map(|t| t.id).collect();
    let mut v = ctx.final_object(&seq.text, &seq.finished, &collected.timings, &generated);
    if let Some(k) = p.logprobs {
        v["logprobs"] = seq
            .tokens
            .iter()
            .map(|t| crate::response::logprob_json(t, k))
            .collect();
    }
    Ok(Json(v).into_response())
}

/// `GET /` and `HEAD /`.
pub async fn root() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Ollama is running",
    )
        .into_response()
}

/// `GET /api/version`.
pub async fn version(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"version": st.handle.info().version}))
}

/// `GET /api/tags`: the served model under each of its names, then the
/// other models in the cache.
pub async fn tags(State(st): State<Arc<AppState>>) -> Json<Value> {
    let cached = manage::list_cached(&st).await;
    Json(models::tags_with_cache(
        st.handle.info(),
        &st.copies(),
        &cached,
    ))
}

/// `GET /api/ps`.
pub async fn ps(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(models::ps(st.handle.info(), st.config.clock.since_epoch()))
}

async fn model_of(st: &AppState, body: Value) -> Result<String, ApiError> {
    let req: ModelIn = from_body(body)?;
    st.resolve(req.model.as_deref().or(req.name.as_deref()))
        .await
}

/// `POST /api/show`.
pub async fn show(
    State(st): State<Arc<AppState>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    respond(model_of(&st, body).await.map(|_| {
        let info = st.handle.info();
        let mut stops: Vec<String> = Vec::new();
        for text in info
            .eos_token_ids
            .iter()
            .filter_map(|&id| st.handle.token_text(id))
        {
            if !text.is_empty() && !stops.contains(&text) {
                stops.push(text);
            }
        }
        Json(models::show(info, &stops)).into_response()
    }))
}

/// Model management routes Kiln does not implement (`push`, `create`).
pub async fn management() -> Response {
    ApiError::new(
        Dialect::Ollama,
        StatusCode::NOT_IMPLEMENTED,
        "pushing and creating models is not supported: Kiln serves models from Hugging Face and its catalog (use /api/pull, /api/copy and /api/delete, or `kiln pull`)",
    )
    .into_response()
}
